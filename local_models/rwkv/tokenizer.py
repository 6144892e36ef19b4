"""RWKV tokenizers: the World vocabulary (greedy longest match over UTF-8 bytes, as in
BlinkDL's reference), and any HF ``tokenizer.json`` (20B_tokenizer for the Pile models;
``local_models.hf_text``).

Both give what an engine needs: ids from text, the bytes of each id, and which ids end a
generation.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from conclave.local_models.errors import ModelNotFound, WeightsCorrupt

WORLD_VOCAB = "rwkv_vocab_v20230424.txt"


def world_vocab_path() -> Path:
    """The World vocabulary that the ``rwkv`` package ships."""
    spec = importlib.util.find_spec("rwkv")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the RWKV World tokenizer comes with the rwkv package ({WORLD_VOCAB}): pip install rwkv")
    return Path(list(spec.submodule_search_locations)[0]) / WORLD_VOCAB


class WorldTokenizer:
    """Token 0 is end-of-text; ids 1.. are the lines of the vocabulary file."""

    eos = 0

    def __init__(self, path: Path | None = None):
        path = Path(path) if path else world_vocab_path()
        self.pieces: dict[int, bytes] = {0: b""}
        self._trie: dict = {}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                idx, rest = line.split(" ", 1)
                literal, length = rest.rsplit(" ", 1)
                piece = ast.literal_eval(literal)
            except (ValueError, SyntaxError) as e:
                raise WeightsCorrupt(f"{path}:{n}: not a vocabulary line ({e})") from e
            piece = piece.encode("utf-8") if isinstance(piece, str) else piece
            if len(piece) != int(length):
                raise WeightsCorrupt(f"{path}:{n}: the token is {len(piece)} bytes, the line says {length}")
            self.pieces[int(idx)] = piece
            node = self._trie
            for byte in piece:
                node = node.setdefault(byte, {})
            node[-1] = int(idx)
        self.n_vocab = max(65536, max(self.pieces) + 1)  # World models pad the embedding to 2^16 rows

    def encode(self, text: str) -> list[int]:
        src, out, i, n = text.encode("utf-8"), [], 0, 0
        n = len(src)
        while i < n:
            node, j, best = self._trie, i, None
            while j < n:
                node = node.get(src[j])
                if node is None:
                    break
                j += 1
                if -1 in node:
                    best = (j, node[-1])
            if best is None:  # every single byte is in the vocabulary, so this means a broken file
                raise WeightsCorrupt(f"the World vocabulary has no token for byte {src[i]}")
            i, tok = best
            out.append(tok)
        return out

    def token_bytes(self, token: int) -> bytes:
        return self.pieces.get(token, b"")

    def is_eog(self, token: int) -> bool:
        return token == self.eos
