"""Datasets: load a named source, check it, and split it into train/val/test.

`load_dataset(DataSpec("digits", image_size=(32, 32)))` -> `Dataset`; `list_datasets()` lists the
registered names. Importing this package stays cheap: TensorFlow, scikit-learn, pandas and PIL
load only when a dataset is loaded or streamed.
"""

from __future__ import annotations

from toolkit.data import (  # noqa: F401  (they register themselves)
    detection_files,
    detection_synth,
    synthetic,
    timeseries,
)
from toolkit.data.base import ArraySplit, Dataset, DataSpec, Split
from toolkit.data.folder import FileSplit
from toolkit.data.registry import DatasetEntry, list_datasets, load_dataset, register_dataset

__all__ = [
    "ArraySplit",
    "DataSpec",
    "Dataset",
    "DatasetEntry",
    "FileSplit",
    "Split",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
