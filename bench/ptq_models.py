"""The hard models of bench/ptq.py: trained once by our own recipes, cached in the work dir,
and `prepare`: a model with its calibration, test (and validation) data, for every PTQ script.

python bench/ptq_models.py bench/.work/ptq          # train whatever is missing
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ptq_render import DESCRIBED

CIFAR = "image-folder:../shared/data/cifar10-test"
VWW = "../shared/models/vww_96.h5"


def recipe(
    name: str, builder: str, args: dict, epochs: int, size: int = 64, lr: float = 0.002
) -> dict:
    """A from-scratch CIFAR-10 recipe trained to convergence, not the 10-epoch issue recipe.

    64x64 for the MobileNets (stride 32 leaves a 2x2 map, not 1x1), flips and shifts, Adam
    under a cosine schedule to zero: int8 is judged on a model whose ranges have settled.
    """
    return {
        "name": name,
        "dataset": {"name": CIFAR, "image_size": [size, size]},
        "preprocess": {"augment": {"flip": "horizontal", "translation": 0.1}},
        "model": {"builder": builder, "args": args},
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "optimizer": {"name": "adam", "learning_rate": lr},
            "schedule": {"name": "cosine", "warmup_epochs": 1},
            "tensorboard": False,
        },
    }


TRAINED = {
    "mobilenet_v2_035": recipe(
        "ptq-mobilenet_v2_035-64px", "mobilenet_v2", {"alpha": 0.35, "weights": "none"}, 30
    ),
    "mobilenet_v3_small": recipe(
        "ptq-mobilenet_v3_small-64px",
        "mobilenet_v3_small",
        {"alpha": 1.0, "minimalistic": False, "weights": "none"},
        30,
    ),
    # a ViT at CIFAR's own 32x32 (patch 4: 64 tokens); transformers want a gentler rate
    "vit_tiny": recipe("ptq-vit_tiny", "vit_tiny", {}, 40, size=32, lr=0.001),
}
# Built-in recipes (models/*.yaml), trained as shipped unless `changes` says otherwise:
# key -> (recipe file, {dotted.key: value}). vww_transfer*: vww_96.h5's pretrained
# MobileNetV1-0.25 backbone with a 10-class head, fine-tuned on CIFAR-10 (3,000 images; _full:
# every image, the 7k/1k/2k split of the other CIFAR models).
TRANSFER_RECIPE = "models/cifar10-vww-transfer.yaml"
FROM_RECIPES: dict[str, tuple[str, dict]] = {
    "vww_transfer": (TRANSFER_RECIPE, {}),
    "vww_transfer_full": (TRANSFER_RECIPE, {"dataset.max_samples": None}),
    # the same frozen-BatchNorm backbone on other data: MNIST's 10,000 digits (gray, 28x28,
    # to RGB 96x96 inside the model), shifts instead of flips
    "vww_transfer_mnist": (
        TRANSFER_RECIPE,
        {
            "dataset.name": "mnist-idx:../shared/data/mnist-test",
            "dataset.max_samples": None,
            "preprocess.augment": {"translation": 0.05},
        },
    ),
    "resnet8": ("models/cifar10-resnet8.yaml", {}),  # MLPerf Tiny IC, its full 30-epoch recipe
    "lstm_motions": ("models/basic-motions-lstm.yaml", {}),  # fused LSTM, BasicMotions
    "transformer_motions": (  # the same data and recipe, transformer_tiny (attention, LayerNorm)
        "models/basic-motions-lstm.yaml",
        {"model.builder": "transformer_tiny", "model.args": {"d_model": 32, "heads": 2}},
    ),
    "autoencoder": ("models/sensor-anomaly-autoencoder.yaml", {}),  # reconstruction-error AUC
}


def spec(key: str) -> dict:
    if key in FROM_RECIPES:
        import yaml

        path, changes = FROM_RECIPES[key]
        spec = yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())
        spec["name"] = f"ptq-{key}"
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = spec
            for part in parents:
                node = node[part]
            node[last] = value
        return spec
    return json.loads(json.dumps(TRAINED[key]))


def trained_run(work: Path, key: str, epochs: int | None = None) -> Path:
    """The run directory of TRAINED[key], trained now unless its model.keras is already there."""
    from toolkit.core.recipe import parse_recipe
    from toolkit.pipeline.training import run_training

    recipe_spec = spec(key)
    if epochs:
        recipe_spec["train"]["epochs"] = epochs
    run = work / "runs" / recipe_spec["name"]
    if (run / "model.keras").is_file() and (run / "metrics.json").is_file():
        return run
    run_training(
        parse_recipe(recipe_spec, f"bench/ptq_models.py:{key}"), runs_dir=work / "runs", force=True
    )
    return run


def prepare(work: Path, key: str, calib_n: int, limit: int | None, val: bool = False) -> dict:
    """Model, calibration inputs, test inputs (one array) and labels for one model key; with
    `val`, the validation split as EvalData too (what `--precisions auto` chooses on,
    bench/ptq_auto.py; parity labels cost a pass of the model)."""
    from toolkit.core.modelio import load_model
    from toolkit.data.evaldata import (
        calibration_data,
        dataset_for_model,
        eval_data,
        parse_range,
        range_adapter,
    )

    if key == "vww_96":
        loaded = load_model(VWW)
        ds = dataset_for_model(loaded, CIFAR)
        adapt = range_adapter(ds, parse_range("0,1"))
        test = eval_data(ds, "test", limit=limit, adapt=adapt, parity_model=loaded.model)
        vals = eval_data(ds, "val", adapt=adapt, parity_model=loaded.model) if val else None
        what, metric = "vww_96.h5 (third-party), CIFAR-10 at 96x96, parity", "agreement"
        float_metric = None
    else:
        from toolkit.core.tasks import get_task

        run = trained_run(work, key)
        loaded = load_model(run)
        ds = dataset_for_model(loaded, None)
        adapt = range_adapter(ds, None)
        test = eval_data(ds, "test", limit=limit, adapt=adapt)
        vals = eval_data(ds, "val", adapt=adapt) if val else None
        metrics = json.loads((run / "metrics.json").read_text())
        epochs = metrics.get("epochs_run", "?")
        what = DESCRIBED.get(key, f"{key} (our recipe, {epochs} epochs)")
        metric = get_task(test.task).headline
        float_metric = metrics["test"].get(metric)
    calib = calibration_data(ds, calib_n, 0, adapt).astype(np.float32)
    x = np.asarray(test.all_inputs(), np.float32)
    splits = {s: len(getattr(ds, s).y) for s in ("train", "val", "test")}
    return {"key": key, "model": loaded.model, "calib": calib, "x": x, "y": np.asarray(test.y),
            "test": test, "val": vals, "what": what, "metric": metric, "splits": splits,
            "recorded": float_metric, "params": int(loaded.model.count_params())}  # fmt: skip


if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/ptq")
    for key in sys.argv[2:] or [*TRAINED, *FROM_RECIPES]:
        print(key, trained_run(work, key), flush=True)
