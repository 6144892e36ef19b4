"""Text for weights that come as an HF folder: its ``tokenizer.json`` through the
``tokenizers`` library (``HFTokenizer``), and with the folder's configs around it, the
rest an engine needs (``HFText``): BOS, the ids that end a generation, the chat template.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conclave.local_models.errors import ModelNotFound, WeightsCorrupt

EOG_NAMES = ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "<end_of_turn>", "<|eot_id|>", "<|end_of_text|>")


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
        self._eog = {i for i, t in added.items() if t.content in EOG_NAMES}
        spec = self._tok.to_str()
        self._bytes = _byte_decoder() if '"ByteLevel"' in spec else None
        # SentencePiece's conventions: "▁" stands for a space, "<0xE2>" for a raw byte
        self._sentencepiece = '"ByteFallback"' in spec or '"Metaspace"' in spec
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
            elif self._sentencepiece:
                s = self._tok.id_to_token(token) or ""
                raw = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", s)
                piece = bytes([int(raw[1], 16)]) if raw else s.replace("\u2581", " ").encode("utf-8")
            else:
                piece = self._tok.decode([token], skip_special_tokens=False).encode("utf-8")
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return token in self._eog

def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsCorrupt(f"{path} is not valid JSON: {e}") from e


def _content(token) -> str | None:
    """A special token as tokenizer_config.json spells it: a string or {"content": ...}."""
    return token.get("content") if isinstance(token, dict) else token


def _ids(value) -> set[int]:
    return set(value) if isinstance(value, list) else ({value} if isinstance(value, int) else set())


class HFText(HFTokenizer):
    """A model folder's text, as transformers reads it: ``tokenizer.json``, with BOS, EOS
    and the chat template from ``tokenizer_config.json`` (or ``chat_template.jinja``), and
    the end-of-generation ids from ``generation_config.json`` and ``config.json`` too."""

    def __init__(self, folder: Path, *, name: str | None = None):
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise ModelNotFound(f"{folder} has no tokenizer.json: the native engine reads text through it")
        super().__init__(folder / "tokenizer.json")
        self.name = name or folder.name
        tc = _read_json(folder / "tokenizer_config.json")
        gen, cfg = _read_json(folder / "generation_config.json"), _read_json(folder / "config.json")
        cfg = {**cfg.get("text_config", {}), **cfg}
        self.bos_text, self.eos_text = _content(tc.get("bos_token")), _content(tc.get("eos_token"))
        bos = self._tok.token_to_id(self.bos_text) if self.bos_text else None
        self.bos = bos if bos is not None else next(iter(_ids(gen.get("bos_token_id")) | _ids(cfg.get("bos_token_id"))), None)
        self._eog |= _ids(gen.get("eos_token_id")) | _ids(cfg.get("eos_token_id"))
        if self.eos_text and self._tok.token_to_id(self.eos_text) is not None:
            self._eog.add(self._tok.token_to_id(self.eos_text))
        if "add_bos_token" in tc:
            self._add_bos = bool(tc["add_bos_token"]) and self.bos is not None
        else:  # the tokenizer's own post-processor says whether it prepends one
            probe = self._tok.encode("a", add_special_tokens=True).ids
            self._add_bos = self.bos is not None and bool(probe) and probe[0] == self.bos
        template = tc.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        self.chat_template = template
        self._formatter = None

    @property
    def add_bos(self) -> bool:
        return self._add_bos

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        """With ``add_bos``, the BOS the model wants, if it wants one (llama.cpp's rule)."""
        ids = self.encode(text)
        return [self.bos, *ids] if add_bos and self._add_bos else ids

    def chat_prompt(self, messages: list[dict]) -> str:
        if not self.chat_template:
            raise ValueError(f"{self.name} has no chat template in its tokenizer_config.json; use plain completion")
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # the one renderer of chat templates we use

            self._formatter = Jinja2ChatFormatter(template=self.chat_template, eos_token=self.eos_text or "",
                                                  bos_token=self.bos_text or "")
        return self._formatter(messages=messages).prompt
