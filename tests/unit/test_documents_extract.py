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
