"""What an uploaded file is and what text it holds: every kind, and every broken kind."""

from __future__ import annotations

import pytest

from apps.knowledge.parsing import MAX_DOCUMENT_CHARACTERS, ParseError, document_parse, document_sniff
from tests.knowledge.pdfs import PDF_GARBAGE, pdf_encrypted, pdf_make, pdf_truncated


def _sniff(filename: str, content: bytes, content_type: str | None = None) -> str:
    return document_sniff(filename=filename, content_type=content_type, content=content)


def _refused(kind: str, content: bytes) -> ParseError:
    with pytest.raises(ParseError) as refused:
        document_parse(kind=kind, content=content)
    return refused.value


def test_kinds_come_from_the_bytes_and_the_extension_not_the_declared_type() -> None:
    assert _sniff("a.md", b"# Hi", "application/pdf") == "markdown"
    assert _sniff("a.HTML", b"<p>x</p>", "text/plain") == "html"
    assert _sniff("a.txt", b"hello", "text/html") == "text"
    assert _sniff("scan.txt", pdf_make(["x"]), "text/plain") == "pdf"
    assert _sniff("noext", b"<h1>x</h1>", "text/html; charset=utf-8") == "html"
    assert _sniff("a.txt", "\ufeffUTF-8 with a BOM, ünïcödé".encode()) == "text"


@pytest.mark.parametrize(
    ("filename", "content", "content_type", "code"),
    [
        ("empty.txt", b"", None, "document_empty"),
        ("blank.md", b"\n\n   \n", None, "document_empty"),
        ("data.csv", b"a,b\n1,2\n", "text/csv", "unsupported_type"),
        ("photo.png", b"\x89PNG\r\n\x1a\n", "image/png", "unsupported_type"),
        ("archive", b"PK\x03\x04", "application/zip", "unsupported_type"),
        ("binary.txt", bytes(range(256)) * 16, "text/plain", "not_utf8_text"),
        ("controls.txt", b"\x01\x02\x03\x04\x05abc" * 50, "text/plain", "not_utf8_text"),
        ("windows.txt", "naïve résumé".encode("cp1252"), "text/plain", "not_utf8_text"),
        ("utf16.md", "# Title".encode("utf-16"), "text/markdown", "not_utf8_text"),
        ("not.pdf", b"hello", "application/pdf", "broken_pdf"),
    ],
)
def test_what_is_refused_at_upload(filename: str, content: bytes, content_type: str | None, code: str) -> None:
    with pytest.raises(ParseError) as refused:
        _sniff(filename, content, content_type)
    assert refused.value.code == code and str(refused.value)


def test_plain_text_is_one_section_without_headings() -> None:
    # A stray NUL in otherwise plain text is dropped (a few control characters don't make a file binary).
    body = b"line one\n\n" + b"line two " * 20
    parsed = document_parse(kind="text", content=body + b"\x00")
    assert [(s.headings, s.text) for s in parsed.sections] == [((), body.decode())]


def test_markdown_sections_follow_the_heading_path_outside_code_fences() -> None:
    text = """Intro before any heading.

# Guide
Welcome.

## Install
Run it.

```
# not a heading: a comment in code
```

### Linux
apt install.

## Usage
Use it.

Setext title
============
Under setext.
"""
    parsed = document_parse(kind="markdown", content=text.encode())
    found = [(s.headings, s.text.splitlines()[0]) for s in parsed.sections]
    assert found == [
        ((), "Intro before any heading."),
        (("Guide",), "Welcome."),
        (("Guide", "Install"), "Run it."),
        (("Guide", "Install", "Linux"), "apt install."),
        (("Guide", "Usage"), "Use it."),
        (("Setext title",), "Under setext."),
    ]
    install = next(s for s in parsed.sections if s.headings == ("Guide", "Install"))
    assert "# not a heading" in install.text


def test_html_drops_scripts_styles_and_comments_and_keeps_headings() -> None:
    html = b"""<!doctype html><html><head><title>T</title><style>p{color:red}</style>
    <script>var secret = "do not index";</script></head>
    <body><h1>Manual</h1><p>First <b>bold</b> paragraph.</p><!-- hidden comment -->
    <noscript>enable js</noscript><script>alert(1)</script>after script
    <h2>Part &amp; two</h2><ul><li>one</li><li>two</li></ul><template><p>never</p></template>
    <h1>Other</h1><div>Last</div></body></html>"""
    parsed = document_parse(kind="html", content=html)
    sections = {s.headings: s.text for s in parsed.sections}
    assert set(sections) == {("Manual",), ("Manual", "Part & two"), ("Other",)}
    assert "First bold paragraph." in sections[("Manual",)] and "after script" in sections[("Manual",)]
    whole = " ".join(sections.values())
    for hidden in ("secret", "color:red", "hidden comment", "enable js", "alert", "never", "T\n"):
        assert hidden not in whole
    assert "one" in sections[("Manual", "Part & two")] and "two" in sections[("Manual", "Part & two")]


def test_broken_html_is_read_leniently_and_html_without_text_is_empty() -> None:
    parsed = document_parse(kind="html", content=b"<div><p>unclosed <b>tags <h2>Head</div> tail")
    assert "unclosed" in parsed.sections[0].text
    assert _refused("html", b"<html><script>x()</script><style>a{}</style></html>").code == "document_empty"


def test_pdf_text_by_page() -> None:
    parsed = document_parse(kind="pdf", content=pdf_make(["Hello PDF world\nsecond line", "Page two text"]))
    assert parsed.pages == 2
    assert [(s.headings, s.text) for s in parsed.sections] == [
        (("Page 1",), "Hello PDF world\nsecond line"),
        (("Page 2",), "Page two text"),
    ]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (pdf_encrypted(["secret text"]), "encrypted_pdf"),
        (PDF_GARBAGE, "broken_pdf"),
        (pdf_truncated(), "broken_pdf"),
        (b"%PDF-1.4\n%%EOF\n", "broken_pdf"),
        (pdf_make([""]), "document_empty"),  # pages without text: a scan
    ],
)
def test_broken_pdfs_are_refused_with_their_reason(content: bytes, code: str) -> None:
    refused = _refused("pdf", content)
    assert refused.code == code, str(refused)


def test_text_beyond_the_character_bound_is_refused() -> None:
    assert _refused("text", b"a" * (MAX_DOCUMENT_CHARACTERS + 1)).code == "document_too_long"
    assert _refused("markdown", b"# x\n" + b"b" * (MAX_DOCUMENT_CHARACTERS + 1)).code == "document_too_long"
