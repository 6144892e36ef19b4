"""A catalog GGUF as a trainable torch model: transformers' GGUF loader dequantizes it once,
and the result is kept beside the weights as safetensors, so later loads take a second
instead of half a minute. Plus the few sequence operations every training recipe needs:
sampling, greedy continuation, and log-probabilities of given continuations.

Sequences are plain lists of token ids; batches are padded here and nowhere else.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from conclave.local_models.errors import ConclaveError


class LoadError(ConclaveError):
    pass


def device() -> torch.device:
    """A GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def cache_dir(weights: Path) -> Path:
    """Where the dequantized copy of ``weights`` lives; its name changes with the file."""
    st = weights.stat()
    return weights.parent / "torch" / f"{weights.stem}-{st.st_size}-{int(st.st_mtime)}"


def _from_gguf(weights: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)
        model = AutoModelForCausalLM.from_pretrained(weights.parent, gguf_file=weights.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:
        raise LoadError(f"transformers cannot read {weights.name}: {e}") from None
    model.hf_quantizer = None  # the weights are plain floats now; transformers won't save a "quantized" model
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return tok, model


def _write_cache(weights: Path, tok, model) -> None:
    cached = cache_dir(weights)
    tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}")  # two processes may dequantize at once
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok.save_pretrained(tmp)
        model.save_pretrained(tmp)
        (tmp / "done").touch()
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)  # a crash mid-write leaves only the .tmp, never a half cache
    except OSError:  # no room, or a sandbox's file-size limit: the next load dequantizes again
        shutil.rmtree(tmp, ignore_errors=True)


def dequantize(weights: Path) -> Path:
    """The dequantized copy of ``weights``, made now if there is none."""
    _offline()
    weights = Path(weights)
    if not (cache_dir(weights) / "done").is_file():
        _write_cache(weights, *_from_gguf(weights))
    return cache_dir(weights)


def load(weights: Path, *, threads: int | None = None, dtype: torch.dtype = torch.float32):
    """(tokenizer, model) from a GGUF file, the model in eval mode on ``device()``. No hub is
    ever asked."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    weights = Path(weights)
    if not weights.is_file():
        raise LoadError(f"no weights at {weights}")
    cached = cache_dir(weights)
    if (cached / "done").is_file():
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    else:
        tok, model = _from_gguf(weights)
        _write_cache(weights, tok, model)
        model = model.to(dtype)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.to(device()).eval()


def frozen(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _left_padded(prompts: list[list[int]], pad: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    return ids, mask


def _cut(rows: list[list[int]], eos: int | None, keep_eos: bool = True) -> list[list[int]]:
    out = []
    for row in rows:
        if eos is not None and eos in row:
            row = row[:row.index(eos) + (1 if keep_eos else 0)]
        out.append(row)
    return out


def sample(model, tok, prompts: list[list[int]], new_tokens: int, seed: int, n: int = 1,
           temperature: float = 1.0, batch: int = 16) -> list[list[int]]:
    """``n`` continuations per prompt (prompt-major), at ``temperature`` over the whole
    vocabulary (so log-probability estimates stay unbiased), cut after the first
    end-of-sequence; an empty one becomes the end-of-sequence token."""
    pad, eos = tok.pad_token_id, tok.eos_token_id
    torch.manual_seed(seed)
    out: list[list[int]] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            ids, mask = _left_padded(prompts[i:i + batch], pad, model.device)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=True,
                                 temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=n,
                                 pad_token_id=pad)
            out += [c or [eos] for c in _cut(gen[:, ids.shape[1]:].tolist(), eos)]
    return out


def greedy(model, tok, prompts: list[list[int]], new_tokens: int, batch: int = 16,
           stop_at_eos: bool = True) -> list[list[int]]:
    """The greedy continuation of each prompt, up to ``new_tokens`` tokens."""
    pad, eos = tok.pad_token_id, tok.eos_token_id
    out: list[list[int]] = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            ids, mask = _left_padded(prompts[i:i + batch], pad, model.device)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=pad, **({} if stop_at_eos else {"min_new_tokens": new_tokens}))
            out += _cut(gen[:, ids.shape[1]:].tolist(), eos if stop_at_eos else None, keep_eos=False)
    return out


def batch(prompts: list[list[int]], conts: list[list[int]], dev=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, target mask) for prompt+continuation rows, right-padded. The
    target mask marks the positions of ``ids[:, 1:]`` that are continuation tokens."""
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token: the first continuation token is predicted from it")
    seqs = [p + c for p, c in zip(prompts, conts)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=dev)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=dev)
    target = torch.zeros(len(seqs), width - 1, device=dev)
    for i, (p, c) in enumerate(zip(prompts, conts)):
        target[i, len(p) - 1:len(p) - 1 + len(c)] = 1.0
    return ids, mask, target


def token_logps(model, prompts: list[list[int]], conts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log P of each next token, target mask, log-softmax over the vocabulary), both aligned
    with ``ids[:, 1:]`` of ``batch``; gradients flow when the model is trained."""
    ids, mask, target = batch(prompts, conts, model.device)
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1), target, logp


def seq_logps(model, prompts: list[list[int]], conts: list[list[int]]) -> torch.Tensor:
    """log P(continuation | prompt), summed over the continuation's tokens, one per row."""
    picked, target, _ = token_logps(model, prompts, conts)
    return (picked * target).sum(-1)


def chunked(fn, prompts: list[list[int]], conts: list[list[int]], size: int = 8) -> torch.Tensor:
    """``fn(prompts, conts)`` over chunks of rows, without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(prompts[i:i + size], conts[i:i + size]) for i in range(0, len(prompts), size)])
