"""The hard models of bench/ptq.py: trained once by our own recipes, cached in the work dir.

python bench/ptq_models.py bench/.work/ptq          # train whatever is missing
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CIFAR = "image-folder:../shared/data/cifar10-test"
VWW = "../shared/models/vww_96.h5"


def recipe(name: str, builder: str, args: dict, epochs: int) -> dict:
    """Our CIFAR-10 32x32 recipe (own_data.py's issue recipe: Adam 0.002, batch 64)."""
    return {
        "name": name,
        "dataset": {"name": CIFAR, "image_size": [32, 32]},
        "model": {"builder": builder, "args": {"weights": "none", **args}},
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "optimizer": {"name": "adam", "learning_rate": 0.002},
            "tensorboard": False,
        },
    }


TRAINED = {
    "mobilenet_v2_035": recipe("ptq-mobilenet_v2_035", "mobilenet_v2", {"alpha": 0.35}, 10),
    "mobilenet_v3_small": recipe(
        "ptq-mobilenet_v3_small", "mobilenet_v3_small", {"alpha": 1.0, "minimalistic": False}, 10
    ),
}
# A pretrained depthwise-separable net: vww_96.h5's MobileNetV1-0.25 backbone with a 10-class
# head, fine-tuned on CIFAR-10 by the built-in recipe (3,000 images; see bench/RESULTS.md).
TRANSFER_RECIPE = "models/cifar10-vww-transfer.yaml"


def _spec(key: str) -> dict:
    if key in ("vww_transfer", "vww_transfer_full"):
        import yaml

        spec = yaml.safe_load((Path(__file__).resolve().parents[1] / TRANSFER_RECIPE).read_text())
        spec["name"] = f"ptq-{key}"
        if key == "vww_transfer_full":  # every image: the 7k/1k/2k split of the other models
            spec["dataset"]["max_samples"] = None
        return spec
    return json.loads(json.dumps(TRAINED[key]))


def trained_run(work: Path, key: str, epochs: int | None = None) -> Path:
    """The run directory of TRAINED[key], trained now unless its model.keras is already there."""
    from toolkit.core.recipe import parse_recipe
    from toolkit.pipeline.training import run_training

    spec = _spec(key)
    if epochs:
        spec["train"]["epochs"] = epochs
    run = work / "runs" / spec["name"]
    if (run / "model.keras").is_file() and (run / "metrics.json").is_file():
        return run
    run_training(
        parse_recipe(spec, f"bench/ptq_models.py:{key}"), runs_dir=work / "runs", force=True
    )
    return run


if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/ptq")
    for key in sys.argv[2:] or [*TRAINED, "vww_transfer"]:
        print(key, trained_run(work, key), flush=True)
