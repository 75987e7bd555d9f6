"""`mnist-idx:DIR`: the canonical MNIST IDX files (as downloaded from the MNIST site).

The IDX header is parsed here with NumPy rather than a loader library: it is 4 magic bytes
(0, 0, dtype code, rank) then one big-endian uint32 per dimension, and checking it is how a
wrong or truncated file is caught before it becomes a silently garbled training set.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.images import prepare_stack
from toolkit.data.splits import Source, encode_targets

UBYTE = 0x08
IMAGES_RANK, LABELS_RANK = 3, 1  # magic 2051 (0x00000803) and 2049 (0x00000801)
PREFIXES = ("train", "t10k")  # both present: train then t10k, the full 70,000


def parse_idx(path: Path, rank: int) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes with the expected rank -> ndarray."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"mnist-idx {path}: cannot read ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"mnist-idx {path}: not an IDX file (bad magic number {data[:4].hex()})")
    if data[2] != UBYTE or data[3] != rank:
        expected = 0x0800 + rank
        raise UserError(
            f"mnist-idx {path}: magic number {int.from_bytes(data[:4], 'big')} "
            f"(expected {expected}: unsigned bytes, {rank} dimension{'s' * (rank > 1)})"
        )
    header = 4 + 4 * rank
    if len(data) < header:
        raise UserError(f"mnist-idx {path}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected_bytes = int(np.prod(dims))
    if len(data) - header != expected_bytes:
        raise UserError(
            f"mnist-idx {path}: header says {'x'.join(map(str, dims))} = {expected_bytes} bytes "
            f"but the file holds {len(data) - header} (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, prefix: str, part: str, rank: int) -> Path | None:
    """`train-images-idx3-ubyte[.gz]`, also the common `train-images.idx3-ubyte` spelling."""
    for sep in ("-", "."):
        for suffix in (".gz", ""):
            path = folder / f"{prefix}-{part}{sep}idx{rank}-ubyte{suffix}"
            if path.is_file():
                return path
    return None


def load_mnist_idx(spec: DataSpec, arg: str) -> Source:
    """Train and test IDX pairs are concatenated; the toolkit re-splits by spec like any source."""
    folder = Path(arg).expanduser()
    what = f"mnist-idx {arg}"
    if not folder.exists():
        raise UserError(f"{what}: folder not found")
    if not folder.is_dir():
        raise UserError(f"{what}: not a directory (expected a folder holding the IDX files)")

    images, labels = [], []
    for prefix in PREFIXES:
        image_file = _find(folder, prefix, "images", IMAGES_RANK)
        label_file = _find(folder, prefix, "labels", LABELS_RANK)
        if image_file is None and label_file is None:
            continue
        if image_file is None or label_file is None:
            missing = f"{prefix}-{'images-idx3' if image_file is None else 'labels-idx1'}-ubyte"
            raise UserError(f"{what}: found one {prefix} file but not {missing}[.gz]")
        x, y = parse_idx(image_file, IMAGES_RANK), parse_idx(label_file, LABELS_RANK)
        if len(x) != len(y):
            raise UserError(
                f"{what}: {image_file.name} has {len(x)} images but {label_file.name} "
                f"has {len(y)} labels"
            )
        images.append(x)
        labels.append(y)
    if not images:
        raise UserError(
            f"{what}: no MNIST IDX files found (expected t10k-images-idx3-ubyte[.gz] and "
            f"t10k-labels-idx1-ubyte[.gz], and/or the train-* pair)"
        )
    if spec.task == "regression":
        raise UserError(f"{what}: MNIST is a classification dataset; drop task: regression")
    x = prepare_stack(np.concatenate(images)[..., None], spec.image_size, spec.color_mode)
    y, task, names = encode_targets(np.concatenate(labels), "classification", what)
    return Source(
        what=what,
        y=y,
        task=task,
        labels=names,
        kind="image",
        input_shape=x.shape[1:],
        x=x,
        value_range=(0.0, 255.0),
    )
