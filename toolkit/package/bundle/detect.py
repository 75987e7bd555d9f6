"""Boxes from a detector's raw outputs on the device, and drawing them: numpy and Pillow only.

Copied into detection bundles beside run.py (which imports it). The same decoding as the
toolkit's `toolkit/core/detection.py` (a test checks they agree on real outputs), written
again here because a bundle runs without the toolkit and without scipy: box head = per-class
candidates >= 0.05 and greedy NMS at IoU 0.5; FOMO class map = connected cells that are a
class's argmax with probability >= 0.5, one box per group, scored by its mean probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAX_DETECTIONS, CANDIDATE_SCORE, OPERATING_SCORE, NMS_IOU = 100, 0.05, 0.5, 0.5


def _grid(cells: int, h: int, w: int) -> tuple[int, int, int] | None:
    if cells <= 0 or (h * w) % cells:
        return None
    stride = round(float(np.sqrt(h * w / cells)))
    ok = stride >= 1 and stride * stride * cells == h * w and not h % stride and not w % stride
    return (h // stride, w // stride, stride) if ok else None


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))  # int8 can swap x1, x2 by a step
    union = area + np.prod(np.clip(others[:, 2:] - others[:, :2], 0, None), axis=1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    order, keep = np.argsort(-scores, kind="stable"), []
    while len(order):
        keep.append(int(order[0]))
        order = order[1:][_iou(boxes[order[0]], boxes[order[1:]]) < NMS_IOU]
    return keep


def _groups(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """8-connected groups of True cells, in row-major order of their first cell."""
    seen, groups = np.zeros_like(mask), []
    for r, c in zip(*np.nonzero(mask)):  # noqa: B905
        if seen[r, c]:
            continue
        stack, cells = [(r, c)], []
        seen[r, c] = True
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    inside = 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1]
                    if inside and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        ys, xs = np.array(cells).T
        groups.append((ys, xs))
    return groups


def decode(flat: np.ndarray, hw: tuple[int, int], classes: int) -> list[np.ndarray]:
    """(N, D) dequantized outputs -> per image (k, 6) rows x1, y1, x2, y2, score, class."""
    h, w = hw
    width = flat.shape[1]
    box_grid = _grid(width // (4 + classes), h, w) if width % (4 + classes) == 0 else None
    map_grid = _grid(width // (classes + 1), h, w) if width % (classes + 1) == 0 else None
    rows = []
    for sample in flat.astype(np.float64):
        found = []
        if box_grid is not None:
            cells = box_grid[0] * box_grid[1]
            boxes = np.clip(sample[: cells * 4].reshape(cells, 4), 0, [w, h, w, h])
            scores = sample[cells * 4 :].reshape(cells, classes)
            for c in range(classes):
                idx = np.flatnonzero(scores[:, c] >= CANDIDATE_SCORE)
                for k in idx[_nms(boxes[idx], scores[idx, c])] if len(idx) else []:
                    found.append([*boxes[k], scores[k, c], c])
        elif map_grid is not None:
            gh, gw, s = map_grid
            probs = sample.reshape(gh, gw, classes + 1)
            winner = probs.argmax(-1)
            for c in range(classes):
                for ys, xs in _groups((winner == c + 1) & (probs[..., c + 1] >= OPERATING_SCORE)):
                    box = [xs.min() * s, ys.min() * s, (xs.max() + 1) * s, (ys.max() + 1) * s]
                    found.append([*box, probs[ys, xs, c + 1].mean(), c])
        else:
            raise ValueError(f"outputs of {width} values are no detection layout for {h}x{w}")
        found = np.asarray(found, np.float64).reshape(-1, 6)
        rows.append(found[np.argsort(-found[:, 4], kind="stable")][:MAX_DETECTIONS])
    return rows


def boxes_json(rows: np.ndarray, labels: list[str]) -> list[dict]:
    """The detections at the operating score, best first."""
    return [{"label": labels[int(c)] if int(c) < len(labels) else str(int(c)), "index": int(c),
             "score": round(float(s), 4), "box": [round(float(v), 1) for v in (x1, y1, x2, y2)]}
            for x1, y1, x2, y2, s, c in rows if s >= OPERATING_SCORE]  # fmt: skip


def draw(image: Path, found: list[dict], size: tuple[int, int], out: Path) -> Path:
    """The input image with its boxes (scaled from the model's HxW to the image's size)."""
    from PIL import Image, ImageDraw

    with Image.open(image) as img:
        canvas = img.convert("RGB")
    sx, sy = canvas.width / size[1], canvas.height / size[0]
    pen = ImageDraw.Draw(canvas)
    for item in found:
        x1, y1, x2, y2 = item["box"]
        pen.rectangle([x1 * sx, y1 * sy, x2 * sx, y2 * sy], outline=(255, 48, 48), width=1)
        pen.text((x1 * sx + 1, max(y1 * sy - 10, 0)), f"{item['label']} {item['score']:.2f}",
                 fill=(255, 220, 0))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def show(
    names: list[str],
    inputs: list[str],
    rows: list[np.ndarray],
    labels: list[str],
    size: tuple[int, int],
    draw_dir: str | None,
    as_json: bool,
) -> str:
    """run.py's output for a detector: one line (or a JSON item) per input; `draw_dir`: each
    image input saved there with its boxes."""
    images = {Path(p).name: Path(p) for p in inputs if Path(p).suffix.lower() != ".npy"}
    results = []
    for name, found in zip(names, rows):  # noqa: B905
        item = {"input": name, "boxes": boxes_json(found, labels)}
        if draw_dir and name in images:
            out = Path(draw_dir) / f"{images[name].stem}-boxes.png"
            item["drawn"] = str(draw(images[name], item["boxes"], size, out))
        results.append(item)
    if as_json:
        return json.dumps(results, indent=2)
    lines = []
    for r in results:
        shown = "; ".join(f"{b['label']} ({b['score']:.3f}) at {b['box']}" for b in r["boxes"])
        lines.append(f"{r['input']}: {shown or '(no boxes)'}")
    return "\n".join(lines)
