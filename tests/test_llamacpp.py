"""The llamacpp backend end to end on the real SmolLM2-135M-Instruct, checked against
llama-cpp-python's own generation and a full-softmax computation of the same logits."""

import asyncio

import numpy as np
import pytest

from conclave.agents.backends.local import LocalLLM
from conclave.app.settings import load_settings
from conclave.local_models.errors import ContextOverflow
from conclave.local_models.generate import GenParams, generate, score
from conclave.local_models.llamacpp import stock_llama

PROMPT = "The three primary colors are"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def llm(engine):
    return LocalLLM(engine, backend="llamacpp", model="smollm2-135m-instruct")


@pytest.fixture(scope="module")
def reference(smollm2_path):
    # the same attention path as ours (llama.cpp's default picks flash attention on CPU)
    return stock_llama(smollm2_path, n_ctx=2048, flash_attn=True, logits_all=True)


def log_softmax(row):
    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return row - (m + np.log(np.exp(row - m).sum()))


def test_open_llm_from_settings(with_model):
    llm = load_settings().open_llm()
    assert (llm.backend, llm.model) == ("llamacpp", "smollm2-135m-instruct")
    assert llm.chat(CHAT, max_tokens=8, temperature=0).usage.completion_tokens == 8


def test_greedy_completion_equals_llama_cpp_python(llm, reference):
    ours = llm.complete(PROMPT, max_tokens=48, temperature=0)
    theirs = reference.create_completion(PROMPT, max_tokens=48, temperature=0)
    assert ours.text == theirs["choices"][0]["text"]
    assert ours.usage.completion_tokens == theirs["usage"]["completion_tokens"]
    assert ours.usage.prompt_tokens == theirs["usage"]["prompt_tokens"]


def test_greedy_chat_equals_llama_cpp_python(llm, reference):
    ours = llm.chat(CHAT, max_tokens=40, temperature=0)
    theirs = reference.create_chat_completion(CHAT, max_tokens=40, temperature=0)
    assert ours.text == theirs["choices"][0]["message"]["content"]
    assert ours.finish_reason == theirs["choices"][0]["finish_reason"]


def test_chat_stops_at_end_of_turn(llm):
    out = llm.chat([{"role": "user", "content": "Say hello."}], max_tokens=200, temperature=0)
    assert out.finish_reason == "stop" and out.usage.completion_tokens < 200
    assert "<|im_end|>" not in out.text and out.text.strip()


def test_logprobs_agree_with_a_full_softmax(llm, reference):
    out = llm.complete(PROMPT, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3)
    assert len(out.logprobs) == 12
    prompt_ids = reference.tokenize(PROMPT.encode(), add_bos=False, special=True)
    gen_ids = reference.tokenize((PROMPT + out.text).encode(), add_bos=False, special=True)[len(prompt_ids):]
    reference.reset()
    reference.eval(prompt_ids + gen_ids)
    rows = reference.scores[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(gen_ids)]
    for tok, row, id_ in zip(out.logprobs, rows, gen_ids):
        ref = log_softmax(row)
        assert tok.logprob == pytest.approx(ref[id_], abs=2e-3)
        assert tok.logprob <= 0
        # greedy: the chosen token is the most likely one, listed first among the alternatives
        assert tok.top[0][0] == tok.token and tok.top[0][1] == pytest.approx(tok.logprob)
        assert [lp for _, lp in tok.top] == sorted((lp for _, lp in tok.top), reverse=True)
        assert tok.top[1][1] == pytest.approx(np.sort(ref)[-2], abs=2e-3)


def test_streaming_gives_the_same_text_and_logprobs(llm):
    whole = llm.chat(CHAT, max_tokens=30, temperature=0, logprobs=True)
    chunks = list(llm.stream_chat(CHAT, max_tokens=30, temperature=0, logprobs=True))
    assert "".join(c.text for c in chunks) == whole.text
    assert [t.logprob for c in chunks for t in c.logprobs] == pytest.approx([t.logprob for t in whole.logprobs])
    assert chunks[-1].finish_reason == whole.finish_reason and chunks[-1].completion_tokens == whole.usage.completion_tokens
    assert sum(1 for c in chunks if c.text) > 5  # really streamed, not one lump


def test_scoring_prefers_the_right_answer_and_matches_generation(llm):
    paris, london = llm.score("The capital of France is", [" Paris", " London"])
    assert paris.logprob > london.logprob and paris.greedy and not london.greedy
    greedy = llm.complete(PROMPT, max_tokens=10, temperature=0, logprobs=True)
    (s,) = llm.score(PROMPT, [greedy.text])
    assert s.greedy
    assert s.logprob == pytest.approx(sum(t.logprob for t in greedy.logprobs), abs=0.02)


def test_score_many_through_the_seam_is_one_logged_call(llm):
    log = []
    llm.sink = log.append
    try:
        out = llm.score_many([("The capital of France is", [" Paris", " London"]), ("Two plus two is", [" four"])])
    finally:
        llm.sink = None
    assert [[s.continuation for s in r] for r in out] == [[" Paris", " London"], [" four"]]
    assert len(log) == 1 and log[0].kind == "score" and log[0].prompt_tokens == sum(s.n_context + s.n_tokens for r in out for s in r)
    with pytest.raises(ValueError, match="at least one"):
        llm.score_many([])
    with pytest.raises(ValueError, match="pairs"):
        llm.score_many(["just a prompt"])


def test_scoring_does_not_disturb_generation(llm):
    before = llm.complete(PROMPT, max_tokens=16, temperature=0).text
    llm.score("Some other context entirely", [" a", " b c d"])
    assert llm.complete(PROMPT, max_tokens=16, temperature=0).text == before


def test_stop_sequences_cut_the_text_even_across_tokens(llm):
    free = llm.complete(PROMPT, max_tokens=40, temperature=0).text
    stop = free[12:19]  # a stretch in the middle, most likely spanning tokens
    out = llm.complete(PROMPT, max_tokens=40, temperature=0, stop=[stop, "zzzz"])
    assert out.text == free[: free.index(stop)] and out.finish_reason == "stop"
    streamed = "".join(c.text for c in llm.stream_complete(PROMPT, max_tokens=40, temperature=0, stop=[stop]))
    assert streamed == out.text


def test_max_tokens_ends_with_length(llm):
    out = llm.complete(PROMPT, max_tokens=5, temperature=0)
    assert out.finish_reason == "length" and out.usage.completion_tokens == 5


def test_seed_makes_sampling_repeatable(llm):
    a = llm.complete(PROMPT, max_tokens=20, temperature=1.0, seed=11).text
    b = llm.complete(PROMPT, max_tokens=20, temperature=1.0, seed=11).text
    others = {llm.complete(PROMPT, max_tokens=20, temperature=1.0, seed=s).text for s in (1, 2, 3)}
    assert a == b and len(others | {a}) > 1


def test_a_prompt_longer_than_the_context_is_refused_and_the_model_still_works(llm):
    with pytest.raises(ContextOverflow, match="context of 2048"):
        llm.complete("word " * 3000, max_tokens=4)
    assert llm.complete(PROMPT, max_tokens=3, temperature=0).usage.completion_tokens == 3


def test_generation_stops_at_the_end_of_the_context(engine):
    prompt = engine.tokenize("hello " * 2040, add_bos=False)
    *_, last = generate(engine, prompt, GenParams(max_tokens=100, temperature=0))
    assert last.finish_reason == "length" and last.completion_tokens == engine.n_ctx - len(prompt)


def test_concurrent_async_calls_are_serialised_and_correct(llm):
    expected = llm.chat(CHAT, max_tokens=16, temperature=0).text

    async def main():
        return await asyncio.gather(*(llm.achat(CHAT, max_tokens=16, temperature=0) for _ in range(3)))

    assert [r.text for r in asyncio.run(main())] == [expected] * 3


def test_async_stream_on_the_real_model(llm):
    expected = llm.complete(PROMPT, max_tokens=12, temperature=0).text

    async def main():
        return "".join([c.text async for c in llm.astream_complete(PROMPT, max_tokens=12, temperature=0)])

    assert asyncio.run(main()) == expected


@pytest.mark.parametrize("prompt, continuation, merged", [
    ("The sky is blu", "e", True),  # " blu" + "e" is one token jointly: the score starts before "blu"
    ("The capital of France is", " Paris, a city of light", False),  # several tokens, the boundary kept
])
def test_engine_scoring_equals_a_full_softmax_of_the_same_tokens(engine, reference, prompt, continuation, merged):
    (s,) = score(engine, prompt, [continuation])
    # the reference: llama-cpp-python's logits for the whole text read in one pass, log-softmax
    # in float64, the continuation being what follows the longest prefix the prompt's own
    # tokens share with the whole text's
    bos = engine.add_bos
    own = reference.tokenize(prompt.encode(), add_bos=bos, special=True)
    whole = reference.tokenize((prompt + continuation).encode(), add_bos=bos, special=True)
    n = next((i for i, (a, b) in enumerate(zip(own, whole)) if a != b), min(len(own), len(whole)))
    cont = whole[n:]
    reference.reset()
    reference.eval(whole)
    rows = reference.scores[n - 1 : len(whole) - 1]  # row j predicts token j + 1
    ref = [float(log_softmax(row)[tok]) for row, tok in zip(rows, cont)]
    assert (n < len(own)) == merged
    assert (s.n_context, s.n_tokens) == (n, len(cont))
    # the same attention path and the same tokens: they agree to ~1e-8 here
    assert list(s.token_logprobs) == pytest.approx(ref, abs=1e-4)
    assert s.logprob == pytest.approx(sum(ref), abs=1e-4 * len(cont))
    assert s.greedy == all(int(np.argmax(row)) == tok for row, tok in zip(rows, cont))


@pytest.mark.parametrize("prompt", ["Emoji party: 😀😃😄🎉", "日本の首都は東京です。中国の首都は"])
def test_multibyte_text_is_never_split_mid_character(llm, reference, prompt):
    out = llm.complete(prompt, max_tokens=24, temperature=0)
    chunks = [c.text for c in llm.stream_complete(prompt, max_tokens=24, temperature=0)]
    assert "".join(chunks) == out.text and "\ufffd" not in out.text
    assert any(ord(ch) > 0x7F for ch in out.text)  # the model did answer in multi-byte characters
    assert out.text == reference.create_completion(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
