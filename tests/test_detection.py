"""Detection end to end on tiny deterministic data: train (box detector, FOMO), convert to
int8 TFLite and ONNX, validate by mAP in LiteRT, ONNX Runtime and TFLM, the one-tensor layout's
int8 cost, the budget ladder on mAP, and a `yolo:` folder written here. One training per
builder, shared by the module."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

BOX_ARGS = {"widths": [8, 16, 24, 32], "extra": 1, "head": 32}


def _recipe(
    root: Path, name: str, dataset: dict, builder: str, args: dict, epochs: int, lr: float = 0.006
) -> Path:
    recipe = {
        "name": name,
        "dataset": {"val_fraction": 0.15, "test_fraction": 0.2, **dataset},
        "preprocess": {"normalize": "rescale", "augment": {"translation": 0.1, "zoom": 0.1}},
        "model": {"builder": builder, "args": args},
        "train": {"epochs": epochs, "batch_size": 32, "tensorboard": False,
                  "optimizer": {"learning_rate": lr}, "schedule": {"name": "cosine"}},
    }  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def box_run(tmp_path_factory):
    import toolkit

    root = tmp_path_factory.mktemp("det")
    data = {"name": "detect-synth", "max_samples": 420}
    result = toolkit.train(_recipe(root, "box", data, "box_detector", BOX_ARGS, 12), root / "runs")
    return result


@pytest.fixture(scope="module")
def box_export(box_run):
    from toolkit.pipeline.exporting import run_export

    out = box_run.run_dir / "export"
    _, report = run_export(box_run.run_dir, formats=["tflite", "onnx"], precisions=["fp32", "int8"],
                           out=out, latency_runs=0, jobs=2)  # fmt: skip
    return out, report


def test_box_detector_learns_and_reports_coco_metrics(box_run) -> None:
    test = box_run.metrics["test"]
    assert box_run.metrics["task"] == "detection" and box_run.headline[0] == "map50"
    assert test["map50"] > 0.4, test  # 0.59 measured; an untrained net scores ~0
    assert 0 < test["map50_95"] < test["map50"]
    assert set(test["ap50_per_class"]) == {"0", "1", "2"}
    assert 0 < test["precision"] <= 1 and 0 < test["recall"] <= 1


def test_int8_keeps_map_in_every_runtime_with_separate_scales(box_run, box_export) -> None:
    from toolkit.runtimes import open_runner

    out, report = box_export
    assert report.reference["metric"]["name"] == "map50"
    ref = report.reference["metric"]["value"]
    assert ref == pytest.approx(box_run.metrics["test"]["map50"], abs=1e-6)
    rows = {(r.name, r.runtime, r.provider): r for r in report.artifacts}
    assert {(n, rt) for n, rt, _ in rows} >= {("tflite-int8", "litert"), ("tflite-int8", "tflm"),
                                              ("onnx-int8", "onnxruntime")}  # fmt: skip
    for (name, runtime, _), row in rows.items():
        assert row.error is None, (name, runtime, row.error)
        assert row.metric["name"] == "map50" and row.metric["value"] is not None
        limit = 1e-6 if name.endswith("fp32") else 0.03  # int8: within 3 points on this tiny net
        assert abs(row.drop) <= limit, (name, runtime, row.drop)
        assert row.agreement > (0.999 if name.endswith("fp32") else 0.85), (name, row.agreement)
    with open_runner(out / "model-int8.tflite") as runner:
        boxes, scores = runner.outputs
        assert (boxes.name, scores.name) == ("boxes", "scores")
        assert boxes.quantization[0] > 20 * scores.quantization[0]  # pixels vs probabilities


def test_one_concatenated_output_costs_int8_map(box_run, box_export, tmp_path) -> None:
    from toolkit.builders.detection import concatenated
    from toolkit.convert import convert
    from toolkit.core.modelio import load_model
    from toolkit.data import load_dataset
    from toolkit.data.evaldata import EvalData
    from toolkit.validate.stage import validate

    model = load_model(box_run.run_dir).model
    joined = concatenated(model)
    ds = load_dataset(toolkit_spec(box_run))
    calib = ds.train.take_x(128)
    int8 = convert(joined, "tflite-int8", tmp_path, calibration=calib)
    data = EvalData(ds.test.take_x(), ds.test.y, "detection", ds.labels)
    report = validate([int8], data, reference=joined, latency_runs=0, progress=False,
                      runtimes=["litert:xnnpack"])  # fmt: skip
    separate = box_export[1].reference["metric"]["value"]
    assert report.reference["metric"]["value"] == pytest.approx(separate, abs=1e-6)
    (row,) = report.artifacts
    split_int8 = next(r for r in box_export[1].artifacts
                      if r.name == "tflite-int8" and r.provider == "xnnpack")  # fmt: skip
    assert row.metric["value"] < split_int8.metric["value"] - 0.1, (row.metric, split_int8.metric)


def toolkit_spec(run):
    from toolkit.core.recipe import load_recipe

    return load_recipe(str(run.run_dir / "recipe.yaml")).dataset.spec()


def test_precisions_auto_ladder_chooses_on_map(box_run, tmp_path) -> None:
    from toolkit.pipeline.exporting import run_export

    _, report = run_export(box_run.run_dir, formats=["tflite"], precisions=["auto"],
                           max_drop=0.05, out=tmp_path / "auto", latency_runs=0)  # fmt: skip
    tflite = report.budget["formats"]["tflite"]
    first = tflite["ladder"][0]  # full int8 is the cheapest rung; mAP decides if it stays
    assert first["name"] == "tflite-int8" and 0 < first["metric"] <= 1, first
    assert tflite["chosen"] == "tflite-int8" and first["within"], tflite
    assert {r.metric["name"] for r in report.artifacts} == {"map50"}


def _write_yolo(root: Path, n: int) -> Path:
    from PIL import Image

    from toolkit.data.detection_synth import synth_detection

    x, y = synth_detection(n, seed=7)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("zero\none\ntwo\n")
    for i, (image, rows) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(image[..., 0].astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        lines = [f"{int(c)} {(a + b) / 192:.5f} {(d + e) / 192:.5f} {(b - a) / 96:.5f} "
                 f"{(e - d) / 96:.5f}" for c, a, d, b, e in rows[rows[:, 0] >= 0]]  # fmt: skip
        if i % 10:  # every tenth image has no label file: background
            (root / "labels" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_yolo_folder_trains_fomo_and_validates_int8(tmp_path) -> None:
    import toolkit
    from toolkit.pipeline.exporting import run_export

    root = _write_yolo(tmp_path / "yolo", 300)
    data = {"name": f"yolo:{root}"}
    args = {"widths": [8, 16, 24, 32], "extra": 1}
    result = toolkit.train(_recipe(tmp_path, "fomo", data, "fomo", args, 10, lr=0.01),
                           tmp_path / "runs")  # fmt: skip
    assert result.metrics["task"] == "detection" and result.metrics["skipped_files"] == 0
    assert result.metrics["test"]["map50"] > 0.1, result.metrics["test"]  # 0.24 measured
    _, report = run_export(result.run_dir, formats=["tflite"], precisions=["fp32", "int8"],
                           out=tmp_path / "export", latency_runs=0, jobs=2)  # fmt: skip
    rows = {(r.name, r.runtime): r for r in report.artifacts}
    assert rows[("tflite-int8", "litert")].error is None
    assert abs(rows[("tflite-int8", "litert")].drop) <= 0.05
    assert rows[("tflite-int8", "tflm")].metric["value"] is not None


@pytest.fixture(scope="module")
def pi_bundle(box_run, box_export):
    """The raspberry-pi bundle of the tiny box detector and 16 canvases saved as PNG."""
    from PIL import Image

    from toolkit.data.detection_synth import synth_detection
    from toolkit.package.stage import package

    out, _ = box_export
    bundle = package(out, "raspberry-pi", out=box_run.run_dir / "bundles", ignore_budget=True)
    x, _ = synth_detection(16, seed=11)  # the tiny net finds some boxes at score 0.5
    x = x.astype(np.uint8).astype(np.float32)  # what the PNGs hold
    paths = []
    for i, image in enumerate(x):
        paths.append(box_run.run_dir / f"canvas{i}.png")
        Image.fromarray(image[..., 0].astype(np.uint8)).save(paths[-1])
    return bundle.bundle_dir, x, paths


def test_raspberry_pi_bundle_prints_and_draws_the_boxes_predict_finds(box_export, pi_bundle):
    import json
    import subprocess
    import sys

    from toolkit.core import detection as det
    from toolkit.runtimes import open_runner

    bundle, x, paths = pi_bundle
    assert (bundle / "detect.py").is_file()
    run = [sys.executable, str(bundle / "run.py")]
    done = subprocess.run([*run, "--selftest"], capture_output=True, text=True)
    assert done.returncode == 0 and "selftest passed" in done.stdout, done.stdout + done.stderr
    drawn = bundle.parent / "drawn"
    done = subprocess.run([*run, *map(str, paths), "--json", "--draw", str(drawn)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    with open_runner(box_export[0] / "model-int8.tflite") as runner:
        rows = det.decode(runner.predict(x), x.shape[1:], 3)
    for item, row in zip(printed, rows, strict=True):
        want = det.boxes_view(row, ["0", "1", "2"], 0)["boxes"]
        assert [(b["label"], b["box"]) for b in item["boxes"]] == [
            (b["label"], b["box"]) for b in want
        ]
        assert item["boxes"] == [] or Path(item["drawn"]).is_file()
    assert sum(len(item["boxes"]) for item in printed) >= 1


def test_the_bundle_finds_the_same_boxes_on_an_emulated_raspberry_pi(pi_bundle) -> None:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("pi_compare", REPO / "pi" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    built = compare.build_sysroot(sys.executable)
    if built.returncode == 75:
        pytest.skip(f"emulated Raspberry Pi sysroot cannot be built here: {built.stderr[-200:]}")
    assert built.returncode == 0, built.stderr
    bundle, _, paths = pi_bundle
    args = [*map(str, paths[:8]), "--json"]
    here = compare.run_here(bundle, *args)
    pi = compare.run_pi(bundle, *args, sysroot=Path(built.stdout.strip().splitlines()[-1]))
    assert here.returncode == 0 and pi.returncode == 0, pi.stderr[-400:]
    assert json.loads(pi.stdout) == json.loads(here.stdout)  # boxes, classes and scores


def test_bundle_serve_py_answers_with_the_boxes_run_py_prints(pi_bundle) -> None:
    import json
    import subprocess

    from fastapi.testclient import TestClient

    from toolkit.package.bundle import load_run_module

    bundle, _, paths = pi_bundle
    serve = load_run_module(bundle / "serve.py")
    png = {"content-type": "image/png"}
    with TestClient(serve.create_app(bundle)) as client:
        served = [client.post("/v1/predict", content=p.read_bytes(), headers=png) for p in paths]
    assert all(r.status_code == 200 for r in served), served[0].text
    command = [sys.executable, str(bundle / "run.py"), *map(str, paths), "--json"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    want = [item["boxes"] for item in json.loads(printed)]
    assert [r.json()["predictions"][0]["boxes"] for r in served] == want
    assert sum(map(len, want)) >= 1
