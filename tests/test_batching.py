"""Validation runs batched only where that gives the same outputs as batch 1 (issue #16).

The Runner probes its first batch against batch-1 runs bit for bit and falls back to batch 1
for good when they differ; these tests run every artifact of digits-cnn (and, in
test_recipes.py, mnist-full-cnn) both ways over the whole test split.
"""

from __future__ import annotations

import numpy as np
import pytest
from _batching import assert_identical, batched_vs_batch1

pytestmark = pytest.mark.slow


def test_digits_cnn_every_artifact_batched_equals_batch_1(tmp_path) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.data.evaldata import dataset_for_model, eval_data
    from toolkit.pipeline.training import run_training

    run = run_training("digits-cnn", {"train.epochs": 3, "train.tensorboard": False},
                       runs_dir=tmp_path, name="digits")  # fmt: skip
    loaded = load_model(run.run_dir)
    ds = dataset_for_model(loaded, None)
    test = eval_data(ds, "test")
    calibration = ds.train.take_x(128, seed=0)
    rows = batched_vs_batch1(loaded.model, calibration, np.asarray(test.x), tmp_path / "art")
    assert_identical(rows)
    assert len(test.x) == 359  # the whole test split


def test_a_batch_dependent_kernel_falls_back_to_batch_1() -> None:
    """A runner whose batched outputs differ from batch 1 says so and runs batch 1."""
    from toolkit.runtimes.base import Runner, TensorSpec

    class BatchMean(Runner):  # like dynamic quantization: each output depends on the batch
        name, provider = "fake", "cpu"

        def __init__(self) -> None:
            self.inputs = [TensorSpec("x", (-1, 3), "float32")]
            self.outputs = [TensorSpec("y", (-1, 3), "float32")]

        def _run(self, x: np.ndarray) -> np.ndarray:
            return x - x.mean()

    runner = BatchMean()
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = runner.predict(x)
    assert runner.batching.startswith("batch 1 (batched outputs differ from batch 1 by up to")
    np.testing.assert_array_equal(out, np.concatenate([x[i : i + 1] - x[i].mean()
                                                      for i in range(10)]))  # fmt: skip
