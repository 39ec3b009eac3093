"""Scanned documents made on the spot: text typeset with Pillow onto grayscale pages, degraded like a
scanner would (skew, blur, noise, JPEG), wrapped as an image-only PDF (no text layer) with Pillow."""

from __future__ import annotations

import io
import random
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/noto"))
LETTER_IN = (8.5, 11.0)


def font_path(name: str = "DejaVuSerif.ttf") -> Path:
    for folder in FONT_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"font {name} (Debian's fonts-dejavu-core) is not installed")


def page_image(
    text: str,
    *,
    dpi: int = 200,
    skew_degrees: float = 0.0,
    blur: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    font: Path | None = None,
    chars_per_line: int = 70,
) -> Image.Image:
    """One letter-size page holding `text` (paragraphs separated by blank lines) in 11 pt type."""
    width, height = round(LETTER_IN[0] * dpi), round(LETTER_IN[1] * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    size = round(11 / 72 * dpi)
    face = ImageFont.truetype(str(font or font_path()), size)
    x, y = round(1.0 * dpi), round(1.0 * dpi)
    for paragraph in text.split("\n\n"):
        for line in textwrap.wrap(paragraph, chars_per_line) or [""]:
            draw.text((x, y), line, font=face, fill=0)
            y += round(size * 1.45)
        y += round(size * 0.8)
    if skew_degrees:
        image = image.rotate(skew_degrees, resample=Image.Resampling.BICUBIC, fillcolor=255, expand=False)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if noise:
        rng = random.Random(seed)
        pixels = image.load()
        assert pixels is not None
        for _ in range(int(width * height * noise)):
            px, py = rng.randrange(width), rng.randrange(height)
            pixels[px, py] = rng.choice((0, 255))
    return image


def scanned_pdf(images: list[Image.Image], dpi: int = 200, jpeg_quality: int = 75) -> bytes:
    """An image-only PDF, each page a JPEG as a scanner makes them."""
    jpegs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=jpeg_quality)
        jpegs.append(Image.open(io.BytesIO(buffer.getvalue())))
    out = io.BytesIO()
    jpegs[0].save(out, "PDF", resolution=float(dpi), save_all=True, append_images=jpegs[1:])
    return out.getvalue()
