"""Detection without training: COCO mAP on known answers, decoding, NMS, agreement, the
synthetic set, box-moving augmentation, and `yolo:` / `coco:` folders with bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.core import detection as det
from toolkit.core.errors import UserError


def _perfect(y: np.ndarray, score: float = 0.9) -> np.ndarray:
    out = np.zeros((len(y), det.MAX_DETECTIONS, 6), np.float32)
    out[:, :, 5] = -1
    for i, rows in enumerate(y):
        rows = rows[rows[:, 0] >= 0]
        out[i, : len(rows), :4], out[i, : len(rows), 4] = rows[:, 1:], score
        out[i, : len(rows), 5] = rows[:, 0]
    return out


LABELS = np.array(
    [[[0, 10, 10, 40, 40], [1, 50, 50, 80, 90]], [[1, 5, 5, 25, 35], [-1, -1, -1, -1, -1]]],
    np.float32,
)


def test_coco_map_is_one_for_the_truth_and_zero_for_misplaced_boxes() -> None:
    perfect = det.coco_metrics(LABELS, _perfect(LABELS), ["a", "b"])
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map50_95"] == pytest.approx(1.0)
    assert perfect["ap50_per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert (perfect["precision"], perfect["recall"]) == (1.0, 1.0)
    shifted = _perfect(LABELS)
    shifted[..., [0, 2]] += 25  # IoU < 0.5 with every truth box
    missed = det.coco_metrics(LABELS, shifted, ["a", "b"])
    assert missed["map50"] == 0.0 and missed["recall"] == 0.0
    wrong_class = _perfect(LABELS)
    wrong_class[:, :3, 5] = 1 - wrong_class[:, :3, 5].clip(0)
    assert det.coco_metrics(LABELS, wrong_class, ["a", "b"])["map50"] < 0.5


def test_half_the_boxes_found_gives_half_the_recall() -> None:
    found = _perfect(LABELS)
    found[0, 1] = (0, 0, 0, 0, 0, -1)  # drop the second box of image 0
    metrics = det.coco_metrics(LABELS, found, ["a", "b"])
    assert metrics["recall"] == pytest.approx(2 / 3) and metrics["precision"] == 1.0
    assert metrics["ap50_per_class"]["a"] == pytest.approx(1.0)
    assert metrics["ap50_per_class"]["b"] == pytest.approx(0.5, abs=0.02)


def _box_outputs(y: np.ndarray, classes: int, grid: int = 12, stride: int = 8) -> np.ndarray:
    """Raw box-head outputs that put each truth box at its centre cell, flat."""
    boxes = np.zeros((len(y), grid, grid, 4), np.float32)
    scores = np.zeros((len(y), grid, grid, classes), np.float32)
    for i, rows in enumerate(y):
        for c, x1, y1, x2, y2 in rows[rows[:, 0] >= 0]:
            r, q = int((y1 + y2) / 2 // stride), int((x1 + x2) / 2 // stride)
            boxes[i, r, q], scores[i, r, q, int(c)] = (x1, y1, x2, y2), 0.95
            scores[i, r, min(q + 1, grid - 1), int(c)] = 0.9  # a duplicate NMS must remove
            boxes[i, r, min(q + 1, grid - 1)] = (x1 + 1, y1, x2 + 1, y2)
    return np.concatenate([boxes.reshape(len(y), -1), scores.reshape(len(y), -1)], axis=1)


def test_decode_layouts_nms_and_map() -> None:
    flat = _box_outputs(LABELS, classes=2)
    assert det.layout(flat.shape[1], 2, (96, 96)) == ("boxes", 12, 12, 8)
    assert det.layout(12 * 12 * 3, 2, (96, 96)) == ("centroids", 12, 12, 8)
    with pytest.raises(UserError, match="fit neither"):
        det.layout(1001, 2, (96, 96))
    decoded = det.decode(flat, (96, 96, 1), 2)
    assert decoded.shape == (2, det.MAX_DETECTIONS, 6)
    kept = decoded[0][decoded[0][:, 5] >= 0]
    assert len(kept) == 2  # the shifted duplicates were suppressed
    assert det.coco_metrics(LABELS, decoded, ["a", "b"])["map50"] == pytest.approx(1.0)


def test_fomo_decode_boxes_connected_cells() -> None:
    probs = np.zeros((1, 12, 12, 3), np.float32)
    probs[..., 0] = 1
    probs[0, 2:4, 3:6] = (0.1, 0.8, 0.1)  # a 2x3 block of class 0 cells
    rows = det.decode(probs, (96, 96, 1), 2)[0]
    rows = rows[rows[:, 5] >= 0]
    assert rows.tolist() == [[24, 16, 48, 32, pytest.approx(0.8), 0]]


def test_box_agreement() -> None:
    ref = _perfect(LABELS)
    assert det.box_agreement(ref, ref) == 1.0
    empty = np.zeros_like(ref)
    empty[..., 5] = -1
    assert det.box_agreement(empty, empty) == 1.0
    assert det.box_agreement(empty, ref) == 0.0
    half = ref.copy()
    half[0, :2, 5] = -1  # drops 2 of 3 boxes: 2 * 1 / (1 + 3)
    assert det.box_agreement(half, ref) == pytest.approx(0.5)


def test_synthetic_set_is_deterministic_and_in_bounds() -> None:
    from toolkit.data.detection_synth import CANVAS, synth_detection

    x, y = synth_detection(20, seed=3)
    x2, y2 = synth_detection(20, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(y, synth_detection(20, seed=4)[1])
    rows = y[y[..., 0] >= 0]
    assert len(rows) >= 20 and set(np.unique(rows[:, 0])) <= {0, 1, 2}
    assert rows[:, 1:].min() >= 0 and rows[:, 1:].max() <= CANVAS
    assert np.all(rows[:, 3] - rows[:, 1] >= 9) and np.all(rows[:, 4] > rows[:, 2])


def test_augment_moves_boxes_with_the_image() -> None:
    from toolkit.train.detection import augment, encode

    x = np.zeros((96, 96, 1), np.float32)
    x[20:40, 30:50] = 255
    rows = np.array([[1, 30, 20, 50, 40], [-1, -1, -1, -1, -1]], np.float32)
    cfg = SimpleNamespace(flip="horizontal", zoom=0.2, translation=0.1, contrast=0.0)
    for seed in range(6):
        out, moved = augment(x, rows, cfg, np.random.default_rng(seed))
        ys, xs = np.nonzero(out[..., 0] > 127)
        ink = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert moved[0, 0] == 1 and moved[1, 0] == -1
        assert np.allclose(moved[0, 1:], ink, atol=1.5), (seed, moved[0], ink)
    targets = encode(rows, (12, 12, 8), 2, "boxes")
    assert targets["scores"][3, 5, 1] == 1 and targets["boxes"][3, 5].tolist() == [
        1,
        30,
        20,
        50,
        40,
    ]
    fomo = encode(rows, (12, 12, 8), 2, "centroids")["class_map"]
    assert fomo[3, 4, 2] == 1 and fomo[0, 0, 0] == 1 and fomo.sum() == 144


def _png(path: Path, seed: int, size: int = 32) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _yolo(root: Path) -> Path:
    for i in range(5):
        _png(root / "images" / f"im{i}.png", i)
    labels = root / "labels"
    labels.mkdir()
    (labels / "im0.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.2\n")
    (labels / "im1.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.95 0.5 0.3 0.2\n")  # 2nd: x2 > 1
    (labels / "im2.txt").write_text("")
    (labels / "im3.txt").write_text("0 0.3 0.3 0.2 0.2\n")  # im4: no label file
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


def test_yolo_folder_loads_counts_skips_and_background(tmp_path) -> None:
    from toolkit.data import DataSpec, load_dataset

    root = _yolo(tmp_path / "y")
    ds = load_dataset(DataSpec(f"yolo:{root}", image_size=(64, 64), val_fraction=0.2,
                               test_fraction=0.2))  # fmt: skip
    assert ds.task == "detection" and ds.labels == ["cat", "dog"] and ds.input_shape == (64, 64, 1)
    assert ds.notes == [f"yolo {root}: 5 images, 4 boxes; 1 boxes out of range (skipped), "
                        "2 background images (no boxes)"]  # fmt: skip
    every = np.concatenate([s.y for s in (ds.train, ds.val, ds.test)])
    box = every[(every[..., 0] == 0) & (np.isclose(every[..., 1], 24))]
    assert box.tolist() == [[0, 24, 24, 40, 40]]  # 0.5 +- 0.125 of 64 px
    assert ds.test.take_x().shape[1:] == (64, 64, 1)  # streamed from the files


def test_yolo_and_coco_bad_input_is_one_clear_error(tmp_path) -> None:
    from toolkit.data import DataSpec, load_dataset
    from toolkit.data.detection_files import load_coco

    root = _yolo(tmp_path / "y")
    (root / "labels" / "im2.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(
        UserError, match=r"labels/im2.txt has class id 7, but the class list names 2"
    ):
        load_dataset(DataSpec(f"yolo:{root}"))
    (root / "labels" / "im2.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(UserError, match=r"im2.txt line 1: expected 'class cx cy w h'"):
        load_dataset(DataSpec(f"yolo:{root}"))
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match="no image files"):
        load_dataset(DataSpec(f"yolo:{tmp_path / 'empty'}"))
    with pytest.raises(UserError, match="expected an images/ folder"):
        load_dataset(DataSpec(f"yolo:{tmp_path}"))

    _png(tmp_path / "c" / "a.png", 0)
    _png(tmp_path / "c" / "images" / "b.png", 1)
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32},
                      {"id": 2, "file_name": "b.png", "width": 32, "height": 32}],
           "categories": [{"id": 3, "name": "x"}, {"id": 9, "name": "y"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [4, 4, 8, 8]},
                           {"id": 2, "image_id": 2, "category_id": 3,
                            "bbox": [30, 4, 8, 8]}]}  # fmt: skip
    path = tmp_path / "c" / "ann.json"
    path.write_text(json.dumps(doc))
    source = load_coco(DataSpec(f"coco:{path}"), str(path))
    assert source.labels == ["x", "y"] and source.y[0, 0].tolist() == [1, 4, 4, 12, 12]
    assert "1 boxes out of range (skipped), 1 background images" in source.notes[0]
    doc["annotations"][0]["category_id"] = 5
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="category 5, which the file does not list"):
        load_dataset(DataSpec(f"coco:{path}"))
    doc["annotations"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="no boxes in any of the 2 images"):
        load_dataset(DataSpec(f"coco:{path}"))


def test_cli_says_one_line_and_exits_2_on_an_empty_yolo_folder(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndataset: {{name: 'yolo:{tmp_path}'}}\nmodel: {{builder: fomo}}\n")
    done = subprocess.run([sys.executable, "-m", "toolkit", "train", str(recipe)],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"no image files in {tmp_path / 'images'}")
    assert "Traceback" not in done.stderr


def test_one_line_start_on_a_yolo_folder_picks_the_box_detector(tmp_path) -> None:
    from toolkit.train.autorecipe import auto_recipe

    root = _yolo(tmp_path / "y")
    for i in range(5, 20):  # enough images for three splits
        _png(root / "images" / f"im{i}.png", i)
        (root / "labels" / f"im{i}.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    auto = auto_recipe(f"yolo:{root}", image_size=44)
    assert auto.recipe.model.builder == "box_detector"
    assert auto.recipe.dataset.image_size == (48, 48)  # rounded to the stride-8 grid
    augment = auto.recipe.preprocess.augment
    assert augment.rotation == 0 and augment.translation == 0.1 and augment.zoom == 0.1


def test_bundle_decoder_matches_the_toolkit_decoder() -> None:
    """A bundle decodes without the toolkit or scipy (package/bundle/detect.py): same boxes."""
    from toolkit.package.bundle import detect as bundle

    rng = np.random.default_rng(0)
    flat = _box_outputs(LABELS, classes=2)
    flat[:, 12 * 12 * 4 :] += rng.uniform(0, 0.3, flat[:, 12 * 12 * 4 :].shape)  # candidates
    logits = rng.normal(0, 2, (3, 12, 12, 3))
    logits[..., 0] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for raw, classes in ((flat, 2), (probs.reshape(3, -1), 2)):
        mine = bundle.decode(raw, (96, 96), classes)
        ours = det.decode(raw, (96, 96, 1), classes)
        assert sum(len(r) for r in mine) > 3
        for got, want in zip(mine, ours, strict=True):
            want = want[want[:, 5] >= 0]
            assert np.allclose(got, want, atol=1e-5), (got, want)
