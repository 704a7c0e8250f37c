"""Small PDFs built by hand for the knowledge tests: a text PDF (one Helvetica text line per line of
each page), the same encrypted by pypdf, and broken ones."""

from __future__ import annotations

import io

import pypdf


def pdf_make(pages: list[str]) -> bytes:
    """A valid PDF whose pages hold these texts (one line per line)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        lines = []
        for number, line in enumerate(text.split("\n")):
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            lines.append(f"BT /F1 12 Tf 72 {700 - 16 * number} Td ({escaped}) Tj ET")
        stream = "\n".join(lines).encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def pdf_encrypted(pages: list[str], password: str = "secret") -> bytes:  # noqa: S107
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf_make(pages)))
    writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# A header and nothing a reader can use; a valid file cut off in the middle.
PDF_GARBAGE = b"%PDF-1.7\n" + bytes(range(256)) * 8


def pdf_truncated() -> bytes:
    whole = pdf_make(["Some text that will be cut"])
    return whole[: len(whole) // 3]
