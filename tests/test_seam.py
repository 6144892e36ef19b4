"""The seam's shared behaviour, on the scripted fake: validation, prompt refs, the call log, async."""

import asyncio

import pytest

from conclave.prompts import loader as prompts
from conclave.agents.llm import Completion, GenParams, UnsupportedFeature
from tests.scripted import ScriptedLLM


class Sink(list):
    def __call__(self, record):
        self.append(record)


def test_chat_returns_completion_and_logs_one_call():
    sink = Sink()
    llm = ScriptedLLM(["hello there"], sink=sink)
    out = llm.chat([{"role": "user", "content": "hi"}], max_tokens=10)
    assert isinstance(out, Completion)
    assert out.text == "hello there" and out.finish_reason == "stop"
    assert out.usage.completion_tokens == 2 and out.usage.prompt_tokens == 1
    assert [(r.kind, r.backend, r.error) for r in sink] == [("chat", "scripted", None)]
    assert sink[0].completion_tokens == 2 and sink[0].latency_s >= 0


def test_rendered_prompt_records_its_ref_for_chat_complete_and_score():
    sink = Sink()
    llm = ScriptedLLM(["a", "b"], scores={" positive": -1.0, " negative": -2.0}, sink=sink)
    llm.chat(prompts.render("demo", question="why?"))
    llm.complete(prompts.render("sentiment", review="great"))
    scores = llm.score(prompts.render("sentiment", review="great"), [" positive", " negative"])
    assert [s.logprob for s in scores] == [-1.0, -2.0]
    assert [r.prompt_ref for r in sink] == ["demo@1", "sentiment@1", "sentiment@1"]
    assert llm.requests[0].messages[-1] == {"role": "user", "content": "why?"}


def test_a_chat_template_cannot_be_used_as_completion_text():
    llm = ScriptedLLM(["x"])
    with pytest.raises(TypeError, match="demo@1"):
        llm.complete(prompts.render("demo", question="q"))


def test_streaming_yields_pieces_and_logs_usage_at_the_end():
    sink = Sink()
    llm = ScriptedLLM(["one two three"], sink=sink)
    chunks = list(llm.stream_chat([{"role": "user", "content": "count"}], logprobs=True))
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].finish_reason == "stop" and all(c.finish_reason is None for c in chunks[:-1])
    assert sum(len(c.logprobs) for c in chunks) == 3
    assert len(sink) == 1 and sink[0].completion_tokens == 3


def test_abandoned_stream_is_logged_as_cancelled():
    sink = Sink()
    llm = ScriptedLLM(["one two three"], sink=sink)
    stream = llm.stream_chat([{"role": "user", "content": "count"}])
    next(stream)
    stream.close()
    assert len(sink) == 1 and sink[0].error == "cancelled by the caller"


def test_backend_error_is_logged_and_raised():
    sink = Sink()
    llm = ScriptedLLM([RuntimeError("model fell over")], sink=sink)
    with pytest.raises(RuntimeError, match="fell over"):
        llm.chat([{"role": "user", "content": "hi"}])
    assert sink[0].error == "RuntimeError: model fell over"


def test_max_tokens_truncates_with_finish_length():
    out = ScriptedLLM(["a b c d e"]).complete("go", max_tokens=2)
    assert out.text == "a b" and out.finish_reason == "length"


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(max_tokens=0), "max_tokens"),
        (dict(temperature=-0.5), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_logprobs=99), "top_logprobs"),
        (dict(stop=[""]), "stop"),
        (dict(stop=["a", "b", "c", "d", "e"]), "at most 4"),
    ],
)
def test_bad_parameters_are_rejected_before_any_model_call(params, message):
    llm = ScriptedLLM(["never"])
    with pytest.raises(ValueError, match=message):
        llm.chat([{"role": "user", "content": "hi"}], **params)
    assert llm.requests == []


def test_unknown_parameter_is_an_error():
    with pytest.raises(TypeError):
        ScriptedLLM(["x"]).chat([{"role": "user", "content": "hi"}], frequency_penaltyy=1)


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"role": "wizard", "content": "x"}], [{"role": "user"}], [{"role": "user", "content": 3}]],
)
def test_bad_messages_are_rejected(messages):
    with pytest.raises(ValueError, match="messages"):
        ScriptedLLM(["x"]).chat(messages)


def test_score_rejects_empty_input():
    llm = ScriptedLLM()
    with pytest.raises(ValueError):
        llm.score("", [" a"])
    with pytest.raises(ValueError):
        llm.score("prompt", [])


def test_stop_is_normalised_to_a_tuple():
    assert GenParams(stop="###").stop == ("###",)
    assert GenParams(stop=["a", "b"]).stop == ("a", "b")


def test_async_variants_run_concurrently_and_log_each_call():
    sink = Sink()
    llm = ScriptedLLM(lambda req: (req.messages[-1]["content"] if req.messages else req.prompt).upper(), scores={" x": -0.5}, sink=sink)

    async def main():
        replies = await asyncio.gather(*(llm.achat([{"role": "user", "content": f"q{i}"}]) for i in range(5)))
        streamed = [c.text async for c in llm.astream_chat([{"role": "user", "content": "stream me"}])]
        scores = await llm.ascore("p", [" x"])
        done = await llm.acomplete("plain text")
        return replies, streamed, scores, done

    replies, streamed, scores, done = asyncio.run(main())
    assert sorted(r.text for r in replies) == [f"Q{i}" for i in range(5)]
    assert "".join(streamed) == "STREAM ME"
    assert scores[0].logprob == -0.5 and done.text == "PLAIN TEXT"
    assert sorted(r.kind for r in sink) == ["chat"] * 6 + ["complete", "score"]


def test_async_stream_propagates_backend_errors():
    llm = ScriptedLLM([ValueError("bad reply")])

    async def main():
        return [c async for c in llm.astream_chat([{"role": "user", "content": "x"}])]

    with pytest.raises(ValueError, match="bad reply"):
        asyncio.run(main())


def test_counting_tokens_needs_a_vocab_and_counts_chat_prompts_whole():
    llm = ScriptedLLM(["x"])
    with pytest.raises(UnsupportedFeature, match="no tokenizer"):
        llm.count_tokens("hello")
    with pytest.raises(UnsupportedFeature, match="context length"):
        llm.context_length

    class Words:  # a tokenizer of words, and a chat template that adds one marker per message
        def tokenize(self, text, *, add_bos):
            return text.split()

        def chat_prompt(self, messages):
            return " ".join(f"<{m['role']}> {m['content']}" for m in messages)

    llm.vocab = Words()
    rendered = prompts.render("demo", question="why is the sky blue?")
    assert llm.count_tokens("why is the sky blue?") == 5
    assert llm.count_tokens(rendered) == llm.count_tokens(rendered.messages) == 2 + len(" ".join(
        m["content"] for m in rendered.messages).split())
    with pytest.raises(ValueError, match="messages"):
        llm.count_tokens([{"role": "nobody", "content": "x"}])
