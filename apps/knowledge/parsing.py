"""What an uploaded file is, and its text.

The type comes from the bytes and an allowlist of extensions, never from the client's content type
alone: a PDF is a PDF by its `%PDF-` header whatever it is called; anything else must be UTF-8 text
without NUL bytes, and its extension (or, without one, the declared type) says whether it is plain
text, Markdown or HTML. `document_sniff` is cheap (it runs at upload, where a refusal is a 400);
`document_parse` does the work (it runs in the ingestion worker, where a refusal fails the document
with `error_class` and a reason). Everything is bounded: pages, characters, nesting.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

DocumentKind = Literal["text", "markdown", "html", "pdf"]

# The canonical content type stored for each kind.
CONTENT_TYPES: dict[DocumentKind, str] = {
    "text": "text/plain",
    "markdown": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
}
EXTENSIONS: dict[str, DocumentKind] = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
# A file without an allowlisted extension is accepted only when it is text and its declared type is one of these.
DECLARED_TYPES: dict[str, DocumentKind] = {
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/html": "html",
    "application/xhtml+xml": "html",
}

# Bounds of what one document may become, whatever the plan's byte limit.
MAX_PDF_PAGES = 2_000
MAX_DOCUMENT_CHARACTERS = 5_000_000
# Headings deeper than this are folded into the deepest level kept.
MAX_HEADING_DEPTH = 6
MAX_HEADING_CHARACTERS = 200


class ParseError(Exception):
    """The file can't be read as what it claims to be. `code` is stable (the document's
    `error_class`, or the API's error code at upload); the text is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Section:
    """A run of text under a heading path (outermost heading first)."""

    headings: tuple[str, ...]
    text: str


@dataclass
class Parsed:
    sections: list[Section] = field(default_factory=list)
    pages: int | None = None

    @property
    def characters(self) -> int:
        return sum(len(section.text) for section in self.sections)


def _extension(filename: str) -> str:
    return os.path.splitext(filename.lower())[1]


def _declared(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def document_sniff(*, filename: str, content_type: str | None, content: bytes) -> DocumentKind:
    """The kind of an uploaded file, or ParseError: `document_empty`, `unsupported_type`,
    `not_utf8_text` (a .txt that is binary or in another encoding)."""
    if not content or not content.strip():
        raise ParseError("document_empty", "the file is empty")
    extension = _extension(filename)
    declared = _declared(content_type)
    if content.lstrip()[:5] == b"%PDF-":
        if extension not in ("", ".pdf") and extension in EXTENSIONS:
            # A PDF named .txt: read it as what it is.
            logger.info("upload %r is a PDF by its content", filename)
        return "pdf"
    if extension == ".pdf" or (not extension and declared == "application/pdf"):
        raise ParseError("broken_pdf", "the file is named or declared a PDF but does not start like one")
    kind = EXTENSIONS.get(extension)
    if kind is None:
        if extension:
            raise ParseError(
                "unsupported_type",
                f"files of type {extension!r} are not supported; upload plain text, Markdown, HTML or PDF",
            )
        kind = DECLARED_TYPES.get(declared)
        if kind is None:
            raise ParseError(
                "unsupported_type",
                "the file has no extension and no supported content type; upload plain text, Markdown, HTML or PDF",
            )
    text_decode(content)
    return kind


_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def text_decode(content: bytes) -> str:
    """UTF-8 text (a BOM dropped), or ParseError `not_utf8_text` for binary data or another encoding."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(
            "not_utf8_text", f"the file is not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8"
        ) from None
    # Control characters other than tab, newlines, form feed and escape: binary data that happens to decode.
    controls = len(_BINARY_CONTROL.findall(text[:100_000]))
    if controls and controls * 100 > min(len(text), 100_000):
        raise ParseError("not_utf8_text", "the file looks binary, not text")
    return text.replace("\x00", "")


def _limit(text: str) -> str:
    if len(text) > MAX_DOCUMENT_CHARACTERS:
        raise ParseError(
            "document_too_long",
            f"the document has more than {MAX_DOCUMENT_CHARACTERS:,} characters of text; split it into smaller files",
        )
    return text


def document_parse(*, kind: str, content: bytes) -> Parsed:
    """The document's text in sections under their headings. Raises ParseError."""
    if kind == "pdf":
        parsed = _pdf(content)
    elif kind == "html":
        parsed = _html(text_decode(content))
    elif kind == "markdown":
        parsed = _markdown(_limit(text_decode(content)))
    elif kind == "text":
        parsed = Parsed(sections=[Section((), _limit(text_decode(content)))])
    else:
        raise ParseError("unsupported_type", f"documents of kind {kind!r} are not supported")
    parsed.sections = [section for section in parsed.sections if section.text.strip()]
    if not parsed.sections:
        raise ParseError("document_empty", "the document has no text")
    _limit("".join(section.text for section in parsed.sections))
    return parsed


# -- Markdown ---------------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _heading(text: str) -> str:
    return " ".join(text.split())[:MAX_HEADING_CHARACTERS]


def _markdown(text: str) -> Parsed:
    """Sections by ATX (`# Title`) and setext (underlined) headings, outside fenced code blocks."""
    sections: list[Section] = []
    path: list[str] = []
    lines: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if lines:
            sections.append(Section(tuple(path), "\n".join(lines).strip("\n")))
            lines.clear()

    def enter(level: int, title: str) -> None:
        flush()
        del path[level - 1 :]
        path.extend([""] * (level - 1 - len(path)))
        path.append(_heading(title))

    for line in text.splitlines():
        opened = _FENCE.match(line)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            lines.append(line)
            continue
        if opened:
            fence = opened.group(1)
            lines.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            enter(len(atx.group(1)), atx.group(2))
            continue
        setext = _SETEXT.match(line)
        if setext and lines and lines[-1].strip() and not lines[-1].startswith(("    ", "\t")):
            title = lines.pop()
            enter(1 if setext.group(1)[0] == "=" else 2, title)
            continue
        lines.append(line)
    flush()
    return Parsed(sections=[Section(tuple(h for h in s.headings if h), s.text) for s in sections])


# -- HTML -------------------------------------------------------------------------------------------

_DROPPED = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "canvas", "head")
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = frozenset(
    (
        *("p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "li", "ul", "ol"),
        *("dl", "dt", "dd", "table", "tr", "thead", "tbody", "tfoot", "blockquote", "pre", "figure"),
        *("figcaption", "address", "br", "hr", "form", "fieldset", "details", "summary"),
    )
)


def _html(text: str) -> Parsed:
    """Text of the HTML body by lxml's HTML parser (the libxml2 parser, lenient with broken markup),
    scripts, styles and other non-text elements dropped; sections by <h1>-<h6>."""
    import lxml.etree
    import lxml.html

    if not text.strip():
        raise ParseError("document_empty", "the document has no text")
    try:
        root = lxml.html.document_fromstring(text.encode(), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ParseError("broken_html", f"the HTML could not be read: {exc}") from None
    for element in list(root.iter(*_DROPPED, lxml.etree.Comment, lxml.etree.ProcessingInstruction)):
        if element.getparent() is not None:
            element.drop_tree()  # the text after it (its tail) stays
    sections: list[Section] = []
    path: list[str] = []
    parts: list[str] = []

    def flush() -> None:
        body = re.sub(r"[ \t\r\f\v]+", " ", "".join(parts))
        body = re.sub(r" *\n[ \n]*", "\n\n", body).strip()
        if body:
            sections.append(Section(tuple(path), body))
        parts.clear()

    def walk(element: lxml.html.HtmlElement) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        level = _HEADINGS.get(tag.lower())
        if level is not None:
            flush()
            del path[level - 1 :]
            path.extend([""] * (level - 1 - len(path)))
            path.append(_heading(element.text_content()))
        else:
            block = tag.lower() in _BLOCKS
            if block:
                parts.append("\n")
            if element.text:
                parts.append(element.text)
            for child in element:
                walk(child)
            if block:
                parts.append("\n")
        if element.tail:
            parts.append(element.tail)

    body = root.find("body")
    try:
        walk(body if body is not None else root)
    except RecursionError:
        raise ParseError("broken_html", "the HTML is nested too deeply to read") from None
    flush()
    return Parsed(sections=[Section(tuple(h for h in s.headings if h), s.text) for s in sections])


# -- PDF --------------------------------------------------------------------------------------------


def _pdf(content: bytes) -> Parsed:
    """Text of each page by pypdf; an encrypted, broken or text-less PDF is refused with its reason."""
    import pypdf
    from pypdf.errors import PdfReadError, PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            raise ParseError("encrypted_pdf", "the PDF is encrypted (password-protected); upload it without a password")
        pages = len(reader.pages)
    except ParseError:
        raise
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise ParseError("broken_pdf", f"the PDF could not be read ({type(exc).__name__}); it may be damaged") from None
    except RecursionError:
        raise ParseError("broken_pdf", "the PDF's structure is nested too deeply to read") from None
    if pages == 0:
        raise ParseError("broken_pdf", "the PDF has no pages")
    if pages > MAX_PDF_PAGES:
        raise ParseError("document_too_long", f"the PDF has {pages:,} pages; at most {MAX_PDF_PAGES:,} are read")
    sections: list[Section] = []
    characters = 0
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except RecursionError:
            raise ParseError("broken_pdf", f"page {number} of the PDF is nested too deeply to read") from None
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types on damaged content streams
            raise ParseError(
                "broken_pdf", f"page {number} of the PDF could not be read ({type(exc).__name__}); it may be damaged"
            ) from None
        text = text.replace("\x00", "")
        characters += len(text)
        if characters > MAX_DOCUMENT_CHARACTERS:
            _limit("x" * characters)
        if text.strip():
            sections.append(Section((f"Page {number}",), text))
    if not sections:
        raise ParseError(
            "document_empty", "the PDF has no extractable text (a scanned PDF needs OCR, which is not supported)"
        )
    return Parsed(sections=sections, pages=pages)
