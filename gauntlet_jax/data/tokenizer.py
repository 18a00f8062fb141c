"""Tokenizers: SentencePiece (the default, LLaMA-style 32k vocabulary) or a Hugging Face
`tokenizer.json` when the `tokenizers` package happens to be installed.

The offline default is the Mistral 7B v0.1 SentencePiece model shipped inside the
`mistral-common` wheel (`data/tokenizer.model.v1`, Apache-2.0): 32,000 pieces, BOS 1, EOS 2, the
same shape as the LLaMA-2 tokenizer of the paper's run (GAUNTLET.md §8.1).

Documents are encoded as BOS + tokens + EOS: the reference's LLaMA tokenizer prepends BOS and its
loader appends EOS after each document (GAUNTLET.md §4.1).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gauntlet_jax.errors import DataError

DEFAULT_TOKENIZER_PACKAGE = "mistral_common"
DEFAULT_TOKENIZER_RESOURCE = "data/tokenizer.model.v1"

_HOW_TO_GET_ONE = (
    "install the default one with `pip install mistral-common` (it ships "
    f"{DEFAULT_TOKENIZER_RESOURCE}), or set data.tokenizer to a SentencePiece .model path"
)

# Special-token spellings tried, in order, when a tokenizer.json does not say which are BOS/EOS.
_HF_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>")
_HF_EOS_NAMES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>")


class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    vocab_size: int
    bos_id: int
    eos_id: int
    # A stable identity: a short name and the SHA-256 of the model file's bytes.
    name: str
    sha256: str

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS or EOS."""
        ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts at once (one native call; much faster than a Python loop)."""
        ...

    def encode_document(self, text: str) -> list[int]:
        """BOS + tokens + EOS: one document as the corpus stores it."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode_document` over many texts at once."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens dropped)."""
        ...


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_tokenizer_path() -> Path:
    """Location of the SentencePiece model inside the installed mistral-common wheel."""
    try:
        root = importlib.resources.files(DEFAULT_TOKENIZER_PACKAGE)
    except ModuleNotFoundError as exc:
        raise DataError(
            f"the default tokenizer needs the {DEFAULT_TOKENIZER_PACKAGE!r} package: {_HOW_TO_GET_ONE}"
        ) from exc
    path = Path(str(root.joinpath(DEFAULT_TOKENIZER_RESOURCE)))
    if not path.is_file():
        raise DataError(
            f"{DEFAULT_TOKENIZER_PACKAGE} is installed but has no {DEFAULT_TOKENIZER_RESOURCE} "
            f"(looked at {path}): {_HOW_TO_GET_ONE}"
        )
    return path


def resolve_tokenizer_path(path: str = "") -> Path:
    """The configured tokenizer file (`~` expanded), or the default one when `path` is empty."""
    if not path:
        return default_tokenizer_path()
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise DataError(f"tokenizer file {path!r} does not exist: {_HOW_TO_GET_ONE}")
    return resolved


@dataclass(frozen=True)
class SentencePieceTokenizer:
    """A SentencePiece model. BOS/EOS come from the model itself."""

    path: Path
    sha256: str
    _sp: Any = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(list(texts))]

    def encode_document(self, text: str) -> list[int]:
        return [self.bos_id, *self._sp.encode(text), self.eos_id]

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        bos, eos = self.bos_id, self.eos_id
        return [[bos, *ids, eos] for ids in self._sp.encode(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.decode([int(i) for i in ids]))


@dataclass(frozen=True)
class HuggingFaceTokenizer:
    """A `tokenizer.json` read by the `tokenizers` package (used only when already installed)."""

    path: Path
    sha256: str
    bos_id: int
    eos_id: int
    _tok: Any = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def encode_document(self, text: str) -> list[int]:
        return [self.bos_id, *self.encode(text), self.eos_id]

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        return [[self.bos_id, *ids, self.eos_id] for ids in self.encode_batch(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True))


def _special_id(tok: Any, names: Sequence[str], role: str, path: Path) -> int:
    for name in names:
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return int(token_id)
    raise DataError(f"tokenizer {path} has no {role} token (looked for {', '.join(names)})")


def _load_huggingface(path: Path, sha256: str) -> HuggingFaceTokenizer:
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ModuleNotFoundError as exc:
        raise DataError(
            f"tokenizer {path} is a Hugging Face tokenizer.json, which needs the `tokenizers` "
            "package (not a dependency of gauntlet-jax: `pip install tokenizers`), or set "
            "data.tokenizer to a SentencePiece .model file"
        ) from exc
    try:
        tok = HFTokenizer.from_file(str(path))
    except Exception as exc:  # the Rust binding raises a bare Exception; re-raised typed
        raise DataError(f"tokenizer {path} is not a valid tokenizer.json: {exc}") from exc
    return HuggingFaceTokenizer(
        path=path,
        sha256=sha256,
        bos_id=_special_id(tok, _HF_BOS_NAMES, "BOS", path),
        eos_id=_special_id(tok, _HF_EOS_NAMES, "EOS", path),
        _tok=tok,
    )


def _load_sentencepiece(path: Path, sha256: str) -> SentencePieceTokenizer:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise DataError(f"tokenizer {path} is not a valid SentencePiece model: {exc}") from exc
    if sp.bos_id() < 0 or sp.eos_id() < 0:
        raise DataError(
            f"tokenizer {path} defines no BOS/EOS (bos={sp.bos_id()}, eos={sp.eos_id()}); "
            "documents need both"
        )
    return SentencePieceTokenizer(path=path, sha256=sha256, _sp=sp)


def load_tokenizer(path: str = "") -> Tokenizer:
    """Loads the tokenizer at `path` (a SentencePiece `.model` or a `tokenizer.json`), or the
    default SentencePiece model from mistral-common when `path` is empty."""
    resolved = resolve_tokenizer_path(path)
    sha256 = file_sha256(resolved)
    if resolved.suffix == ".json":
        return _load_huggingface(resolved, sha256)
    return _load_sentencepiece(resolved, sha256)
