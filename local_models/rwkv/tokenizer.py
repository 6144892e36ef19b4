"""RWKV tokenizers: the World vocabulary (greedy longest match over UTF-8 bytes, as in
BlinkDL's reference), and any HF ``tokenizer.json`` (20B_tokenizer for the Pile models).

Both give what an engine needs: ids from text, the bytes of each id, and which ids end a
generation.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from local_models.errors import ModelNotFound, WeightsCorrupt

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


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable stand-in for each byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


class HFTokenizer:
    """A ``tokenizer.json`` through the ``tokenizers`` library."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise WeightsCorrupt(f"{path} is not a tokenizer.json the tokenizers library can read: {e}") from e
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        added = self._tok.get_added_tokens_decoder()
        self._special = {i for i, t in added.items() if t.special}
        # added tokens are stored as plain text, outside the byte-level alphabet
        self._added = {i: t.content.encode("utf-8") for i, t in added.items() if not t.special}
        self._eog = {i for i, t in added.items() if t.content in ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>")}
        byte_level = '"ByteLevel"' in self._tok.to_str()
        self._bytes = _byte_decoder() if byte_level else None
        self._pieces: dict[int, bytes] = {}

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            if token in self._special:
                piece = b""
            elif token in self._added:
                piece = self._added[token]
            elif self._bytes is not None:
                s = self._tok.id_to_token(token) or ""
                piece = bytes(self._bytes[ch] for ch in s if ch in self._bytes)
            else:
                piece = self._tok.decode([token], skip_special_tokens=False).encode("utf-8")
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return token in self._eog
