"""Held-out image-folder data streams from disk (issue #8): validation never stacks the split.

`bench/rss_folder.py` measures the effect on a 50,000-image folder; these tests pin the
behaviour: the test split of an image folder is StreamedInputs (decoded batch by batch), it
yields exactly what `take_x` would, and validation on it gives the same report numbers as on
the same inputs held as one array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.data import DataSpec, load_dataset
from toolkit.data import folder as folder_module
from toolkit.data.evaldata import StreamedInputs, eval_data, predict_batched
from toolkit.validate.stage import EvalData, validate


@pytest.fixture(scope="module")
def folder_ds(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("stream-folder")
    rng = np.random.default_rng(0)
    for label in range(2):
        (root / f"c{label}").mkdir()
        for i in range(40):
            pixels = rng.integers(0, 80, (8, 8, 3)) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"c{label}" / f"{i:03d}.png")
    return load_dataset(DataSpec(name=f"image-folder:{root}", seed=0))


def test_folder_test_split_streams_what_take_x_would(folder_ds, monkeypatch) -> None:
    data = eval_data(folder_ds, "test", adapt=lambda x: x / 255.0)
    assert isinstance(data.x, StreamedInputs)
    whole = folder_ds.test.take_x() / 255.0
    assert len(data.x) == len(whole) == len(data.y) == 16
    batches = list(data.x.batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 1] and batches[0].dtype == np.float32
    np.testing.assert_allclose(np.concatenate(batches), whole, rtol=1e-6)
    np.testing.assert_allclose(data.x[3], whole[3], rtol=1e-6)
    # one sample for latency decodes only up to it, not the split
    calls: list[str] = []
    real = folder_module.decode_image
    monkeypatch.setattr(folder_module, "decode_image", lambda *a: calls.append(a[0]) or real(*a))
    data.x[0]
    assert len(calls) == 1
    limited = eval_data(folder_ds, "test", limit=6, seed=1)
    np.testing.assert_array_equal(
        np.concatenate(list(limited.x.batches(4))), folder_ds.test.take_x(6, seed=1)
    )
    assert len(limited.x) == len(limited.y) == 6


def test_validation_on_streamed_inputs_matches_the_array(folder_ds, tmp_path: Path) -> None:
    import keras

    from toolkit.convert import convert

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(2, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    artifact = convert(model, "tflite-fp32", tmp_path)
    streamed = eval_data(folder_ds, "test")
    held = EvalData(folder_ds.test.take_x(), streamed.y, streamed.task, streamed.labels)
    reports = [
        validate([artifact], data, reference=model, latency_runs=2, runtimes=["litert:xnnpack"])
        for data in (streamed, held)
    ]
    (a,), (b,) = (r.artifacts for r in reports)
    assert a.error is None and a.metric == b.metric and a.agreement == b.agreement
    assert a.max_abs_diff == pytest.approx(b.max_abs_diff, abs=1e-7)
    assert reports[0].data["samples"] == 16
    out = predict_batched(lambda batch: batch.sum(axis=(1, 2, 3)), streamed.x)
    assert out.shape == (16,)
