"""Pixels: decode one image file to the target mode and size, and resize/recolour array stacks.

Every image path in the toolkit goes through these helpers, so a 16-bit PNG, a palette GIF-style
PNG, a CMYK JPEG and an 8x8 digit all come out the same way: float32, raw 0..255 (or the
source's own range for arrays), shape (H, W, C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

ColorMode = Literal["grayscale", "rgb"]

# PIL modes that carry a single intensity channel (alpha aside).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_BACKGROUND = 255  # transparent pixels are composited onto white


def channels(color_mode: ColorMode) -> int:
    return 1 if color_mode == "grayscale" else 3


def to_8bit(image: Image.Image, color_mode: ColorMode) -> Image.Image:
    """Any PIL image -> an 8-bit 'L' or 'RGB' image.

    Transparent pixels (RGBA, LA, palette with transparency) are composited onto white, the
    usual look of a transparent icon or scan; 16-bit grayscale is scaled by 1/257 so 65535 maps
    to 255; CMYK and other modes go through PIL's own RGB conversion.
    """
    from PIL import Image

    mode = image.mode
    if mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        if mode != "F":  # 16-bit (or 32-bit int holding 16-bit) samples
            values = values / 257.0
        image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    elif mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "PA"):
        image = image.convert("LA" if mode == "PA" else "L")

    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (_BACKGROUND,) * 3 + (255,))
        image = Image.alpha_composite(background, rgba).convert("RGB")

    target = "L" if color_mode == "grayscale" else "RGB"
    return image if image.mode == target else image.convert(target)


def decode_image(path: str, color_mode: ColorMode, size: tuple[int, int]) -> np.ndarray:
    """Read one file -> float32 (H, W, C) raw 0..255, resized bilinearly to size=(H, W)."""
    from PIL import Image

    height, width = size
    with Image.open(path) as image:
        image.draft("RGB" if color_mode == "rgb" else "L", (width, height))  # JPEG: decode smaller
        image = to_8bit(image, color_mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32)
    return array.reshape(height, width, channels(color_mode))


def resize_stack(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize (N, H, W, C) arrays bilinearly to size=(H, W), keeping the value range.

    Works on float values (PIL mode 'F'), so digits stay 0..16 and nothing is quantized.
    """
    from PIL import Image

    if size is None or tuple(x.shape[1:3]) == tuple(size):
        return x.astype(np.float32)
    height, width = (int(s) for s in size)
    out = np.empty((len(x), height, width, x.shape[3]), dtype=np.float32)
    for i, sample in enumerate(x.astype(np.float32)):
        for c in range(x.shape[3]):
            plane = Image.fromarray(np.ascontiguousarray(sample[:, :, c]))  # mode F
            out[i, :, :, c] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    lo, hi = float(x.min()), float(x.max())
    return np.clip(out, lo, hi)


def recolor_stack(x: np.ndarray, color_mode: ColorMode | None) -> np.ndarray:
    """Match an (N, H, W, C) stack to the requested colour mode (None: keep it)."""
    if color_mode is None:
        return x
    if color_mode == "rgb" and x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if color_mode == "grayscale" and x.shape[-1] in (3, 4):
        luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's "L"
        return (x[..., :3].astype(np.float32) @ luma)[..., None]
    return x


def prepare_stack(
    x: np.ndarray, size: tuple[int, int] | None, color_mode: ColorMode | None
) -> np.ndarray:
    """Resize then recolour an in-memory image stack as the spec asks."""
    return recolor_stack(resize_stack(x, size), color_mode)
