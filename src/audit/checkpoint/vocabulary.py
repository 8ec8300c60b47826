"""A model's vocabulary, whatever file carries it: token strings in id order.

Methods that align two residual bases through the embeddings of shared
tokens need to know which rows of two embedding matrices stand for the same
token.  Between models of one tokenizer that is the token id; between
different tokenizers it is the token's *text*.  Tokenizers spell the same
text differently (``Ġthe`` in GPT-2's byte-level BPE, ``▁the`` in
SentencePiece, ``<0x41>`` for a byte-fallback piece), so each vocabulary
also decodes every token to the bytes it stands for; :func:`shared_tokens`
matches on those.

Sources, in the order a checkpoint folder is searched: ``tokenizer.json``
(Hugging Face ``tokenizers``: ``model.vocab`` plus ``added_tokens``),
SentencePiece ``tokenizer.model`` (read with the ``sentencepiece`` package),
and the ``tokenizer.ggml.*`` metadata embedded in a GGUF file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from audit.errors import InputError, shown
from audit.files import LIMITS, read_file, read_json_file, status

MAX_TOKENS = 1 << 24  # no real vocabulary comes near 16.7M tokens; an id beyond is corrupt input

KIND_TOKENIZER_JSON = "tokenizer.json"
KIND_SENTENCEPIECE = "sentencepiece"
KIND_GGUF = "gguf"

# How token strings spell the bytes they stand for.
BYTE_LEVEL = "byte-level"  # GPT-2 style: every byte mapped to a printable character
METASPACE = "metaspace"    # SentencePiece style: '▁' for a space, '<0xNN>' byte-fallback pieces
PLAIN = "plain"            # token strings are the text itself (WordPiece, word level)

_METASPACE = "\u2581"
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable character for each byte, inverted (its ``bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _token_bytes(token: str, encoding: str, byte_decoder: dict[str, int]) -> bytes:
    if encoding == BYTE_LEVEL:
        try:
            return bytes(byte_decoder[ch] for ch in token)
        except KeyError:  # an added token spelled as plain text
            return token.encode("utf-8")
    if encoding == METASPACE:
        match = _BYTE_PIECE.fullmatch(token)
        if match:
            return bytes([int(match.group(1), 16)])
        return token.replace(_METASPACE, " ").encode("utf-8")
    return token.encode("utf-8")


@dataclass(frozen=True)
class Vocabulary:
    """Token strings in id order, where they came from, and how they spell bytes.

    ``tokens[i]`` is the string of token id ``i`` (None for an id the file
    leaves unassigned); ``special`` holds the ids of control, unknown and
    other special tokens, which carry no text and are never matched.
    """

    tokens: tuple[str | None, ...]
    kind: str
    path: Path
    encoding: str = PLAIN
    special: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def ids(self) -> dict[str, int]:
        """Token string -> id (the lowest id when a string repeats)."""
        mapping: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if token is not None:
                mapping.setdefault(token, i)
        return mapping

    @cached_property
    def texts(self) -> tuple[bytes | None, ...]:
        """The bytes each token stands for (None for unassigned and special ids).

        This is what two tokenizers can share: ``Ġthe``, ``▁the`` and a
        WordLevel `` the`` all decode to ``b' the'``.
        """
        decoder = _gpt2_byte_decoder() if self.encoding == BYTE_LEVEL else {}
        return tuple(
            None if token is None or i in self.special else _token_bytes(token, self.encoding, decoder)
            for i, token in enumerate(self.tokens)
        )

    @cached_property
    def byte_fallback(self) -> frozenset[int]:
        """Ids of SentencePiece byte pieces (``<0xNN>``): a text piece of the same byte is preferred."""
        if self.encoding != METASPACE:
            return frozenset()
        return frozenset(i for i, t in enumerate(self.tokens) if t is not None and _BYTE_PIECE.fullmatch(t))

    def summary(self) -> dict:
        """What the manifest records about the vocabulary."""
        return {"kind": self.kind, "path": str(self.path), "size": len(self.tokens), "encoding": self.encoding,
                "special": len(self.special)}


@dataclass(frozen=True)
class SharedTokens:
    """Token ids of two vocabularies that stand for the same bytes, paired row by row."""

    ids_a: np.ndarray
    ids_b: np.ndarray
    by: str  # "text" (decoded token bytes) or "id" (same tokenizer)

    def __len__(self) -> int:
        return int(self.ids_a.size)


def shared_tokens(a: Vocabulary, b: Vocabulary, *, limit_a: int | None = None, limit_b: int | None = None) -> SharedTokens:
    """Pairs (id in a, id in b) of tokens with the same decoded bytes, in byte order.

    A text that two ids of one vocabulary decode to is ambiguous and left
    out, so every pair is one-to-one; a byte-fallback piece only stands for
    its byte when no ordinary piece does.  ``limit_a``/``limit_b`` drop ids
    at or beyond an embedding's row count (tokenizers often list more ids
    than the matrix has rows).
    """
    def unique(vocab: Vocabulary, limit: int | None) -> dict[bytes, int]:
        chosen: dict[bytes, int] = {}
        for fallback in (False, True):
            found: dict[bytes, list[int]] = {}
            for i, text in enumerate(vocab.texts):
                if text and (limit is None or i < limit) and (i in vocab.byte_fallback) == fallback and text not in chosen:
                    found.setdefault(text, []).append(i)
            chosen.update({text: ids[0] for text, ids in found.items() if len(ids) == 1})
        return chosen

    left, right = unique(a, limit_a), unique(b, limit_b)
    common = sorted(set(left) & set(right))
    return SharedTokens(np.array([left[t] for t in common], dtype=np.int64),
                        np.array([right[t] for t in common], dtype=np.int64), "text")


def _check_id(token: object, i: object, path: Path) -> int:
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < MAX_TOKENS:
        raise InputError(f"{path}: token {shown(repr(token), 60)} has id {shown(repr(i), 40)}, not an integer in [0, {MAX_TOKENS})")
    return i


def _tokens_in_id_order(pairs: Iterable[tuple[str, object]], path: Path) -> list[str | None]:
    assigned: dict[int, str] = {}
    for token, i in pairs:
        i = _check_id(token, i, path)
        if i in assigned and assigned[i] != token:
            raise InputError(f"{path}: id {i} is given to two tokens, {shown(repr(assigned[i]), 60)} and {shown(repr(token), 60)}")
        assigned[i] = token
    tokens: list[str | None] = [None] * (max(assigned) + 1 if assigned else 0)
    for i, token in assigned.items():
        tokens[i] = token
    return tokens


def _types_in(node: object) -> set[str]:
    """Every ``type`` named in a tokenizer.json component (components nest in Sequences)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.add(node["type"])
        for value in node.values():
            found |= _types_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= _types_in(value)
    return found


def _tokenizer_json_encoding(data: dict) -> str:
    parts = [data.get(key) for key in ("normalizer", "pre_tokenizer", "decoder")]
    types = _types_in(parts)
    if "ByteLevel" in types:
        return BYTE_LEVEL
    if "Metaspace" in types or _METASPACE in json.dumps(parts, ensure_ascii=False) or (data.get("model") or {}).get("byte_fallback"):
        return METASPACE
    return PLAIN


def read_tokenizer_json(path: Path) -> Vocabulary:
    """``model.vocab`` (a mapping, or Unigram's ``[token, score]`` list) plus ``added_tokens``."""
    data = read_json_file(path, limit=LIMITS["tokenizer"], what="tokenizer.json")
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if isinstance(vocab, dict):
        pairs = [(str(token), i) for token, i in vocab.items()]
    elif isinstance(vocab, list) and all(isinstance(item, list) and item and isinstance(item[0], str) for item in vocab):
        pairs = [(item[0], i) for i, item in enumerate(vocab)]
    else:
        raise InputError(f"{path}: tokenizer.json has no model.vocab")
    tokens = _tokens_in_id_order(pairs, path)
    added = data.get("added_tokens") or []
    if not isinstance(added, list):
        raise InputError(f"{path}: tokenizer.json added_tokens is not a list")
    special: set[int] = set()
    for token in added:
        if not (isinstance(token, dict) and isinstance(token.get("content"), str) and "id" in token):
            raise InputError(f"{path}: tokenizer.json has an added token without content and id")
        i = _check_id(token["content"], token["id"], path)
        tokens.extend([None] * (i + 1 - len(tokens)))
        tokens[i] = token["content"]  # an added token replaces the model's string for its id
        if token.get("special"):
            special.add(i)
    return Vocabulary(tuple(tokens), KIND_TOKENIZER_JSON, Path(path), _tokenizer_json_encoding(data), frozenset(special))


def read_sentencepiece(path: Path) -> Vocabulary:
    """A SentencePiece ``tokenizer.model``: pieces in id order; control and unknown pieces are special."""
    import sentencepiece  # heavy and only needed for this format

    processor = sentencepiece.SentencePieceProcessor()
    data = read_file(path, limit=LIMITS["tokenizer"], what="SentencePiece model")
    try:
        processor.LoadFromSerializedProto(data)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a SentencePiece model ({str(exc).strip() or type(exc).__name__})") from None
    size = processor.get_piece_size()
    if size == 0:
        raise InputError(f"{path}: the SentencePiece model has no pieces")
    tokens = tuple(processor.id_to_piece(i) for i in range(size))
    special = frozenset(i for i in range(size) if processor.is_control(i) or processor.is_unknown(i) or processor.is_unused(i))
    return Vocabulary(tokens, KIND_SENTENCEPIECE, Path(path), METASPACE, special)


# GGUF token types (llama.cpp's llama_token_type): 1 normal, 2 unknown, 3 control,
# 4 user defined, 5 unused, 6 byte.  Unknown, control and unused carry no text.
GGUF_SPECIAL_TYPES = frozenset({2, 3, 5})
GGUF_ENCODINGS = {"llama": METASPACE, "gpt2": BYTE_LEVEL, "bert": PLAIN}


def vocabulary_from_gguf(tokens: Sequence[str], token_types: Sequence[int] | None, model: str | None, path: Path) -> Vocabulary:
    """The vocabulary embedded in a GGUF file's ``tokenizer.ggml.*`` metadata."""
    if token_types is not None and len(token_types) != len(tokens):
        raise InputError(f"{path}: GGUF has {len(tokens)} tokens but {len(token_types)} token types")
    if len(tokens) >= MAX_TOKENS:
        raise InputError(f"{path}: GGUF vocabulary of {len(tokens)} tokens is beyond any real tokenizer")
    special = frozenset(i for i, t in enumerate(token_types or ()) if int(t) in GGUF_SPECIAL_TYPES)
    return Vocabulary(tuple(tokens), KIND_GGUF, Path(path), GGUF_ENCODINGS.get(model or "", PLAIN), special)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def read_vocabulary_in(directory: Path) -> Vocabulary | None:
    """The vocabulary shipped beside the weights in ``directory`` (tokenizer.json first), or None."""
    json_path, spm_path = (Path(directory) / name for name in TOKENIZER_FILES)
    if status(json_path, "tokenizer.json") is not None:  # present: read, so a FIFO or folder is refused
        return read_tokenizer_json(json_path)
    if status(spm_path, "SentencePiece model") is not None:
        return read_sentencepiece(spm_path)
    return None
