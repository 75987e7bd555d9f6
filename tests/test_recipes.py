"""The built-in recipes reach their accuracy bars in inference mode (slow: real training).

digits-cnn and tabular-mlp run exactly as shipped. The MNIST recipes run with fewer epochs to
keep CI inside its budget; the full-length numbers are in bench/RESULTS.md (`make bench`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.pipeline.training import run_training

pytestmark = pytest.mark.slow


def test_digits_cnn_as_shipped(tmp_path) -> None:
    result = run_training("digits-cnn", runs_dir=tmp_path)
    assert result.metrics["test"]["accuracy"] >= 0.97


def test_tabular_mlp_beats_majority_class_by_far(tmp_path) -> None:
    result = run_training("tabular-mlp", runs_dir=tmp_path)
    accuracy, baseline = result.metrics["test"]["accuracy"], result.metrics["baseline"]
    assert accuracy >= 0.93 and accuracy - baseline >= 0.25


def test_mnist_cnn_short(tmp_path) -> None:
    result = run_training("mnist-cnn", {"train.epochs": 8}, runs_dir=tmp_path)
    assert result.metrics["test"]["accuracy"] >= 0.96


def test_mnist_full_cnn_short(shared_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the recipe's data path is relative
    result = run_training("mnist-full-cnn", {"train.epochs": 5}, runs_dir=tmp_path)
    assert result.metrics["test"]["samples"] == 2000
    assert result.metrics["test"]["accuracy"] >= 0.98
    # Issue #16: every artifact's accuracy pass, batched as validation runs it, equals batch 1
    # (on the first 300 test images: the batch-1 loops over every runtime, reference kernels
    # and TFLite Micro included, take the time).
    from _batching import assert_identical, batched_vs_batch1

    from toolkit.core.modelio import load_model
    from toolkit.data.evaldata import dataset_for_model, eval_data

    loaded = load_model(result.run_dir)
    ds = dataset_for_model(loaded, None)
    x = np.asarray(eval_data(ds, "test", limit=300).x)
    rows = batched_vs_batch1(loaded.model, ds.train.take_x(128, seed=0), x, tmp_path / "art")
    assert_identical(rows)
