"""The document worker and its runner: sniffing, text layers, OCR, and the bounds on a bad page."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from moltbot.documents import runner
from moltbot.documents.extract import PDF, TEXT, sniff
from tests.helpers import require_tool
from tests.scans import page_image, scanned_pdf


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%PDF-1.7\n...", PDF),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0....", "image/jpeg"),
        (b"II*\x00....", "image/tiff"),
        ("plain text, ünïcode\n".encode(), TEXT),
        (b"\x00\x01\x02binary", None),
        (b"\xff\xfe\xfa not utf-8", None),
    ],
)
def test_files_are_known_by_their_bytes(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_multi_page_tiff_is_ocred_page_by_page() -> None:
    require_tool("tesseract")
    frames = [page_image(f"This is frame number {n} of the scan.", dpi=150) for n in (1, 2)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:], dpi=(150, 150))
    limits = runner.WorkerLimits()
    assert runner.probe(out.getvalue(), limits) == runner.Probe("image/tiff", 2)
    results = list(runner.extract(out.getvalue(), [1, 2], languages="eng", dpi=300, limits=limits))
    assert [r["page"] for r in results] == [1, 2]
    assert all(f"frame number {r['page']}" in r["text"] and r["method"] == "ocr" for r in results)


def test_a_page_past_its_time_fails_alone() -> None:
    require_tool("tesseract")
    pdf = scanned_pdf([page_image(f"Page {n} text.", dpi=100) for n in (1, 2, 3)], dpi=100)
    limits = runner.WorkerLimits(page_timeout_s=0.001)
    results = list(runner.extract(pdf, [1, 2, 3], languages="eng", dpi=300, limits=limits))
    assert [r["page"] for r in results] == [1, 2, 3]
    assert all(r["method"] == "none" and "took longer than" in r["error"] for r in results)


def test_a_page_that_breaks_the_memory_limit_fails_and_the_next_page_is_read() -> None:
    require_tool("tesseract")
    big = Image.new("L", (7000, 7000), 255)  # 49 megapixels: under the size limit, over 300 MB once OCRed
    small = page_image("The small page after the big one.", dpi=150)
    out = io.BytesIO()
    big.save(out, "TIFF", save_all=True, append_images=[small], compression="tiff_deflate")
    limits = runner.WorkerLimits(memory_bytes=300 << 20)
    results = list(runner.extract(out.getvalue(), [1, 2], languages="eng", dpi=300, limits=limits))
    assert results[0]["method"] == "none" and "memory" in results[0]["error"]
    assert results[1]["method"] == "ocr" and "small page after" in results[1]["text"]


def test_missing_ocr_languages_fail_every_page_clearly() -> None:
    require_tool("tesseract")
    data = png(page_image("x", dpi=72))
    results = list(runner.extract(data, [1], languages="xyz", dpi=300, limits=runner.WorkerLimits()))
    assert results[0]["method"] == "none" and "OCR languages not installed: xyz" in results[0]["error"]


def _bomb_pdf(kind: str) -> bytes:
    """A one-page PDF whose few hundred kilobytes inflate to gigabytes where PDFium reads them: a
    grayscale image XObject of 50,000 x 50,000 pixels, or a page content stream of 1 GiB."""
    import zlib

    import pikepdf

    zeros = zlib.compressobj(9)
    deflated = b"".join(zeros.compress(b"\x00" * (64 << 20)) for _ in range(16)) + zeros.flush()  # 1 GiB
    pdf = pikepdf.new()
    resources = pikepdf.Dictionary()
    if kind == "image":
        image = pdf.make_stream(deflated)
        image.stream_dict = pikepdf.Dictionary(
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=50_000,
            Height=50_000,
            ColorSpace=pikepdf.Name.DeviceGray,
            BitsPerComponent=8,
            Filter=pikepdf.Name.FlateDecode,
        )
        resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
        content = pdf.make_stream(b"q 612 0 0 792 0 0 cm /Im0 Do Q")
    else:
        content = pdf.make_stream(deflated)
        content.stream_dict = pikepdf.Dictionary(Filter=pikepdf.Name.FlateDecode)
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=[0, 0, 612, 792], Resources=resources, Contents=content)
    pdf.pages.append(pikepdf.Page(page))
    out = io.BytesIO()
    pdf.save(out, compress_streams=False)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["image", "content"])
def test_a_pdf_bomb_fails_its_page_within_the_worker_bounds(kind: str) -> None:
    import time

    require_tool("tesseract")
    data = _bomb_pdf(kind)
    assert len(data) < 2 << 20  # the upload is small
    limits = runner.WorkerLimits(memory_bytes=512 << 20, page_timeout_s=60)
    started = time.monotonic()
    assert runner.probe(data, limits).pages == 1
    results = list(runner.extract(data, [1], languages="eng", dpi=300, limits=limits))
    assert time.monotonic() - started < 90
    assert len(results) == 1 and results[0]["page"] == 1
    if kind == "content":  # inflating the page's drawing breaks the memory limit: the page fails alone
        assert results[0]["method"] == "none" and "memory or CPU limit" in results[0]["error"]
    else:  # PDFium decodes the image down to the rendered size, a blank page within the bounds
        assert results[0]["method"] == "ocr" and results[0]["error"] is None


@pytest.mark.parametrize("skew", [0.0, 6.0, -4.0])
def test_a_skewed_scan_is_turned_straight_before_ocr(skew: float) -> None:
    require_tool("tesseract")
    from moltbot.documents.extract import Ocr, skew_angle

    text = "\n\n".join(f"Line {n} of a scanned page that was fed into the scanner at an angle." for n in range(12))
    image = page_image(text, dpi=150, skew_degrees=skew, seed=1)
    assert abs(skew_angle(image) + skew) <= 0.5
    ocr = Ocr("eng")
    try:
        found, confidence = ocr.read(image, 150)
    finally:
        ocr.close()
    assert "Line 11 of a scanned page that was fed into the scanner at an angle." in " ".join(found.split())
    assert confidence > 0.8
