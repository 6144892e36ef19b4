"""The native RWKV-4 engine against implementations nobody here wrote: the ``rwkv`` pip
package (ChatRWKV's reference, cpu fp32) and HF transformers' RwkvForCausalLM, on
random-weight checkpoints in their own key layouts."""

import os

import numpy as np
import pytest
import torch

from conclave.local_models.errors import BackendUnavailable, ModelNotFound, WeightsCorrupt
from conclave.local_models.rwkv import weights
from conclave.local_models.rwkv.engine import RwkvEngine, load as load_engine
from conclave.local_models.rwkv.model import State
from conclave.local_models.rwkv.tokenizer import WorldTokenizer
from conclave.local_models.rwkv.random_weights import official_state_dict, save_checkpoint

L, D, V = 4, 128, 1000


def rel(out, ref) -> float:
    out, ref = torch.as_tensor(out).double(), torch.as_tensor(ref).double()
    return ((out - ref).norm() / ref.norm()).item()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("rwkv") / "rwkv4-L4-D128.pth", L, D, V, seed=1)


@pytest.fixture(scope="module")
def model(ckpt):
    return weights.load(ckpt)


@pytest.fixture(scope="module")
def reference(ckpt):
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    from rwkv.model import RWKV

    return RWKV(model=str(ckpt), strategy="cpu fp32", verbose=False)


def tokens(n, seed=0, vocab=V):
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def ref_state_as_ours(ref_state) -> State:
    """The rwkv package keeps [att_xx, aa, bb, pp, ffn_xx] per layer, flat."""
    per = [torch.stack([ref_state[i * 5 + j] for i in range(L)])[:, None] for j in range(5)]
    return State(*per)


def assert_same_state(ours: State, theirs: State, tol=1e-4):
    assert rel(ours.att_x, theirs.att_x) < tol and rel(ours.ffn_x, theirs.ffn_x) < tol
    # (aa, bb, pp) is scaled by its own running maximum: compare what it stands for
    for a, b in ((ours.aa, theirs.aa), (ours.bb, theirs.bb)):
        assert rel(a.double() * torch.exp(ours.pp.double()), b.double() * torch.exp(theirs.pp.double())) < tol


def test_matches_the_rwkv_package_on_prefill_and_decode(model, reference):
    prompt, follow = tokens(256, seed=1), tokens(64, seed=2)
    theirs, ref_state = reference.forward(prompt, None, full_output=True)
    ours, state = model(torch.tensor([prompt]), all_logits=True)
    assert rel(ours[0], theirs) < 1e-4
    assert_same_state(state, ref_state_as_ours(ref_state))
    errs = []
    for t in follow:
        theirs, ref_state = reference.forward([t], ref_state)
        ours, state = model(torch.tensor([[t]]), state)
        errs.append(rel(ours[0], theirs))
    assert max(errs) < 1e-4
    assert_same_state(state, ref_state_as_ours(ref_state))


def test_parallel_prefill_and_recurrent_decode_agree(model):
    seq = tokens(80, seed=3)
    parallel, s1 = model(torch.tensor([seq]), all_logits=True)
    s2 = model.new_state(1)
    rows = [model(torch.tensor([[t]]), s2)[0] for t in seq]
    assert rel(torch.cat(rows), parallel[0]) < 1e-5
    assert_same_state(s1, s2, tol=1e-5)


def test_a_batch_decodes_like_its_sequences_one_by_one(model):
    a, b = tokens(30, seed=4), tokens(30, seed=5)
    both, s = model(torch.tensor([a, b]), all_logits=True)
    assert rel(both[0], model(torch.tensor([a]), all_logits=True)[0][0]) < 1e-5
    copy = s.copy()
    step, _ = model(torch.tensor([[7], [9]]), s)
    again, _ = model(torch.tensor([[7], [9]]), copy)  # the copy did not move with s
    assert torch.equal(step, again)
    rows = s.rows([1])
    assert rows.batch == 1 and rows.nbytes == s.nbytes // 2


def test_matches_hf_transformers_and_reads_its_layout(ckpt, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.RwkvConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, attention_hidden_size=D,
                                  intermediate_size=4 * D, context_length=1024, rescale_every=0, tie_word_embeddings=False)
    hf = transformers.RwkvForCausalLM(cfg).eval()
    sd = torch.load(ckpt, weights_only=True)
    renames = [("emb.", "embeddings."), ("ln0.", "pre_ln."), (".att.", ".attention."), (".ffn.", ".feed_forward."),
               ("time_mix_k", "time_mix_key"), ("time_mix_v", "time_mix_value"), ("time_mix_r", "time_mix_receptance")]
    hf_sd = {}
    for key, t in sd.items():
        if key != "head.weight":
            for official, theirs in renames:
                key = key.replace(official, theirs)
            key = "rwkv." + key
        hf_sd[key] = t.reshape(hf.state_dict()[key].shape)
    hf.load_state_dict(hf_sd, strict=True)
    hf.save_pretrained(tmp_path / "hf")
    seq = tokens(100, seed=6)
    with torch.no_grad():
        theirs = hf(torch.tensor([seq])).logits[0]
    ours = weights.load(tmp_path / "hf")(torch.tensor([seq]), all_logits=True)[0][0]
    assert rel(ours, theirs) < 1e-4


def test_unknown_and_corrupt_checkpoints_say_what_is_wrong(tmp_path):
    sd = official_state_dict(2, 16, 50)
    del sd["blocks.1.att.time_first"], sd["blocks.0.ffn.value.weight"]
    torch.save(sd, tmp_path / "holes.pth")
    with pytest.raises(WeightsCorrupt, match=r"missing 2 RWKV-4 weights: blocks\.0\.ffn\.value\.weight, blocks\.1\.att\.time_first"):
        weights.load(tmp_path / "holes.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsCorrupt, match="could not be read"):
        weights.load(tmp_path / "junk.pth")
    v5 = official_state_dict(1, 16, 50)
    v5["blocks.0.att.ln_x.weight"] = torch.ones(16)
    torch.save(v5, tmp_path / "v5.pth")
    with pytest.raises(BackendUnavailable, match="RWKV-5"):
        weights.load(tmp_path / "v5.pth")
    bad = official_state_dict(1, 16, 50)
    bad["blocks.0.att.output.weight"] = torch.zeros(16, 8)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(WeightsCorrupt, match="output.weight has shape"):
        weights.load(tmp_path / "shape.pth")
    with pytest.raises(WeightsCorrupt, match="no RWKV checkpoint"):
        weights.load(tmp_path / "absent.pth")
    odd = official_state_dict(1, 16, 50)
    odd["blocks.x.att.extra"] = torch.zeros(1)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(WeightsCorrupt, match="not a well-formed"):
        weights.load(tmp_path / "odd.pth")


def test_world_tokenizer_matches_the_reference_trie():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from conclave.local_models.rwkv.tokenizer import world_vocab_path

    ours, ref = WorldTokenizer(), TRIE_TOKENIZER(str(world_vocab_path()))
    text = ("The quick brown fox — jumps over 13 lazy dogs.\n\n  Indented\tcode: x = f(y) ** 2\n"
            "中文分词测试，日本語のテキスト、한국어 문장. Emoji: 🦜🦜 Ünïcödé façade naïve\r\n" + " " * 40 + "end")
    ids = ours.encode(text)
    assert ids == ref.encode(text)
    assert b"".join(ours.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert ours.n_vocab == 65536 and ours.is_eog(0) and not ours.is_eog(ids[0])


def test_hf_tokenizer_json_round_trips(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    from conclave.local_models.hf_text import HFTokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["hello world, hello RWKV"] * 50, vocab_size=300, special_tokens=["<|endoftext|>"])
    trainer.add_tokens(["    ", "é-added"])  # plain-text added tokens, as 20B_tokenizer has for runs of spaces
    trainer.save(str(tmp_path / "tokenizer.json"))
    tok = HFTokenizer(tmp_path / "tokenizer.json")
    text = "hello wörld 🦜\n    indented é-added"
    ids = tok.encode(text)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert tok.is_eog(0) and tok.token_bytes(0) == b""
    with pytest.raises(WeightsCorrupt):
        HFTokenizer(tmp_path / "missing.json")
    small = save_checkpoint(tmp_path / "small.pth", 1, 16, 50)  # fewer embeddings than the tokenizer has tokens
    with pytest.raises(WeightsCorrupt, match="not this model's tokenizer"):
        load_engine(small, tokenizer=tmp_path / "tokenizer.json")


@pytest.fixture(scope="module")
def world_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("world") / "rwkv4-world-tiny.pth", 2, 64, 65536, seed=2)


def test_engine_reuses_checkpointed_state_when_a_chat_resumes(world_ckpt):
    eng = load_engine(world_ckpt, n_ctx=2048)
    assert isinstance(eng, RwkvEngine) and eng.n_vocab == 65536
    chat = [{"role": "user", "content": "Hello there"}]
    first = eng.tokenize(eng.chat_prompt(chat), add_bos=False)
    logits = eng.prefill(first)
    reply = []
    for _ in range(20):
        tok = int(np.argmax(logits))
        reply.append(tok)
        logits = eng.append([tok])
    history = first + reply
    resumed = history + eng.tokenize("\n\nUser: and again?\n\nAssistant:", add_bos=False)
    before = eng.tokens_read
    out = eng.prefill(resumed)
    assert eng.tokens_read - before == len(resumed) - len(history)  # the history was not read again
    fresh = load_engine(world_ckpt, n_ctx=2048).prefill(resumed)
    assert rel(out, fresh) < 1e-5
    # going back into the middle of the history restores a checkpoint and reads on from it
    mid = eng.prefill(first[:-3] + [5, 6])
    assert rel(mid, load_engine(world_ckpt).prefill(first[:-3] + [5, 6])) < 1e-5
    # a prompt read again (a retry, the next continuation to score) re-reads one token
    eng.prefill(resumed)
    before = eng.tokens_read
    again = eng.prefill(resumed)
    assert eng.tokens_read - before == 1 and rel(again, fresh) < 1e-5


def test_long_answers_do_not_evict_the_prompt_checkpoints(world_ckpt):
    eng = load_engine(world_ckpt)
    eng.checkpoint_every, eng.max_checkpoints = 4, 5
    prompt = eng.tokenize("A prompt that is read once " * 3, add_bos=False)
    logits = eng.prefill(prompt)
    for _ in range(40):
        logits = eng.append([int(np.argmax(logits))])
    before = eng.tokens_read
    eng.prefill(prompt)
    assert eng.tokens_read - before == 1
    assert len(eng._checkpoints[0]) <= 5


def test_engine_cache_survives_random_rewinds_and_mixed_batches(world_ckpt):
    """Whatever a scheduler does (rewind a slot anywhere, mix prompt chunks with steps),
    every logit equals a fresh engine's on the same tokens."""
    rng = np.random.default_rng(0)
    eng = load_engine(world_ckpt, n_slots=2)
    eng.checkpoint_every, eng.max_checkpoints = 5, 4
    fresh = load_engine(world_ckpt)
    for _ in range(12):
        slot = int(rng.integers(2))
        eng.truncate(slot, int(rng.integers(0, len(eng.cached(slot)) + 1)))
        other = 1 - slot
        new = rng.integers(1, 60000, int(rng.integers(1, 9))).tolist()
        work = [(slot, new, bool(rng.integers(2)))]
        if eng.cached(other):
            work.append((other, [int(rng.integers(1, 60000))], False))
        outs = eng.decode(work)
        for (s, toks, all_rows), out in zip(work, outs):
            fresh.truncate(0, 0)
            ref = fresh.prefill(eng.cached(s))
            assert rel(out[-1] if all_rows else out, ref) < 1e-5


def test_engine_batches_slots_like_separate_sequences(world_ckpt):
    eng = load_engine(world_ckpt, n_slots=3)
    a, b = eng.tokenize("one two three", add_bos=False), eng.tokenize("quatre cinq", add_bos=False)
    la, lb = eng.decode([(0, a, False), (2, b, True)])
    assert lb.shape == (len(b), 65536)
    step = eng.decode([(0, [11], False), (2, [12], False)])
    solo = load_engine(world_ckpt)
    solo.prefill(a)
    assert rel(step[0], solo.append([11])) < 1e-5
    assert eng.cached(0) == a + [11] and eng.cached(1) == []
    with pytest.raises(Exception, match="exceed the context"):
        eng.decode([(1, [1] * 5000, False)])


def test_seam_runs_an_rwkv_checkpoint_end_to_end(world_ckpt, tmp_path):
    from conclave.agents.backends import open_llm

    llm = open_llm(str(world_ckpt), data_dir=tmp_path)
    assert llm.backend == "native"
    res = llm.complete("The capital of France is", max_tokens=8, temperature=0.0, logprobs=True)
    assert res.usage.completion_tokens >= 1 and res.backend == "native"
    assert len(res.logprobs) >= 1 and all(lp.logprob <= 0 for lp in res.logprobs)
    chat = llm.chat([{"role": "user", "content": "Say hi"}], max_tokens=4, seed=3)
    assert chat.usage.prompt_tokens == len(llm.engine.tokenize("User: Say hi\n\nAssistant:", add_bos=False))
    scores = llm.score("The sky is", [" blue", " green"])
    assert len(scores) == 2 and all(s.logprob < 0 for s in scores)
    with pytest.raises(ValueError, match="llama.cpp cannot read"):
        open_llm(str(world_ckpt), backend="llamacpp", data_dir=tmp_path)


def test_a_pile_checkpoint_without_its_tokenizer_is_refused(ckpt):
    with pytest.raises(ModelNotFound, match="1000-token vocabulary"):
        load_engine(ckpt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_engine_decodes_through_cuda_graphs_like_the_cpu(world_ckpt, exact_fp32):
    gpu = load_engine(world_ckpt, n_slots=2, device="cuda", dtype=torch.float32)
    bf16 = load_engine(world_ckpt, n_slots=2, device="cuda")
    cpu = load_engine(world_ckpt, n_slots=2)
    a = cpu.tokenize("Hello world, this is a test", add_bos=False)
    for eng in (gpu, bf16, cpu):
        eng.decode([(0, a, False), (1, a[:3], False)])
    for tok in (5, 6, 7):
        g, h, c = (eng.decode([(0, [tok], False), (1, [tok + 1], False)]) for eng in (gpu, bf16, cpu))
        assert rel(g[0], c[0]) < 1e-4 and rel(g[1], c[1]) < 1e-4
        assert rel(h[0], c[0]) < 5e-2
    assert set(gpu._graphs) == {2}


def test_served_over_http_to_the_official_openai_client(world_ckpt, tmp_path):
    from conclave.agents.backends import open_llm
    from tests.server_proc import check_served_like_in_process, running_server

    chat = [{"role": "user", "content": "Name a colour."}]
    local = open_llm(str(world_ckpt), data_dir=tmp_path, n_ctx=512).chat(chat, max_tokens=6, temperature=0)
    with running_server(tmp_path, "--model", str(world_ckpt), "--slots", "2", env={"CONCLAVE_N_CTX": "512"}) as base:
        check_served_like_in_process(base, world_ckpt.name, chat, local)


@pytest.mark.parametrize("script,args", [
    ("rwkv_cpu.py", ["--layers", "2", "--embd", "64", "--vocab", "1000", "--prompt", "16", "--new", "4", "--rounds", "1"]),
    ("rwkv_gpu.py", ["--smoke"]),  # the GPU script's own paths on tiny shapes, so that it is ready when a GPU is
])
def test_benchmark_scripts_run(script, args):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args], cwd=root, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RWKV-4" in out.stdout and "tok/s" in out.stdout
