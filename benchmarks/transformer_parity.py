"""The native transformer against llama.cpp on the same GGUF: top-1 agreement over 1,000
teacher-forced positions of Wikipedia text, the largest logit difference, and the top-2
margin (in our logits) at every position where the two disagree.

llama.cpp multiplies quantized blocks with quantized activations, so it flips near-ties;
exact parity is checked against HF transformers instead (tests/test_transformer.py).

    python benchmarks/transformer_parity.py [--model smollm2-135m-instruct] [--model gemma-3-270m] [--start 0]
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from conclave.app.settings import load_settings
from conclave.local_models import catalog
from conclave.local_models.llamacpp import LlamaCppEngine
from conclave.local_models.transformer.engine import load
from conclave.retrieval import corpora
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append")
    ap.add_argument("--start", type=int, action="append", help="token offsets of the 1,000-token windows")
    args = ap.parse_args()
    settings = load_settings()
    text = "\n\n".join(r.text for r in corpora.wikipedia(limit=40))
    table = Table(title="native (float32, dequantized) against llama.cpp (quantized), 1,000 teacher-forced positions")
    for col in ("model", "window", "top-1 agreement", "goal", "max |logit diff|", "top-2 margins at disagreements"):
        table.add_column(col)
    for name in args.model or ["smollm2-135m-instruct", "gemma-3-270m"]:
        spec = catalog.resolve(name)
        path = catalog.ensure_weights(spec, settings.data_dir)
        ours, lc = load(path, n_ctx=2048), LlamaCppEngine(path, n_ctx=2048)
        all_ids = ours.tokenize(text, add_bos=ours.add_bos)
        for start in args.start or [0, 3000]:
            ids = all_ids[start : start + 1000]
            cache = ours.model.new_cache(1, 1024)
            mine = torch.cat([ours.model(torch.tensor([ids[i : i + 500]]), cache, all_logits=True)[0] for i in (0, 500)])
            lc.truncate(0, 0)
            theirs = torch.from_numpy(lc.append(ids, all_logits=True))
            differ = mine.argmax(-1) != theirs.argmax(-1)
            top2 = mine[differ].topk(2).values
            margins = sorted((top2[:, 0] - top2[:, 1]).tolist())
            table.add_row(spec.name, f"{start}-{start + 1000}", f"{1 - differ.float().mean().item():.1%}", ">= 97%",
                          f"{(mine - theirs).abs().max().item():.2f}", " ".join(f"{m:.2f}" for m in margins))
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
