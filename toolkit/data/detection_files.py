"""`yolo:DIR` and `coco:ANNOTATIONS.json`: detection datasets on disk, images streamed.

Both become the same thing: a `FileSplit` of image paths (decoded and resized on the fly, like
`image-folder:`) whose labels are `core.detection` rows `[class, x1, y1, x2, y2]` in pixels of
the resized image. Boxes are read normalized, so resizing every image to one size moves them
exactly. Bad input is handled up front, never mid-training:

- a box outside the image (coordinates beyond [0, 1] or a non-positive size): skipped, counted;
- a class id the class list does not name: exit 2, naming the file and line;
- an image without a label file (YOLO) or without annotations (COCO): a background image, counted;
- no images at all, or no boxes anywhere: exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.folder import IMAGE_SUFFIXES, FileSplit, _probe
from toolkit.data.images import GRAYSCALE_MODES, ColorMode, channels
from toolkit.data.registry import DatasetEntry, register_dataset
from toolkit.data.splits import Source

EDGE_TOLERANCE = 1e-3  # normalized coordinates a hair outside [0, 1] are clipped, not dropped

Boxes = list[tuple[int, float, float, float, float]]  # (class, x1, y1, x2, y2), normalized


def _in_range(x1: float, y1: float, x2: float, y2: float) -> bool:
    lo, hi = -EDGE_TOLERANCE, 1 + EDGE_TOLERANCE
    return lo <= x1 < x2 <= hi and lo <= y1 < y2 <= hi


def _yolo_names(root: Path) -> list[str] | None:
    """Class names from classes.txt (one a line) or data.yaml's `names`, when present."""
    if (root / "classes.txt").is_file():
        return [n.strip() for n in (root / "classes.txt").read_text().splitlines() if n.strip()]
    if (root / "data.yaml").is_file():
        import yaml

        names = (yaml.safe_load((root / "data.yaml").read_text()) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    return None


def _read_yolo(path: Path, what: str) -> tuple[Boxes, int]:
    """One label file -> (boxes, lines skipped as out of range)."""
    boxes: Boxes = []
    skipped = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
            if len(parts) != 5:
                raise ValueError
        except (ValueError, IndexError):
            raise UserError(
                f"{what}: {path.name} line {number}: expected 'class cx cy w h' (5 numbers, "
                f"normalized); got {line.strip()!r}"
            ) from None
        if cls < 0:
            raise UserError(f"{what}: {path.name} line {number}: class id {cls} is negative")
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if not _in_range(*box):
            skipped += 1
            continue
        boxes.append((cls, *(min(max(v, 0.0), 1.0) for v in box)))  # type: ignore[arg-type]
    return boxes, skipped


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith(".") and p.is_file())  # fmt: skip


def _source(
    spec: DataSpec,
    what: str,
    items: list[tuple[Path, Boxes]],
    names: list[str],
    counts: dict[str, int],
) -> Source:
    """Probe the images, pick size and colour mode, and pack labels into pixel rows."""
    from concurrent.futures import ThreadPoolExecutor

    from toolkit.data.folder import _workers

    if spec.task not in (None, "detection"):
        raise UserError(f"{what}: a detection dataset has task detection; drop task")
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        probes = list(pool.map(_probe, [path for path, _ in items]))
    good = [(p, b, pr) for (p, b), pr in zip(items, probes, strict=True) if not isinstance(pr, str)]
    unreadable = len(items) - len(good)
    if not good:
        raise UserError(f"{what}: none of the {len(items)} images could be read")
    if not any(boxes for _, boxes, _ in good):
        raise UserError(f"{what}: no boxes in any of the {len(good)} images; nothing to detect")
    modes = {probe[0] for _, _, probe in good}
    color: ColorMode = spec.color_mode or ("grayscale" if modes <= GRAYSCALE_MODES else "rgb")
    size = tuple(spec.image_size) if spec.image_size else good[0][2][1]
    height, width = int(size[0]), int(size[1])
    most = max(1, max(len(b) for _, b, _ in good))
    y = np.full((len(good), most, 5), -1.0, np.float32)
    for i, (_, boxes, _) in enumerate(good):
        for k, (cls, x1, y1, x2, y2) in enumerate(boxes):
            y[i, k] = (cls, x1 * width, y1 * height, x2 * width, y2 * height)
    paths = np.array([str(p) for p, _, _ in good])
    notes = []
    counts = {**counts, "unreadable images": unreadable}
    counts["background images (no boxes)"] = sum(1 for _, b, _ in good if not b)
    found = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    notes.append(f"{what}: {len(good)} images, {int((y[..., 0] >= 0).sum())} boxes"
                 + (f"; {found}" if found else ""))  # fmt: skip

    def make_split(idx: np.ndarray) -> FileSplit:
        return FileSplit(paths=paths[idx], y=y[idx], image_size=(height, width), color_mode=color)

    return Source(
        what=what, y=y, task="detection", labels=names, kind="image",
        input_shape=(height, width, channels(color)), make_split=make_split,
        value_range=(0.0, 255.0), skipped=unreadable, notes=notes,
    )  # fmt: skip


def load_yolo(spec: DataSpec, arg: str) -> Source:
    """DIR/images/**.{jpg,png,...} + DIR/labels/<same relative path>.txt (YOLO format)."""
    root = Path(arg).expanduser()
    what = f"yolo {arg}"
    if not (root / "images").is_dir():
        raise UserError(f"{what}: expected an images/ folder (and labels/) in {root}")
    images = _images(root / "images")
    if not images:
        raise UserError(f"{what}: no image files in {root / 'images'}")
    names = _yolo_names(root)
    items, out_of_range = [], 0
    for image in images:
        label = (root / "labels" / image.relative_to(root / "images")).with_suffix(".txt")
        boxes, skipped = _read_yolo(label, what) if label.is_file() else ([], 0)
        out_of_range += skipped
        for cls, *_ in boxes:
            if names is not None and cls >= len(names):
                raise UserError(
                    f"{what}: {label.relative_to(root)} has class id {cls}, but the class list "
                    f"names {len(names)} ({', '.join(names[:5])}); fix the id or the list"
                )
        items.append((image, boxes))
    if names is None:
        top = max([cls for _, boxes in items for cls, *_ in boxes], default=0)
        names = [str(i) for i in range(top + 1)]
    return _source(spec, what, items, names, {"boxes out of range (skipped)": out_of_range})


def load_coco(spec: DataSpec, arg: str) -> Source:
    """A COCO annotations file; images resolve against its folder, then its images/ folder."""
    path = Path(arg).expanduser()
    what = f"coco {arg}"
    if not path.is_file():
        raise UserError(f"{what}: annotations file not found")
    try:
        doc = json.loads(path.read_text())
        images, categories = doc["images"], doc["categories"]
        annotations = doc.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{what}: not COCO annotations (images, categories): {exc}") from None
    if not images:
        raise UserError(f"{what}: lists no images")
    ids = sorted(int(c["id"]) for c in categories)
    index = {cid: k for k, cid in enumerate(ids)}
    names = [str({int(c["id"]): c.get("name", c["id"]) for c in categories}[i]) for i in ids]
    by_image: dict[int, Boxes] = {int(im["id"]): [] for im in images}
    out_of_range = 0
    listed = {int(im["id"]): im for im in images}
    for ann in annotations:
        image = listed.get(int(ann["image_id"]))
        if image is None or int(ann["category_id"]) not in index:
            raise UserError(
                f"{what}: annotation {ann.get('id')} names image {ann['image_id']} / category "
                f"{ann['category_id']}, which the file does not list"
            )
        w, h = float(image["width"]), float(image["height"])
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        box = (x / w, y / h, (x + bw) / w, (y + bh) / h)
        if not _in_range(*box):
            out_of_range += 1
            continue
        clipped = tuple(min(max(v, 0.0), 1.0) for v in box)
        by_image[int(ann["image_id"])].append((index[int(ann["category_id"])], *clipped))
    items = []
    for image in images:
        file = path.parent / image["file_name"]
        if not file.is_file():
            file = path.parent / "images" / image["file_name"]
        if not file.is_file():
            raise UserError(f"{what}: image {image['file_name']!r} not found beside the file")
        items.append((file, by_image[int(image["id"])]))
    return _source(spec, what, items, names, {"boxes out of range (skipped)": out_of_range})


register_dataset(
    "yolo",
    DatasetEntry(
        load_yolo, "image", "detection",
        "YOLO detection folder: images/ + labels/*.txt ('class cx cy w h', normalized), "
        "classes.txt or data.yaml names; streamed",
    ),
    prefixed=True,
)  # fmt: skip
register_dataset(
    "coco",
    DatasetEntry(
        load_coco, "image", "detection",
        "COCO detection annotations .json (images next to it or in images/); streamed",
    ),
    prefixed=True,
)  # fmt: skip
