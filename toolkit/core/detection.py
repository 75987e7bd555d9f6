"""Detection outputs and labels: box layouts, decoding, NMS, matching and COCO mAP.

Numpy only (pycocotools imported inside `coco_metrics`), so the validate stage, the task
registry and the training stage share one decoder. The contracts:

- Labels: float32 (N, MAX_BOXES, 5) rows `[class, x1, y1, x2, y2]` in pixels of the model input;
  class -1 pads an image with fewer boxes (an all-padding image is background).
- Raw outputs, flattened per sample (how every Runner returns them): either
  `boxes` (G*G*4, xyxy pixels) followed by `scores` (G*G*C, sigmoid) -- the anchor-free box
  head, whether exported as two tensors or as one concatenated tensor -- or a FOMO class map
  (G*G*(C+1), softmax, channel 0 = background). The layout follows from the size: for C >= 1,
  (C+4)(C+1) is never a square, so at most one layout gives a square grid for a square input.
- Decoded detections: float32 (N, MAX_DETECTIONS, 6) rows `[x1, y1, x2, y2, score, class]`,
  padded with class -1. Metrics and agreement read these, not raw outputs.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

MAX_DETECTIONS = 100  # per image, what COCO evaluation keeps (maxDets)
CANDIDATE_SCORE = 0.05  # box candidates below this never reach NMS (mAP sweeps above it)
OPERATING_SCORE = 0.5  # precision/recall, agreement, predict and bundles use this threshold
NMS_IOU = 0.5
MATCH_IOU = 0.5


def grid_for(cells: int, height: int, width: int) -> tuple[int, int, int] | None:
    """(rows, cols, stride) when `cells` tiles an HxW input with a whole-pixel stride."""
    if cells <= 0 or (height * width) % cells:
        return None
    stride = round(float(np.sqrt(height * width / cells)))
    if stride < 1 or stride * stride * cells != height * width:
        return None
    if height % stride or width % stride:
        return None
    return height // stride, width // stride, stride


def layout(width: int, num_classes: int, input_hw: tuple[int, int]) -> tuple[str, int, int, int]:
    """("boxes" | "centroids", rows, cols, stride) for flat outputs of `width` values."""
    h, w = int(input_hw[0]), int(input_hw[1])
    for kind, per_cell in (("boxes", 4 + num_classes), ("centroids", num_classes + 1)):
        if width % per_cell == 0:
            grid = grid_for(width // per_cell, h, w)
            if grid is not None:
                return (kind, *grid)
    from toolkit.core.errors import UserError

    raise UserError(
        f"detection outputs of {width} values fit neither boxes+scores (G*G*(4+{num_classes})) "
        f"nor a class map (G*G*{num_classes + 1}) on a {h}x{w} input: not a detector of this "
        "toolkit's layouts (docs/detection.md)"
    )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes a (n, 4) and b (m, 4)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        best, order = order[0], order[1:]
        keep.append(int(best))
        if len(order):
            order = order[iou_matrix(boxes[best], boxes[order])[0] < iou]
    return np.asarray(keep, dtype=np.int64)


def _pack(rows: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(rows), MAX_DETECTIONS, 6), np.float32)
    out[:, :, 5] = -1
    for i, r in enumerate(rows):
        r = r[np.argsort(-r[:, 4], kind="stable")][:MAX_DETECTIONS] if len(r) else r
        out[i, : len(r)] = r
    return out


def _decode_boxes(flat: np.ndarray, cells: int, num_classes: int, hw: tuple[int, int]) -> list:
    boxes = flat[:, : cells * 4].reshape(len(flat), cells, 4)
    scores = flat[:, cells * 4 :].reshape(len(flat), cells, num_classes)
    rows = []
    for b, s in zip(boxes, scores, strict=True):
        b = np.clip(b, 0, [hw[1], hw[0], hw[1], hw[0]])
        found = []
        for c in range(num_classes):  # per-class candidates and NMS (multi-label, like YOLOv8)
            idx = np.flatnonzero(s[:, c] >= CANDIDATE_SCORE)
            if len(idx):
                kept = idx[nms(b[idx], s[idx, c])]
                found.append(np.column_stack([b[kept], s[kept, c], np.full(len(kept), c)]))
        rows.append(np.concatenate(found) if found else np.zeros((0, 6)))
    return rows


def _decode_centroids(flat: np.ndarray, grid: tuple[int, int, int], num_classes: int) -> list:
    """FOMO: per class, the connected cells that are that class's argmax above the operating
    score become one box (their cells' extent) scored by their mean probability. The mean,
    not the best cell: int8 leaves a softmax 256 levels, and a best-cell score ties most
    boxes at 0.996, which scrambles mAP's ranking (-3 pt on detect-synth-fomo; mean: -0.04)."""
    from scipy import ndimage

    gh, gw, stride = grid
    maps = flat.reshape(len(flat), gh, gw, num_classes + 1)
    rows = []
    for probs in maps:
        winner = np.argmax(probs, axis=-1)
        found = []
        for c in range(num_classes):
            mask = (winner == c + 1) & (probs[..., c + 1] >= OPERATING_SCORE)
            parts, count = ndimage.label(mask, structure=np.ones((3, 3)))
            for k in range(1, count + 1):
                ys, xs = np.nonzero(parts == k)
                box = [xs.min() * stride, ys.min() * stride,
                       (xs.max() + 1) * stride, (ys.max() + 1) * stride]  # fmt: skip
                found.append([*box, float(probs[ys, xs, c + 1].mean()), c])
        rows.append(np.asarray(found, np.float64).reshape(-1, 6))
    return rows


def decode(outputs: np.ndarray, input_shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Raw outputs (N, ...) of either layout -> decoded detections (N, MAX_DETECTIONS, 6)."""
    flat = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
    hw = (int(input_shape[0]), int(input_shape[1]))
    kind, gh, gw, stride = layout(flat.shape[1], num_classes, hw)
    if kind == "boxes":
        return _pack(_decode_boxes(flat, gh * gw, num_classes, hw))
    return _pack(_decode_centroids(flat, (gh, gw, stride), num_classes))


def flat_outputs(outputs: Any, names: list[str] | None = None) -> np.ndarray:
    """A model's outputs (one array, a list, or a dict) as one (N, D) array: several outputs
    are flattened and concatenated in name order, the order every Runner uses."""
    if isinstance(outputs, dict):
        parts = [outputs[k] for k in sorted(outputs)]
    elif isinstance(outputs, (list, tuple)):
        order = (
            sorted(range(len(outputs)), key=lambda i: names[i]) if names else range(len(outputs))
        )
        parts = [outputs[i] for i in order]
    else:
        return np.asarray(outputs)
    parts = [np.asarray(p).reshape(len(p), -1) for p in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _valid(rows: np.ndarray, score: float | None) -> np.ndarray:
    keep = rows[:, 5] >= 0
    if score is not None:
        keep &= rows[:, 4] >= score
    return rows[keep]


def match_count(a: np.ndarray, b: np.ndarray) -> int:
    """Greedy one-to-one matches (same class, IoU >= MATCH_IOU) between rows of xyxy+class:
    a's rows in order (callers sort by score), each taking its best free partner."""
    if not len(a) or not len(b):
        return 0
    iou = iou_matrix(a[:, :4], b[:, :4])
    iou[a[:, -1][:, None] != b[:, -1][None, :]] = 0
    used = np.zeros(len(b), bool)
    hits = 0
    for i in range(len(a)):
        cand = np.where(used, 0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= MATCH_IOU:
            used[j], hits = True, hits + 1
    return hits


def ground_truth(y: np.ndarray) -> list[np.ndarray]:
    """Label rows -> per-image (k, 5) [x1, y1, x2, y2, class] arrays (padding dropped)."""
    out = []
    for rows in np.asarray(y, np.float64).reshape(len(y), -1, 5):
        rows = rows[rows[:, 0] >= 0]
        out.append(np.column_stack([rows[:, 1:5], rows[:, 0]]))
    return out


def box_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Matched-box agreement of two decoded sets at the operating score: 2 x matched boxes /
    (artifact's boxes + reference's boxes), over all images (1.0 when neither finds any)."""
    hits = total = 0
    for out, ref in zip(np.asarray(outputs), np.asarray(reference), strict=True):
        out, ref = _valid(out, OPERATING_SCORE), _valid(ref, OPERATING_SCORE)
        hits += match_count(ref[:, [0, 1, 2, 3, 5]], out[:, [0, 1, 2, 3, 5]])
        total += len(out) + len(ref)
    return 1.0 if total == 0 else float(2 * hits / total)


def operating_point(y: np.ndarray, detections: np.ndarray) -> dict[str, float]:
    """Precision and recall of the detections at the operating score (IoU >= 0.5 matches)."""
    hits = found = wanted = 0
    for gt, rows in zip(ground_truth(y), np.asarray(detections), strict=True):
        rows = _valid(rows, OPERATING_SCORE)
        hits += match_count(rows[:, [0, 1, 2, 3, 5]], gt)
        found, wanted = found + len(rows), wanted + len(gt)
    precision = hits / found if found else (1.0 if not wanted else 0.0)
    recall = hits / wanted if wanted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def coco_metrics(
    y: np.ndarray, detections: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP@0.5 by pycocotools' COCOeval, plus the
    operating point. Images without boxes count (their detections are false positives)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts = ground_truth(y)
    classes = len(labels) if labels else int(max([1, *[g[:, 4].max() + 1 for g in gts if len(g)]]))
    names = labels or [str(i) for i in range(classes)]
    anns, dets = [], []
    for i, gt in enumerate(gts):
        for x1, y1, x2, y2, c in gt:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})  # fmt: skip
        for x1, y1, x2, y2, s, c in _valid(np.asarray(detections[i], np.float64), None):
            dets.append({"image_id": i, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [x1, y1, x2 - x1, y2 - y1]})  # fmt: skip
    result: dict[str, Any] = {"samples": len(gts), "boxes": len(anns)}
    result.update(operating_point(y, detections))
    if not anns or not dets:
        per = {n: 0.0 for n in names} if anns else {}
        return {**result, "map50": 0.0, "map50_95": 0.0, "ap50_per_class": per}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its whole table
        gt_api = COCO()
        categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
        images = [{"id": i} for i in range(len(gts))]
        gt_api.dataset = {"images": images, "annotations": anns, "categories": categories}
        gt_api.createIndex()
        ev = COCOeval(gt_api, gt_api.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all recalls, classes, all areas
    per_class = {}
    for k, name in enumerate(names):
        column = precision[:, k]
        if np.any(column > -1):
            per_class[name] = float(np.mean(column[column > -1]))
    return {**result, "map50": max(float(ev.stats[1]), 0.0),
            "map50_95": max(float(ev.stats[0]), 0.0), "ap50_per_class": per_class}  # fmt: skip


def boxes_view(row: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    """One image's decoded detections at the operating score, best first (predict, serve)."""
    rows = _valid(np.asarray(row, dtype=np.float64).reshape(-1, 6), OPERATING_SCORE)
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    return {"boxes": [{"label": labels[int(c)] if int(c) < len(labels) else str(int(c)),
                       "index": int(c), "score": round(float(s), 4),
                       "box": [round(float(v), 1) for v in (x1, y1, x2, y2)]}
                      for x1, y1, x2, y2, s, c in rows]}  # fmt: skip
