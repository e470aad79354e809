"""Images: 8-bit colour and 16-bit single-channel PNGs (depth, labels), with errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ppkt.data.io.files import not_a_file
from ppkt.errors import DataError


def _open_image(path: Path, what: str) -> Image.Image:
    problem = not_a_file(path, f"{what} image")
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    img: Image.Image | None = None
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if img is not None:  # a truncated file fails in load(): close it now, not at garbage collection
            img.close()
        raise DataError(f"{path}: corrupt or unreadable {what} image ({e})") from e
    return img


def read_color(path: Path) -> np.ndarray:
    """Read an 8-bit colour image as uint8 ``[H, W, 3]`` (grey/palette/RGBA are converted)."""
    img = _open_image(path, "color")
    if img.mode not in ("RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr"):
        raise DataError(f"{path}: color image must be 8-bit RGB, got PIL mode {img.mode!r}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def read_uint16(path: Path, what: str) -> np.ndarray:
    """Read a single-channel 16-bit (or 8-bit, for labels) PNG as a uint16 ``[H, W]`` array."""
    img = _open_image(path, what)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img).astype(np.uint16)
    if img.mode == "I":  # some writers store 16-bit PNGs that PIL opens as 32-bit
        a = np.asarray(img)
        if a.min() >= 0 and a.max() <= np.iinfo(np.uint16).max:
            return a.astype(np.uint16)
        raise DataError(f"{path}: {what} image values exceed the uint16 range")
    if what != "depth" and img.mode in ("L", "P"):
        return np.asarray(img).astype(np.uint16)
    raise DataError(f"{path}: {what} image must be single-channel uint16, got PIL mode {img.mode!r}")
