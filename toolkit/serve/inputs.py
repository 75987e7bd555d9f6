"""Request bodies -> raw model inputs, checked against the input spec with one clear message.

JSON: `{"inputs": sample}` or `{"inputs": [sample, ...]}`, numbers only, shape as the spec
says (one sample, or N x that), finite. Images: decoded by toolkit.data.images exactly as
training decoded files (16-bit, palette, alpha, CMYK alike), resized bilinearly, scaled into
the spec's value range; the pixel count is checked from the header before decoding.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

MAX_BATCH = 256  # samples per request
MAX_PIXELS = 4096 * 4096  # decoded image size limit (a decompression bomb is refused early)


class RequestError(Exception):
    """A client mistake: becomes `{"error": message}` with this HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def from_json(body: bytes, shape: tuple[int, ...], max_batch: int = MAX_BATCH) -> np.ndarray:
    """A JSON body -> (N, *shape) float32; RequestError (400/422/413) otherwise."""
    try:
        data = json.loads(body, parse_constant=lambda name: float("nan"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON ({err})") from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise RequestError(422, 'expected a JSON object {"inputs": [...]} (one sample or a batch)')
    unknown = sorted(set(data) - {"inputs", "top_k"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(unknown)}; expected inputs, top_k")
    x = to_array(data["inputs"])
    if tuple(x.shape) == shape:
        x = x[None]
    if tuple(x.shape[1:]) != shape or x.ndim != len(shape) + 1:
        raise RequestError(
            422,
            f"inputs have shape {_shape_text(x.shape)}; the model takes one sample of "
            f"{_shape_text(shape)} or a batch N x {_shape_text(shape)}",
        )
    if len(x) == 0:
        raise RequestError(422, "inputs is an empty batch")
    if len(x) > max_batch:
        raise RequestError(413, f"a batch of {len(x)} samples; at most {max_batch} per request")
    if not np.isfinite(x).all():
        raise RequestError(422, "inputs contain NaN or infinite values")
    return x.astype(np.float32)


def _check_numbers(value: Any) -> None:
    """Reject bools, strings, null and objects anywhere in the nested lists."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise RequestError(
                422, f"inputs must hold numbers only; found {type(item).__name__} {item!r:.40}"
            )


def to_array(value: Any) -> np.ndarray:
    """Nested lists of numbers -> float64; numpy decides the common type in C, and only a
    mixed (object) result is walked in Python to name the offending value."""
    try:
        x = np.asarray(value)
    except (ValueError, OverflowError):
        x = None  # ragged (inhomogeneous) lists, or an int beyond int64
    if x is None or x.dtype.kind == "O":
        _check_numbers(value)  # names a string/None/object if there is one
        try:
            x = np.asarray(value, dtype=np.float64)
        except (ValueError, OverflowError):
            raise RequestError(
                422, "inputs are ragged (every sample and row must have one length) or too large"
            ) from None
    elif x.dtype.kind not in "iuf":
        kind = {"b": "bool", "U": "str", "S": "str"}.get(x.dtype.kind, x.dtype.name)
        raise RequestError(422, f"inputs must hold numbers only; found {kind}")
    x = x.astype(np.float64)
    if np.abs(x[np.isfinite(x)]).max(initial=0.0) > np.finfo(np.float32).max:
        raise RequestError(422, "inputs hold values too large for float32")
    return x


def top_k_from(body: bytes | None, default: int) -> int:
    if not body:
        return default
    try:
        value = json.loads(body).get("top_k", default)
    except (ValueError, AttributeError):
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(422, f"top_k must be a positive integer; got {value!r}")
    return value


def from_image(content: bytes, spec: dict[str, Any], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> (1, H, W, C) raw float32 in the spec's value range."""
    from PIL import Image, UnidentifiedImageError

    from toolkit.data.images import decode_image

    shape = tuple(int(d) for d in spec["shape"])
    if spec.get("kind") != "image" or len(shape) != 3 or shape[2] not in (1, 3):
        raise RequestError(415, f"this model takes {_shape_text(shape)} arrays as JSON, not images")
    if not content:
        raise RequestError(422, "the uploaded image is empty")
    try:
        with Image.open(io.BytesIO(content)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise RequestError(422, f"not a readable image ({type(err).__name__})") from None
    if width * height > max_pixels:
        raise RequestError(
            413, f"the image is {width}x{height} pixels; at most {max_pixels} pixels are decoded"
        )
    mode = "grayscale" if shape[2] == 1 else "rgb"
    try:
        # decode_image opens whatever PIL opens: a file path or, here, the uploaded bytes
        arr = decode_image(io.BytesIO(content), mode, shape[:2])  # type: ignore[arg-type]
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise RequestError(
            422, f"not a readable image: truncated or corrupt ({type(err).__name__})"
        ) from None
    lo, hi = (float(v) for v in spec.get("value_range") or (0.0, 255.0))
    return (lo + arr / 255.0 * (hi - lo)).astype(np.float32)[None]
