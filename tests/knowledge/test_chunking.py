"""Chunks by estimated tokens, with overlap, never across a heading, each with its heading path."""

from __future__ import annotations

import itertools

import pytest

from apps.knowledge.chunking import TooManyChunks, chunks_make, embedding_input, tokens_estimate
from apps.knowledge.parsing import Parsed, Section, document_parse


def _words(count: int, start: int = 0) -> str:
    return " ".join(f"word{n:05d}" for n in range(start, start + count))


def test_the_estimate_is_one_token_per_three_bytes_rounded_up() -> None:
    assert tokens_estimate("") == 0
    assert tokens_estimate("abc") == 1 and tokens_estimate("abcd") == 2
    assert tokens_estimate("日本語") == 3  # nine bytes: about what the tokenizers give for CJK
    # English averages about four characters a token: the estimate is high, so chunks are never longer.
    english = "The quick brown fox jumps over the lazy dog. " * 20
    assert tokens_estimate(english) > len(english) / 4


def test_chunks_stay_within_the_size_and_overlap_by_about_the_overlap() -> None:
    text = _words(2000)
    chunks = chunks_make(Parsed([Section((), text)]), chunk_tokens=100, overlap_tokens=20, max_chunks=1000)
    assert len(chunks) > 20
    assert all(chunk.token_estimate <= 100 for chunk in chunks)
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for before, after in itertools.pairwise(chunks):
        head = after.text.split()[0]
        carried = before.text[before.text.index(head) :]
        assert after.text.startswith(carried), "the next chunk starts with the end of the one before"
        assert 10 <= tokens_estimate(carried) <= 20
    # Every word is in some chunk, in order.
    seen: list[str] = []
    for chunk in chunks:
        for word in chunk.text.split():
            if not seen or word > seen[-1]:
                seen.append(word)
    assert seen == text.split()


def test_without_overlap_the_chunks_partition_the_text() -> None:
    text = _words(500)
    chunks = chunks_make(Parsed([Section((), text)]), chunk_tokens=64, overlap_tokens=0, max_chunks=1000)
    assert " ".join(chunk.text for chunk in chunks).split() == text.split()


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    paragraphs = [_words(8, start=n * 10) for n in range(12)]
    chunks = chunks_make(
        Parsed([Section((), "\n\n".join(paragraphs))]), chunk_tokens=80, overlap_tokens=0, max_chunks=100
    )
    for chunk in chunks:
        for piece in chunk.text.split("\n\n"):
            assert piece in paragraphs


def test_chunks_never_cross_headings_and_keep_their_path() -> None:
    markdown = f"# Guide\n\n{_words(300)}\n\n## Install\n\n{_words(50, 1000)}\n\n### Linux\n\napt install it\n"
    parsed = document_parse(kind="markdown", content=markdown.encode())
    chunks = chunks_make(parsed, chunk_tokens=100, overlap_tokens=10, max_chunks=100)
    paths = [chunk.heading_path for chunk in chunks]
    assert paths[0] == "Guide" and paths[-1] == "Guide / Install / Linux"
    assert "Guide / Install" in paths
    assert paths == sorted(paths, key=["Guide", "Guide / Install", "Guide / Install / Linux"].index)
    linux = chunks[-1]
    assert linux.text == "apt install it"
    assert (
        embedding_input(text=linux.text, heading_path=linux.heading_path) == "Guide / Install / Linux\n\napt install it"
    )
    assert embedding_input(text="x", heading_path="") == "x"


def test_a_word_longer_than_a_chunk_is_cut() -> None:
    blob = "A" * 3000  # base64, a URL...
    chunks = chunks_make(
        Parsed([Section((), f"before {blob} after")]), chunk_tokens=64, overlap_tokens=0, max_chunks=100
    )
    assert all(chunk.token_estimate <= 64 for chunk in chunks)
    assert "".join(chunk.text.replace(" ", "") for chunk in chunks) == f"before{blob}after"


def test_cjk_text_is_cut_between_sentences() -> None:
    sentence = "これは日本語の文です。"
    chunks = chunks_make(Parsed([Section((), sentence * 40)]), chunk_tokens=64, overlap_tokens=0, max_chunks=100)
    assert all(chunk.token_estimate <= 64 for chunk in chunks) and len(chunks) > 1
    assert "".join(chunk.text for chunk in chunks).replace(" ", "") == sentence * 40


def test_too_many_chunks_is_refused() -> None:
    with pytest.raises(TooManyChunks):
        chunks_make(Parsed([Section((), _words(5000))]), chunk_tokens=64, overlap_tokens=0, max_chunks=10)
