"""What every dataset source hands to the later stages: raw inputs and labels in three splits.

Inputs stay *raw* (pixel values 0..255, table values as in the file): normalization is baked
into the model by `toolkit.data.preprocess`, so exported models take what the device sees.
Small sources live in memory (`ArraySplit`); image folders stream from disk (`FileSplit`),
so a 50k-image folder never sits in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # heavy import only for type checkers
    import tensorflow as tf

# A name in the Task registry (toolkit.core.tasks): what the labels mean.
Task = str


@dataclass(frozen=True)
class DataSpec:
    """Which data to load and how to split it (the recipe's `dataset:` block)."""

    name: str
    image_size: tuple[int, int] | None = None  # (height, width) to resize/upsample images to
    color_mode: Literal["grayscale", "rgb"] | None = None  # None: the source's own
    target: str | None = None  # csv: the label column (default: the last column)
    task: Task | None = None  # None: inferred from the labels
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    sequence_length: int | None = None  # npz sequences: pad/truncate to this length
    max_samples: int | None = None  # deterministic stratified subsample before splitting


class Split:
    """One split (train, val or test). Labels always live in memory; inputs may stream."""

    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
        """A tf.data pipeline of (x float32 raw, y) batches."""
        raise NotImplementedError

    def inputs(self, batch_size: int = 256) -> tf.data.Dataset:
        """A tf.data pipeline of raw x batches only (for predict, calibration, adapt)."""
        return self.batches(batch_size).map(lambda x, _y: x)

    def take_x(self, n: int | None = None, *, seed: int = 0) -> np.ndarray:
        """Up to `n` raw inputs as one array, chosen deterministically (all when n is None)."""
        raise NotImplementedError


@dataclass
class ArraySplit(Split):
    """A split held in memory as arrays."""

    x: np.ndarray
    y: np.ndarray

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.x.astype(np.float32), self.y))
        if shuffle:
            ds = ds.shuffle(len(self.y), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def take_x(self, n: int | None = None, *, seed: int = 0) -> np.ndarray:
        if n is None or n >= len(self.y):
            return self.x.astype(np.float32)
        idx = np.sort(np.random.default_rng(seed).choice(len(self.y), size=n, replace=False))
        return self.x[idx].astype(np.float32)


@dataclass
class Dataset:
    """A loaded, split dataset plus what later stages need to know about its inputs."""

    name: str
    task: Task
    input_shape: tuple[int, ...]  # one sample's raw shape, e.g. (32, 32, 1) or (30,)
    value_range: tuple[float, float]  # raw input range, e.g. (0, 255)
    labels: list[str] | None  # class names in label-index order (classification)
    train: Split
    val: Split
    test: Split
    kind: Literal["image", "tabular", "sequence"] = "image"
    feature_names: list[str] | None = None  # tabular: column names in input order
    skipped: int = 0  # unreadable files skipped while listing an image folder
    notes: list[str] = field(default_factory=list)  # things the user should know (warnings)

    @property
    def num_classes(self) -> int:
        return len(self.labels) if self.labels else 0
