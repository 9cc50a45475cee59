"""The printed certificate: a one-page PDF made with fpdf2, read back with pypdf.

The page shows what the credential states (the learner's name in any script, the course, the
score, the date, the issuer) and a QR code holding a short verification string: the credential's
id and the SHA-256 digest of its VC-JWT. The signed VC-JWT itself travels inside the PDF as an
embedded file (``credential.jwt``). :func:`read_pdf` hands back the embedded token, the text on the
page and the QR code's picture, and :func:`check_pdf` compares the page with the verified
credential, so an edited name, score or date, extra text, or another learner's QR code is caught.

Fonts: DejaVu Sans (shipped with matplotlib) for Latin, Vietnamese, Greek and Cyrillic, Noto Sans
Arabic and Noto Sans Devanagari (PyPI packages), and for Chinese, Japanese and Korean the first
of ``LABKIT_CERT_FONTS`` (extra TrueType files, separated by ``os.pathsep``) or a system CJK font
(Debian's ``fonts-droid-fallback``). Text is shaped by HarfBuzz, so Arabic joins and Devanagari
reorders as it should.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from labkit.course.credentials.errors import CredentialError
from labkit.course.credentials.model import Statement

__all__ = ["PdfContents", "check_pdf", "fonts", "page_lines", "qr_text", "read_pdf", "write_pdf"]

ATTACHMENT = "credential.jwt"
FONTS_ENV = "LABKIT_CERT_FONTS"
_SYSTEM_FALLBACKS = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/simsun.ttf",
)


@cache
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


def fonts() -> list[tuple[str, Path]]:
    """The fonts the certificate uses, main font first: (family, file)."""
    import fontpkg_noto_sans_arabic
    import fontpkg_noto_sans_devanagari
    import matplotlib

    found = [("DejaVuSans", Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")]
    for i, pkg in enumerate((fontpkg_noto_sans_arabic, fontpkg_noto_sans_devanagari)):
        found += [(f"Noto{i}", p) for p in sorted((Path(pkg.ROOT) / "files").glob("*.ttf"))[:1]]
    extra = [p for p in os.environ.get(FONTS_ENV, "").split(os.pathsep) if p]
    for i, name in enumerate([*extra, *_SYSTEM_FALLBACKS]):
        if Path(name).is_file() and Path(name).suffix.lower() in (".ttf", ".otf"):
            found.append((f"Extra{i}", Path(name)))
    return found


def _missing(text: str) -> list[str]:
    covered = frozenset().union(*(_cmap(str(p)) for _, p in fonts()))
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) not in covered})


def qr_text(credential_id: str, token: str) -> str:
    """The QR code's content: the credential's id and the SHA-256 of its VC-JWT (base64url)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(token.strip().encode()).digest()).decode().rstrip("=")
    return f"{credential_id} sha256:{digest}"


def page_lines(st: Statement, qr: str) -> list[str]:
    """Every line of text on the certificate page, in order."""
    return [
        "Certificate of completion",
        st.title,
        "awarded to",
        st.learner,
        f"for completing the course {st.course} (version {st.version})",
        f"with an overall score of {st.score}%",
        f"Issued by {st.issuer} on {st.date}",
        "Open Badges 3.0 credential signed with Ed25519, embedded in this PDF.",
        "Verify: labkit verify THIS.pdf --issuer ISSUER_PUBLIC_KEY",
        qr,
    ]


def _qr_image(text: str) -> Any:
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=2)
    qr.add_data(text)
    qr.make(fit=True)
    return qr.make_image(fill_color="black", back_color="white").get_image().convert("L")


def write_pdf(st: Statement, token: str, path: str | Path, *, qr_picture: str | None = None) -> Path:
    """Draw the certificate of ``st`` (the statement of the credential ``token``) as an A4 PDF.

    ``qr_picture`` overrides what the QR code's picture holds (tests draw forgeries with it).
    """
    from fpdf import FPDF

    code = qr_text(st.credential_id, token)
    lines = page_lines(st, code)
    missing = _missing("".join(lines))
    if missing:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in missing[:5])
        raise CredentialError(
            f"no font has {shown} for {st.learner!r}: install a font that covers it (Debian: "
            f"fonts-droid-fallback for Chinese, Japanese, Korean) or set {FONTS_ENV} to a TrueType file"
        )
    logging.getLogger("fpdf").setLevel(logging.ERROR)
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_title(f"{st.title}: certificate of completion")
    pdf.set_author(st.issuer)
    pdf.set_subject(f"Open Badges 3.0 credential {st.credential_id}")
    families = fonts()
    for family, file in families:
        pdf.add_font(family, fname=str(file))
    pdf.set_fallback_fonts([f for f, _ in families[1:]], exact_match=False)
    pdf.set_text_shaping(True)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_draw_color(31, 78, 121)
    pdf.set_line_width(1.2)
    pdf.rect(8, 8, 281, 194)
    layout = [
        (26, 28),
        (44, 20),
        (60, 13),
        (72, 28),
        (92, 13),
        (102, 13),
        (114, 12),
        (160, 9),
        (167, 9),
        (185, 7),
    ]
    for (y, size), text in zip(layout, lines, strict=True):
        width = 200 if y >= 160 else 260
        pdf.set_font("DejaVuSans", size=size)
        while size > 6 and pdf.get_string_width(text) > width:
            size -= 1
            pdf.set_font("DejaVuSans", size=size)
        x = 20 if y >= 160 else 18.5
        pdf.set_xy(x, y)
        pdf.cell(width, 10, text, align="L" if y >= 160 else "C")
    pdf.image(_qr_image(qr_picture or code), x=236, y=140, w=45, h=45)
    pdf.embed_file(
        basename=ATTACHMENT,
        bytes=token.strip().encode(),
        desc="The Open Badges 3.0 credential (VC-JWT, EdDSA) this certificate prints",
        compress=False,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


@dataclass
class PdfContents:
    """What a certificate PDF holds: the embedded token, the text on the page, the QR picture."""

    token: str
    lines: list[str]
    qr_image: Any  # PIL image, or None when the page has no picture


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc")
    return " ".join(text.split())


def read_pdf(path: str | Path) -> PdfContents:
    """Read a certificate PDF with pypdf; :class:`CredentialError` when it is not one."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(str(path))
        attachments = reader.attachments
        pages = list(reader.pages)
    except (OSError, PdfReadError, ValueError) as err:
        raise CredentialError(f"{path} is not a readable PDF ({err})") from None
    if ATTACHMENT not in attachments:
        raise CredentialError(
            f"{path} carries no embedded credential ({ATTACHMENT}): not a labkit Open Badges certificate"
        )
    if len(pages) != 1:
        raise CredentialError(f"{path} has {len(pages)} pages; a labkit certificate has one")
    token = attachments[ATTACHMENT][0].decode("ascii", errors="replace").strip()
    lines = [c for c in (_clean(t) for t in pages[0].extract_text().splitlines()) if c]
    images = list(pages[0].images)
    picture = images[0].image if len(images) == 1 else None
    return PdfContents(token=token, lines=lines, qr_image=picture)


def check_pdf(contents: PdfContents, st: Statement) -> str | None:
    """``None`` when the page shows exactly what the verified credential states, else why not."""
    expected = [_clean(t) for t in page_lines(st, qr_text(st.credential_id, contents.token))]
    fields = {
        3: "the learner's name",
        1: "the course title",
        4: "the course and version",
        5: "the score",
        6: "the issuer and date",
        9: "the verification string",
    }
    shown = Counter(contents.lines)
    want = Counter(expected)
    for i, line in enumerate(expected):
        if shown[line] < want[line]:
            extra = list((shown - want).elements())
            field = fields.get(i, "the text")
            return (
                f"the page does not show {field} as the credential states it ({line!r}); "
                f"the page shows {', '.join(repr(e) for e in extra[:3]) or 'nothing in its place'} "
                "(edited PDF)"
            )
    extra = list((shown - want).elements())
    if extra:
        return f"the page shows text the credential does not state: {', '.join(repr(e) for e in extra[:3])}"
    if contents.qr_image is None:
        return "the page's QR code is missing or there are other pictures on the page"
    got = contents.qr_image.convert("L")
    ref = _qr_image(qr_text(st.credential_id, contents.token))
    if got.size != ref.size:
        ref = ref.resize(got.size)
    if got.tobytes() != ref.tobytes():
        return "the QR code is not this credential's (it was swapped for another one)"
    return None
