"""Cutting a parsed document into chunks of about `chunk_tokens` tokens, each overlapping the one
before by about `overlap_tokens`, never across a heading, each keeping its heading path.

No tokenizer runs here (none of the providers' tokenizers is available offline), so tokens are
estimated conservatively: one token per three bytes of UTF-8, rounded up. OpenAI's and Anthropic's
tokenizers average about four characters of English per token and about one token per CJK
character (three bytes), so the estimate is high for English (chunks come out ~25 % shorter than
asked, never longer) and about right for CJK. Text that tokenizes worse than one token per three
bytes (long runs of digits or symbols) can exceed the estimate; a chunk is at most 2,000 estimated
tokens, far below the embedding models' 8,191-token input limit even then.

Chunks break at paragraph ends where they can, then at sentence ends, then between words; a word
longer than a chunk (a URL, base64) is cut.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from apps.knowledge.parsing import Parsed

BYTES_PER_TOKEN = 3
MAX_HEADING_PATH_CHARACTERS = 1000
HEADING_SEPARATOR = " / "


class TooManyChunks(Exception):
    """The document would be cut into more chunks than one document may have."""


def tokens_estimate(text: str) -> int:
    """The conservative token estimate of `text` (see the module's docstring)."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


@dataclass(frozen=True)
class ChunkDraft:
    ordinal: int
    text: str
    heading_path: str
    token_estimate: int


def heading_path(headings: tuple[str, ...]) -> str:
    path = HEADING_SEPARATOR.join(heading for heading in headings if heading)
    return path[:MAX_HEADING_PATH_CHARACTERS]


def embedding_input(*, text: str, heading_path: str) -> str:
    """What is embedded for a chunk: its heading path as context, then its text."""
    return f"{heading_path}\n\n{text}" if heading_path else text


_PARAGRAPHS = re.compile(r"\n[ \t]*\n+")
# Sentence ends, the CJK full stop, exclamation and question marks included.
_SENTENCES = re.compile("(?<=[.!?\u3002\uff01\uff1f])\\s+")
_WORDS = re.compile(r"\S+\s*")


def _cut(word: str, budget: int) -> Iterator[str]:
    """A word longer than the budget, in pieces of at most `budget` tokens (whole characters)."""
    piece: list[str] = []
    size = 0
    for char in word:
        width = len(char.encode())
        if piece and size + width > budget * BYTES_PER_TOKEN:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(char)
        size += width
    if piece:
        yield "".join(piece)


def _units(text: str, budget: int) -> Iterator[str]:
    """The text in pieces of at most `budget` tokens, as large as fit: paragraphs, or their
    sentences, or their words. Paragraph pieces end with a blank line, the others with a space."""
    for raw in _PARAGRAPHS.split(text):
        paragraph = raw.strip()
        if not paragraph:
            continue
        if tokens_estimate(paragraph) <= budget:
            yield paragraph + "\n\n"
            continue
        for sentence in _SENTENCES.split(paragraph):
            if tokens_estimate(sentence) <= budget:
                yield sentence + " "
                continue
            for word in _WORDS.findall(sentence):
                if tokens_estimate(word) <= budget:
                    yield word
                else:
                    yield from _cut(word, budget)
        yield "\n\n"


def _tail(text: str, budget: int) -> str:
    """The last words of `text` within `budget` tokens: the overlap carried into the next chunk."""
    if budget <= 0:
        return ""
    words = _WORDS.findall(text)
    taken: list[str] = []
    size = 0
    for word in reversed(words):
        width = len(word.encode())
        if size + width > budget * BYTES_PER_TOKEN:
            break
        taken.append(word)
        size += width
    return "".join(reversed(taken))


def chunks_make(parsed: Parsed, *, chunk_tokens: int, overlap_tokens: int, max_chunks: int) -> list[ChunkDraft]:
    """The document's chunks in order. Raises TooManyChunks past `max_chunks`."""
    if chunk_tokens < 1 or not 0 <= overlap_tokens <= chunk_tokens // 2:
        raise ValueError("the overlap must be at most half the chunk size")
    drafts: list[ChunkDraft] = []

    def emit(text: str, path: str) -> None:
        text = text.strip()
        if not text:
            return
        if len(drafts) >= max_chunks:
            raise TooManyChunks(f"the document makes more than {max_chunks:,} chunks")
        drafts.append(ChunkDraft(len(drafts), text, path, tokens_estimate(text)))

    for section in parsed.sections:
        path = heading_path(section.headings)
        current = ""
        fresh = False  # whether `current` holds more than the overlap carried from the chunk before
        # A unit fits in what is left after the overlap, so every chunk makes progress.
        for unit in _units(section.text, max(1, chunk_tokens - overlap_tokens - 1)):
            if unit == "\n\n":
                if current and not current.endswith("\n\n"):
                    current = current.rstrip() + "\n\n"
                continue
            if fresh and tokens_estimate(current + unit) > chunk_tokens:
                emit(current, path)
                current, fresh = _tail(current.rstrip(), overlap_tokens), False
                if current:
                    current += " "
            current += unit
            fresh = True
        if fresh:
            emit(current, path)
    return drafts
