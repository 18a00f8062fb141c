"""Tokenizer: the default SentencePiece model, document framing, batch encoding, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gauntlet_jax.data import tokenizer as tokenizer_module
from gauntlet_jax.data.tokenizer import default_tokenizer_path, file_sha256, load_tokenizer
from gauntlet_jax.errors import DataError

TEXTS = [
    "To be, or not to be, that is the question:",
    "Hello  world\n\nTwo blank-line separated\tparagraphs.",
    " leading space and trailing newline\n",
    "Ünïcödé — “quotes”, 数字 and emoji 🎭",
    "x",
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_default_is_the_32k_sentencepiece_model_from_mistral_common(tok):
    assert tok.vocab_size == 32000
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.name == "tokenizer.model.v1"
    assert tok.sha256 == file_sha256(default_tokenizer_path())
    assert len(tok.sha256) == 64


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.bos_id not in ids and tok.eos_id not in ids
    assert tok.decode(ids) == text


def test_document_is_bos_tokens_eos(tok):
    text = TEXTS[0]
    assert tok.encode_document(text) == [1, *tok.encode(text), 2]
    # Special tokens are dropped on decode.
    assert tok.decode(tok.encode_document(text)) == text


def test_batch_encoding_matches_one_by_one(tok):
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    assert tok.encode_documents(TEXTS) == [tok.encode_document(t) for t in TEXTS]


def test_explicit_path_loads_that_model(tok):
    other = default_tokenizer_path().parent / "mistral_instruct_tokenizer_240216.model.v2"
    loaded = load_tokenizer(str(other))
    assert loaded.sha256 != tok.sha256
    assert loaded.name == other.name
    assert loaded.decode(loaded.encode("a midsummer night")) == "a midsummer night"


def test_missing_file_says_how_to_get_one(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*pip install mistral-common"):
        load_tokenizer(str(tmp_path / "nope.model"))


def test_missing_package_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "DEFAULT_TOKENIZER_PACKAGE", "no_such_package_gj")
    with pytest.raises(DataError, match=r"pip install mistral-common"):
        load_tokenizer()


def test_garbage_model_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(DataError, match="not a valid SentencePiece model"):
        load_tokenizer(str(bad))


def test_tokenizer_json_without_the_tokenizers_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # None in sys.modules makes `import tokenizers` fail as if it were not installed (the [dev]
    # extra installs it, so CI runs both this and the test below).
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    path = tmp_path / "tokenizer.json"
    path.write_text("{}")
    with pytest.raises(DataError, match=r"needs the `tokenizers` package"):
        load_tokenizer(str(path))


def test_tokenizer_json_when_the_tokenizers_package_is_installed(tmp_path: Path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator(["to be or not to be that is the question"] * 50, trainer)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    broken = tmp_path / "broken" / "tokenizer.json"
    broken.parent.mkdir()
    broken.write_text("{}")
    with pytest.raises(DataError, match=r"not a valid tokenizer.json"):
        load_tokenizer(str(broken))

    tok = load_tokenizer(str(path))
    text = "to be, or not to be!"
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.encode_document(text) == [1, *tok.encode(text), 2]
    assert tok.decode(tok.encode_document(text)) == text
    assert tok.encode_documents([text, "x"]) == [
        tok.encode_document(text),
        tok.encode_document("x"),
    ]
    assert tok.sha256 == file_sha256(path)
