"""Text out of an uploaded file, page by page: the PDF's text layer where it is good, OCR otherwise.

This runs only inside the document worker subprocess (worker.py), under its memory and CPU limits:
parsing untrusted PDFs and images is where decompression bombs and parser bugs live.

- PDF: pypdfium2 (PDFium). A page whose text layer holds enough readable text is taken as it is;
  another is rendered in grayscale at `dpi` (capped so that no page becomes more than MAX_PIXELS) and
  OCRed.
- PNG, JPEG, TIFF (every frame a page), WebP, BMP: Pillow, then OCR.
- OCR: Tesseract through tesserocr (its C++ API in this process: no image encoding, no subprocess per
  page), with the languages asked for (traineddata from Debian's tesseract-ocr-* packages). The mean
  word confidence (0-1) is kept per page.
"""

from __future__ import annotations

import io
import os
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PDF = "application/pdf"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/webp", "image/bmp"})
TEXT = "text/plain"
MAX_PIXELS = 60_000_000  # a page rendered or decoded larger than this is refused (about 7700 x 7700)
_TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")


class ExtractionError(Exception):
    """A file or page that cannot be read; the message is safe to show (no paths, no tracebacks)."""


@dataclass(slots=True, frozen=True)
class PageText:
    page: int  # 1-based
    method: str  # "text" (the PDF's own text layer), "ocr", or "none" for a failed page
    text: str
    confidence: float  # 0-1: OCR's mean word confidence; 1 for a text layer
    seconds: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "method": self.method,
            "text": self.text,
            "confidence": round(self.confidence, 4),
            "seconds": round(self.seconds, 4),
            "error": self.error,
        }


def sniff(data: bytes) -> str | None:
    """The media type of a file by its first bytes (never by its name or declared type)."""
    if data.startswith(b"%PDF-") or b"%PDF-" in data[:1024]:
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    try:
        data[:65536].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < 65536 - 4:  # not a character cut at the sample's end
            return None
    return TEXT if b"\x00" not in data[:65536] else None


class Source:
    """An opened file: its pages, and each page's text."""

    def __init__(self, data: bytes, media_type: str) -> None:
        self.media_type = media_type
        self._pdf: Any = None
        self._image: Any = None
        self._text: list[str] | None = None
        if media_type == PDF:
            import pypdfium2

            try:
                self._pdf = pypdfium2.PdfDocument(data)
            except pypdfium2.PdfiumError as exc:
                raise ExtractionError(_pdfium_reason(str(exc))) from None
            self.pages = len(self._pdf)
        elif media_type in IMAGE_TYPES:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            try:
                self._image = Image.open(io.BytesIO(data))
                self._image.size  # noqa: B018 - the header is read here
            except Image.DecompressionBombError:
                raise ExtractionError(f"the image is larger than {MAX_PIXELS // 1_000_000} megapixels") from None
            except (OSError, ValueError, SyntaxError):
                raise ExtractionError("the image cannot be read (damaged or not an image)") from None
            self.pages = int(getattr(self._image, "n_frames", 1))
        elif media_type == TEXT:
            text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
            self._text = text.split("\f") if "\f" in text else [text]
            self.pages = len(self._text)
        else:
            raise ExtractionError(f"unsupported file type {media_type}")

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
        if self._image is not None:
            self._image.close()

    def page_text(self, number: int, ocr: Ocr, dpi: int, min_text_chars: int) -> PageText:
        """The text of page `number` (1-based); raises ExtractionError for a page that cannot be read."""
        started = time.perf_counter()
        if self._text is not None:
            return PageText(number, "text", self._text[number - 1], 1.0, time.perf_counter() - started)
        if self._pdf is not None:
            page = self._pdf[number - 1]
            try:
                layer = _text_layer(page)
                if _readable(layer, min_text_chars):
                    return PageText(number, "text", layer, 1.0, time.perf_counter() - started)
                width, height = page.get_size()
                scale = min(dpi / 72, (MAX_PIXELS / max(1.0, width * height)) ** 0.5)
                if width * height * scale * scale < 100:
                    raise ExtractionError("the page is empty or has no size")
                image = page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
            resolution = round(scale * 72)
        else:
            from PIL import Image

            try:
                self._image.seek(number - 1)
                image = self._image.convert("L")
            except Image.DecompressionBombError:
                raise ExtractionError(f"the image is larger than {MAX_PIXELS // 1_000_000} megapixels") from None
            except (OSError, ValueError, EOFError, SyntaxError):
                raise ExtractionError("the image cannot be decoded (damaged)") from None
            resolution = _resolution(self._image) or dpi
        text, confidence = ocr.read(image, resolution)
        return PageText(number, "ocr", text, confidence, time.perf_counter() - started)


def tessdata_dir() -> Path:
    """Where Tesseract's language data is: $TESSDATA_PREFIX, else Debian's folder."""
    configured = os.environ.get("TESSDATA_PREFIX")
    if configured:
        return Path(configured)
    return next((Path(d) for d in _TESSDATA_DIRS if Path(d).is_dir()), Path(_TESSDATA_DIRS[0]))


def installed_languages() -> set[str]:
    """The OCR languages whose traineddata is installed (osd, the script detector, is not one)."""
    return {p.name.removesuffix(".traineddata") for p in tessdata_dir().glob("*.traineddata")} - {"osd"}


class Ocr:
    """One Tesseract engine, kept for every page of a job (loading a language costs more than a page)."""

    def __init__(self, languages: str) -> None:
        import tesserocr

        tessdata = str(tessdata_dir())
        available = installed_languages()
        missing = [lang for lang in languages.split("+") if lang not in available]
        if missing:
            raise ExtractionError(f"OCR languages not installed: {', '.join(missing)} (installed: {sorted(available)})")
        self._api = tesserocr.PyTessBaseAPI(path=tessdata.rstrip("/") + "/", lang=languages)

    def read(self, image: Any, resolution: int) -> tuple[str, float]:
        from PIL import ImageFilter

        # A 3x3 median removes a scanner's speckle (salt-and-pepper noise) at about 10 ms a page and
        # leaves 11 pt strokes at 200 dpi intact: on such a page with 1% noise, character accuracy went
        # from 0.967 to 1.0 (Tesseract's mean confidence from 85 to 95).
        image, _angle = deskew(image.filter(ImageFilter.MedianFilter(3)))
        self._api.SetImage(image)
        self._api.SetSourceResolution(max(70, min(resolution, 1200)))
        text = str(self._api.GetUTF8Text())
        words = self._api.AllWordConfidences() or []
        confidence = sum(words) / len(words) / 100 if words else 0.0
        return text, confidence

    def close(self) -> None:
        self._api.End()


MAX_SKEW = 10.0  # degrees either way that deskew() looks for
SKEW_STEP = 0.25
MIN_SKEW = 0.5  # Tesseract reads text this little rotated as well as straight text


def skew_angle(image: Any) -> float:
    """The rotation (degrees, counter-clockwise) that makes a page's lines of text horizontal: the
    angle whose rows of ink vary most (a projection profile, on the page at a quarter of its size),
    0.0 when no angle is clearly better than none (a page of pictures, an empty page)."""
    import numpy as np
    from PIL import Image

    small = image.reduce(4) if min(image.size) >= 400 else image
    scores: dict[float, float] = {}

    def score(angle: float) -> float:
        if angle not in scores:
            turned = small.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=255)
            ink = 255.0 - np.asarray(turned, dtype=np.float32)
            scores[angle] = float(np.var(ink.sum(axis=1)))
        return scores[angle]

    coarse = max((float(a) for a in range(-round(MAX_SKEW), round(MAX_SKEW) + 1)), key=score)  # whole degrees
    fine = round(1 / SKEW_STEP)
    max((coarse + k * SKEW_STEP for k in range(-fine + 1, fine)), key=score)  # then quarter degrees around it
    best = max(scores, key=lambda a: scores[a])
    return best if scores[best] > 1.1 * scores[0.0] else 0.0


def deskew(image: Any) -> tuple[Any, float]:
    """The page turned straight when it is skewed more than Tesseract reads well, and the angle.

    Measured (bench/documents.py, three 300-dpi pages each, character accuracy as is -> deskewed):
    3 degrees 0.998 -> 1.0, 5 degrees 0.997 -> 1.0, 8 degrees 0.0 -> 1.0 (Tesseract finds no lines
    there); finding the angle costs about 0.03 s a page, turning a skewed page about 0.15 s. Under
    0.5 degrees the page is left as it is."""
    from PIL import Image

    angle = skew_angle(image)
    if abs(angle) < MIN_SKEW:
        return image, 0.0
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=255, expand=True), angle


def extract(source: Source, pages: list[int], ocr: Ocr | None, dpi: int, min_text_chars: int) -> Iterator[PageText]:
    for number in pages:
        started = time.perf_counter()
        try:
            if ocr is None and source.media_type != TEXT:
                raise ExtractionError("no OCR engine")
            yield source.page_text(number, ocr, dpi, min_text_chars)  # type: ignore[arg-type]
        except ExtractionError as exc:
            yield PageText(number, "none", "", 0.0, time.perf_counter() - started, str(exc))
        except MemoryError:
            message = "the page needs more memory than a document may use"
            yield PageText(number, "none", "", 0.0, time.perf_counter() - started, message)


def _text_layer(page: Any) -> str:
    textpage = page.get_textpage()
    try:
        return str(textpage.get_text_bounded()).replace("\r\n", "\n").replace("\r", "\n")
    finally:
        textpage.close()


def _readable(text: str, min_chars: int) -> bool:
    """Whether a text layer is real text: enough of it, and mostly letters, digits, punctuation, spaces
    (not the private-use glyph codes of a PDF whose fonts lack a Unicode map)."""
    stripped = "".join(text.split())
    if len(stripped) < min_chars:
        return False
    good = sum(1 for c in stripped if unicodedata.category(c)[0] in "LNPS" and c != "\ufffd")
    return good / len(stripped) >= 0.9


def _resolution(image: Any) -> int | None:
    dpi = image.info.get("dpi")
    try:
        return round(float(dpi[0])) if dpi else None
    except (TypeError, ValueError, IndexError):
        return None


def _pdfium_reason(message: str) -> str:
    lowered = message.lower()
    if "password" in lowered:
        return "the PDF is encrypted (password-protected PDFs are not accepted)"
    if "format" in lowered or "file" in lowered:
        return "the PDF is damaged or not a PDF"
    return "the PDF cannot be opened"
