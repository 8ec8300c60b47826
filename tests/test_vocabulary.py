"""Vocabularies from tokenizer.json and SentencePiece tokenizer.model, and shared tokens across tokenizers."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from audit import open_checkpoint
from audit.checkpoint.vocabulary import (
    BYTE_LEVEL,
    METASPACE,
    PLAIN,
    _gpt2_byte_decoder,
    read_sentencepiece,
    read_tokenizer_json,
    shared_tokens,
)
from audit.errors import InputError
from audit.testing.synth import Dims, make_checkpoint

TEXT = ["the cat sat on the mat", "the dog ate the bone", "a cat and a dog", "héllo wörld"] * 5


def spm_model_bytes(**options) -> bytes:
    """A real SentencePiece BPE model trained on a tiny text (deterministic: one thread, fixed input)."""
    import sentencepiece

    out = io.BytesIO()
    settings = dict(vocab_size=300, model_type="bpe", byte_fallback=True, num_threads=1, minloglevel=2,
                    character_coverage=1.0, hard_vocab_limit=False)
    settings.update(options)
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(TEXT), model_writer=out, **settings)
    return out.getvalue()


def gpt2_spelling(text: bytes) -> str:
    encoder = {byte: ch for ch, byte in _gpt2_byte_decoder().items()}
    return "".join(encoder[b] for b in text)


def test_gpt2_byte_table_is_a_bijection_with_the_known_space():
    decoder = _gpt2_byte_decoder()
    assert sorted(decoder.values()) == list(range(256))
    assert decoder["Ġ"] == 0x20 and decoder["Ċ"] == 0x0A and decoder["a"] == ord("a")


def test_tokenizer_json_wordlevel_in_id_order(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "WordLevel", "vocab": {"b": 1, "a": 0, "d": 3}},
                                "added_tokens": [{"id": 4, "content": "<s>", "special": True}]}))
    vocab = read_tokenizer_json(path)
    assert vocab.tokens == ("a", "b", None, "d", "<s>")
    assert (vocab.kind, vocab.path, vocab.encoding, vocab.special) == ("tokenizer.json", path, PLAIN, frozenset({4}))
    assert vocab.ids == {"a": 0, "b": 1, "d": 3, "<s>": 4}
    assert vocab.texts == (b"a", b"b", None, b"d", None)


def test_tokenizer_json_byte_level_decodes_to_bytes(tmp_path):
    path = tmp_path / "tokenizer.json"
    vocab = {"Ġthe": 0, "the": 1, "Ċ": 2, "Ã©": 3}
    path.write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]},
                                "added_tokens": [{"id": 5, "content": "<|end|>", "special": True},
                                                 {"id": 6, "content": "hello", "special": False}]}))
    read = read_tokenizer_json(path)
    assert read.encoding == BYTE_LEVEL
    assert read.texts == (b" the", b"the", b"\n", "é".encode(), None, None, b"hello")


def test_unigram_list_vocab_and_metaspace(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁the", -1.0], ["<0x41>", -2.0]]},
                                "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}))
    read = read_tokenizer_json(path)
    assert read.encoding == METASPACE and read.tokens == ("<unk>", "▁the", "<0x41>")
    assert read.texts[1:] == (b" the", b"A")


@pytest.mark.parametrize("payload,message", [
    ({"model": {"vocab": {"a": -1}}}, "not an integer"),
    ({"model": {"vocab": {"a": 0, "b": 0}}}, "id 0 is given to two tokens"),
    ({"model": {"vocab": {"a": 1 << 40}}}, "not an integer"),
    ({"model": {"type": "BPE"}}, "no model.vocab"),
    ({"model": {"vocab": {"a": 0}}, "added_tokens": [{"content": "x"}]}, "without content and id"),
    ([1, 2], "no model.vocab"),
])
def test_bad_tokenizer_json_is_one_line(tmp_path, payload, message):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(InputError, match=message) as caught:
        read_tokenizer_json(path)
    assert "\n" not in str(caught.value)


def test_sentencepiece_model_pieces_specials_and_bytes(tmp_path):
    import sentencepiece

    path = tmp_path / "tokenizer.model"
    path.write_bytes(spm_model_bytes())
    vocab = read_sentencepiece(path)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(path))
    assert vocab.tokens == tuple(reference.id_to_piece(i) for i in range(reference.get_piece_size()))
    assert vocab.tokens[:3] == ("<unk>", "<s>", "</s>") and vocab.special == frozenset({0, 1, 2})
    assert (vocab.kind, vocab.encoding) == ("sentencepiece", METASPACE)
    assert vocab.texts[vocab.ids["<0x41>"]] == b"A"
    assert vocab.texts[vocab.ids["▁the"]] == b" the"
    # Every piece that encodes text decodes, through our bytes, to what SentencePiece decodes it to.
    for i, text in enumerate(vocab.texts):
        if text is not None and not vocab.tokens[i].startswith("<0x"):
            assert text.decode().lstrip(" ") == reference.decode_ids([i]).lstrip(" ")


def test_garbage_tokenizer_model_is_one_line(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(InputError, match="not a SentencePiece model") as caught:
        read_sentencepiece(path)
    assert "\n" not in str(caught.value)


def test_checkpoint_reads_and_hashes_its_tokenizer_model(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2, hidden=8, mlp=16, heads=2, vocab=12), seed=1)
    (built.path / "tokenizer.model").write_bytes(spm_model_bytes())
    with open_checkpoint(built.path) as ck:
        assert ck.vocabulary.kind == "sentencepiece"
        assert ck.vocabulary.path == built.path / "tokenizer.model"
        assert ck.vocab["▁the"] == ck.vocabulary.tokens.index("▁the")
        assert "tokenizer.model" in ck.file_hashes()
    (built.path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"x": 0}}}))
    with open_checkpoint(built.path) as ck:  # tokenizer.json wins over tokenizer.model
        assert ck.vocabulary.kind == "tokenizer.json" and ck.vocab == {"x": 0}


def test_checkpoint_without_tokenizer_has_no_vocabulary(tmp_path):
    built = make_checkpoint(tmp_path / "m", "llama", Dims(layers=2, hidden=8, mlp=16, heads=2, vocab=12), seed=1)
    with open_checkpoint(built.path) as ck:
        assert ck.vocabulary is None and ck.vocab is None


def test_shared_tokens_recover_a_shuffled_foreign_tokenizer_exactly(tmp_path):
    """A byte-level BPE spelling of the SentencePiece pieces, ids shuffled: the pairing is the shuffle."""
    path = tmp_path / "tokenizer.model"
    path.write_bytes(spm_model_bytes())
    spm = read_sentencepiece(path)
    texts = [t for i, t in enumerate(spm.texts) if t and (i not in spm.byte_fallback or spm.texts.count(t) == 1)]
    assert len(set(texts)) == len(texts) and b"a" in texts and b"\x00" in texts  # 'a' is a piece, 0x00 only a byte
    order = np.random.default_rng(0).permutation(len(texts))
    foreign = {gpt2_spelling(texts[k]): int(j) for j, k in enumerate(order)}
    foreign["Ġzebra"] = len(texts)  # a token the other side lacks
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": foreign, "merges": []},
                                                         "decoder": {"type": "ByteLevel"}}))
    bpe = read_tokenizer_json(tmp_path / "tokenizer.json")
    pairs = shared_tokens(spm, bpe)
    assert len(pairs) == len(texts) and pairs.by == "text"
    for a, b in zip(pairs.ids_a, pairs.ids_b):
        assert spm.texts[a] == bpe.texts[b]
        assert texts[order[b]] == spm.texts[a]
    limited = shared_tokens(spm, bpe, limit_b=10)
    assert sorted(limited.ids_b.tolist()) == list(range(10))


def test_shared_tokens_skip_ambiguous_texts(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({"model": {"vocab": {"▁a": 0, "<0x20>": 1, " ": 2, "b": 3}},
                                "decoder": {"type": "Metaspace"}}))
    one = read_tokenizer_json(path)  # '<0x20>' and ' ' both decode to b' '
    path.write_text(json.dumps({"model": {"vocab": {" ": 0, " a": 1, "b": 2}}}))
    other = read_tokenizer_json(path)
    pairs = shared_tokens(one, other)
    assert pairs.ids_a.tolist() == [2, 0, 3] and pairs.ids_b.tolist() == [0, 1, 2]  # ' ' wins over its byte piece
    path.write_text(json.dumps({"model": {"vocab": {"▁a": 0, "▁": 1, " ": 2, "b": 3}}, "decoder": {"type": "Metaspace"}}))
    pairs = shared_tokens(read_tokenizer_json(path), other)  # '▁' and ' ' are both b' ': ambiguous, dropped
    assert pairs.ids_a.tolist() == [0, 3] and pairs.ids_b.tolist() == [1, 2]
