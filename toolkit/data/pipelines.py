"""The tf.data pipelines a model trains on: batched, shuffled (seeded), augmented, labels shaped
for the loss. Training and the optimize stage's fine-tuning both use these, so a pruned or
quantization-aware model fine-tunes on exactly what the dense model saw.
"""

from __future__ import annotations

from typing import Any


def label_fn(loss: str, num_classes: int) -> Any:
    import tensorflow as tf

    if loss == "categorical_crossentropy":
        return lambda y: tf.one_hot(tf.cast(y, tf.int32), num_classes)
    if loss in ("binary_crossentropy", "mse", "mae", "huber", "reconstruction"):
        return lambda y: tf.reshape(tf.cast(y, tf.float32), (-1, 1)) if y.shape.rank == 1 else y
    return lambda y: y


def training_pipelines(recipe: Any, ds: Any, loss: str) -> tuple[Any, Any]:
    import tensorflow as tf

    from toolkit.data.preprocess import augmentation

    cfg = recipe.train
    labels = label_fn(loss, ds.num_classes)
    train = ds.train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed)
    aug = augmentation(recipe.preprocess.augment, cfg.seed) if ds.kind == "image" else None
    if aug is not None:
        train = train.map(lambda x, y: (aug(x, training=True), y), tf.data.AUTOTUNE)
    train = train.map(lambda x, y: (x, labels(y)))
    val = ds.val.batches(cfg.batch_size).map(lambda x, y: (x, labels(y)))
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE)
