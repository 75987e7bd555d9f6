"""Training detectors: box-moving augmentation, per-cell targets, and the two heads' losses.

Labels are `core.detection` rows (class, x1, y1, x2, y2 in pixels); a detector learns from
per-cell targets instead, so each training sample is augmented (flip, translate, scale: one
affine warp that moves image and boxes together) and then encoded for the model's head:

- box head (`boxes` + `scores`): cells near a box's centre (its centre cell, and cells whose
  centre lies inside the box within one cell of its centre) are positives for its class and
  regress its corners; focal loss on scores, 1 - IoU plus L1 (in cells) on boxes.
- FOMO (`class_map`): cells whose centre lies inside a box take its class, all else background;
  cross-entropy with object cells weighted up (they are few).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.core.errors import UserError

MIN_VISIBLE = 0.5  # a box cut by the border below this share of its area is dropped
FOMO_OBJECT_WEIGHT = 10.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def head_kind(model: Any) -> str:
    names = set(getattr(model, "output_names", None) or [])
    if names == {"boxes", "scores"}:
        return "boxes"
    if names == {"class_map"}:
        return "centroids"
    raise UserError(
        f"detection trains a model with outputs boxes + scores (box_detector) or class_map "
        f"(fomo); this model's outputs are {sorted(names)}"
    )


def _grid(model: Any) -> tuple[int, int, int]:
    out = model.get_layer("scores" if head_kind(model) == "boxes" else "class_map").output
    rows, cols = int(out.shape[1]), int(out.shape[2])
    return rows, cols, int(model.inputs[0].shape[1]) // rows


def augment(
    x: np.ndarray, boxes: np.ndarray, cfg: Any, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, C) image and its (k, 5) label rows, flipped/translated/scaled together."""
    from scipy import ndimage

    h, w = x.shape[:2]
    rows = boxes[boxes[:, 0] >= 0].astype(np.float64)
    flip = str(cfg.flip or "")
    if "horizontal" in flip and rng.uniform() < 0.5:
        x, rows[:, [1, 3]] = x[:, ::-1], w - rows[:, [3, 1]]
    if "vertical" in flip and rng.uniform() < 0.5:
        x, rows[:, [2, 4]] = x[::-1], h - rows[:, [4, 2]]
    scale = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom) if cfg.zoom else 1.0
    shift = rng.uniform(-cfg.translation, cfg.translation, 2) * (w, h) if cfg.translation else 0
    if scale != 1.0 or np.any(shift):
        centre = np.array([w / 2, h / 2])
        offset = centre + np.asarray(shift)  # output = scale * (input - centre) + offset
        fill = float(np.median(x))
        inverse = np.array([1 / scale, 1 / scale])
        start = (centre - offset / scale)[::-1]  # input (row, col) of output pixel (0, 0)
        x = np.stack([ndimage.affine_transform(x[..., c], inverse, offset=start, order=1,
                                               mode="constant", cval=fill)
                      for c in range(x.shape[-1])], axis=-1)  # fmt: skip
        moved = rows[:, 1:5].reshape(-1, 2, 2) - centre
        rows[:, 1:5] = (moved * scale + offset).reshape(-1, 4)
    if cfg.contrast:
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    area = np.prod(rows[:, 3:5] - rows[:, 1:3], axis=1)
    rows[:, 1:5] = np.clip(rows[:, 1:5], 0, [w, h, w, h])
    kept = np.prod(np.clip(rows[:, 3:5] - rows[:, 1:3], 0, None), axis=1) >= MIN_VISIBLE * area
    out = np.full_like(boxes, -1.0)
    out[: int(kept.sum())] = rows[kept]
    return np.ascontiguousarray(x, dtype=np.float32), out


def encode(rows: np.ndarray, grid: tuple[int, int, int], classes: int, kind: str) -> dict:
    """One image's label rows -> the per-cell targets its head trains on."""
    gh, gw, stride = grid
    rows = rows[rows[:, 0] >= 0]
    # biggest first, so a smaller box overwrites the cells it shares with a bigger one
    rows = rows[np.argsort(-np.prod(rows[:, 3:5] - rows[:, 1:3], axis=1), kind="stable")]
    cy, cx = (np.mgrid[0:gh, 0:gw] + 0.5) * stride
    if kind == "centroids":
        target = np.zeros((gh, gw, classes + 1), np.float32)
        target[..., 0] = 1
    else:
        scores = np.zeros((gh, gw, classes), np.float32)
        boxes = np.zeros((gh, gw, 5), np.float32)
    for cls, x1, y1, x2, y2 in rows:
        bx, by = (x1 + x2) / 2, (y1 + y2) / 2
        inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
        if kind == "boxes":
            inside &= (np.abs(cx - bx) <= stride) & (np.abs(cy - by) <= stride)
        inside[min(int(by // stride), gh - 1), min(int(bx // stride), gw - 1)] = True
        if kind == "centroids":
            target[inside] = 0
            target[inside, int(cls) + 1] = 1
        else:
            scores[inside, int(cls)] = 1
            boxes[inside] = (1, x1, y1, x2, y2)
    if kind == "centroids":
        return {"class_map": target}
    return {"boxes": boxes, "scores": scores}


def losses(model: Any) -> Any:
    """Keras losses keyed by the model's output names (FOMO's one output: the loss itself)."""
    import keras

    ops = keras.ops
    stride = float(_grid(model)[2])

    def score_loss(y_true: Any, y_pred: Any) -> Any:
        p = ops.clip(y_pred, 1e-6, 1 - 1e-6)
        ce = -(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
        p_t = y_true * p + (1 - y_true) * (1 - p)
        alpha = y_true * FOCAL_ALPHA + (1 - y_true) * (1 - FOCAL_ALPHA)
        positives = ops.maximum(ops.sum(y_true), 1.0)
        return ops.sum(alpha * (1 - p_t) ** FOCAL_GAMMA * ce) / positives

    def box_loss(y_true: Any, y_pred: Any) -> Any:
        mask, gt = y_true[..., 0], y_true[..., 1:]
        lt, rb = (
            ops.maximum(gt[..., :2], y_pred[..., :2]),
            ops.minimum(gt[..., 2:], y_pred[..., 2:]),
        )
        inter = ops.prod(ops.maximum(rb - lt, 0.0), axis=-1)
        area = ops.prod(ops.maximum(gt[..., 2:] - gt[..., :2], 0.0), axis=-1)
        area_p = ops.prod(ops.maximum(y_pred[..., 2:] - y_pred[..., :2], 0.0), axis=-1)
        iou = inter / (area + area_p - inter + 1e-6)
        l1 = ops.mean(ops.abs(gt - y_pred), axis=-1) / stride
        return ops.sum(mask * (1 - iou + l1)) / ops.maximum(ops.sum(mask), 1.0)

    def fomo_loss(y_true: Any, y_pred: Any) -> Any:
        ce = -ops.sum(y_true * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)
        weight = 1 + (FOMO_OBJECT_WEIGHT - 1) * (1 - y_true[..., 0])
        return ops.mean(weight * ce)

    if head_kind(model) == "boxes":
        return {"boxes": box_loss, "scores": score_loss}
    return fomo_loss  # one output: Keras takes the loss (and the target) bare


def _sample(split: Any, i: int) -> np.ndarray:
    if hasattr(split, "paths"):  # FileSplit: decoded on demand
        return split.decode(split.paths[i])
    return np.asarray(split.x[i], dtype=np.float32)


def pipelines(recipe: Any, ds: Any, model: Any) -> tuple[Any, Any]:
    """(train, val) tf.data pipelines of (image, per-cell targets); train augmented, seeded."""
    import tensorflow as tf

    if recipe.preprocess.augment.rotation:
        raise UserError("detection: augment.rotation is not supported (boxes would not stay "
                        "tight); use flip, translation, zoom or contrast")  # fmt: skip
    kind, grid, classes = head_kind(model), _grid(model), ds.num_classes
    cfg, batch = recipe.preprocess.augment, recipe.train.batch_size
    shapes = {k: v.shape for k, v in encode(ds.train.y[0], grid, classes, kind).items()}
    targets = {k: tf.TensorSpec(s, tf.float32) for k, s in shapes.items()}
    bare = len(targets) == 1  # one output: the target itself, not a dict

    def pack(rows: np.ndarray) -> Any:
        encoded = encode(rows, grid, classes, kind)
        return next(iter(encoded.values())) if bare else encoded

    signature = (tf.TensorSpec(ds.input_shape, tf.float32),
                 next(iter(targets.values())) if bare else targets)  # fmt: skip
    epoch = [0]

    def train_samples() -> Any:
        rng = np.random.default_rng([recipe.train.seed, epoch[0]])
        epoch[0] += 1
        for i in rng.permutation(len(ds.train)):
            x, rows = augment(_sample(ds.train, int(i)), ds.train.y[i], cfg, rng)
            yield x, pack(rows)

    def val_samples() -> Any:
        for i in range(len(ds.val)):
            yield _sample(ds.val, i), pack(ds.val.y[i])

    # Known lengths: Keras then counts steps instead of warning that the generator ran out.
    known = tf.data.experimental.assert_cardinality
    train = tf.data.Dataset.from_generator(train_samples, output_signature=signature)
    train = train.apply(known(len(ds.train)))
    val = tf.data.Dataset.from_generator(val_samples, output_signature=signature)
    val = val.apply(known(len(ds.val))).cache()
    return (train.batch(batch).prefetch(tf.data.AUTOTUNE),
            val.batch(batch).prefetch(tf.data.AUTOTUNE))  # fmt: skip
