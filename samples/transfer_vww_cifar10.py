"""Transfer learning from a real pretrained backbone vs the same network from scratch.

Trains models/cifar10-vww-transfer.yaml (MLPerf Tiny's vww_96.h5, MobileNetV1-0.25 pretrained
on COCO person/no-person, cut at its pooled features, new 10-class head) on a CIFAR-10 subset,
then the same architecture with fresh weights for the same total number of epochs, exports the
transfer model to int8 TFLite and measures it in LiteRT. Needs ../shared (skips otherwise).

    .venv/bin/python samples/transfer_vww_cifar10.py [--max-samples 3000] [--out samples/...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "models" / "cifar10-vww-transfer.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-samples", type=int, default=3000)
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "transfer-sample"))
    parser.add_argument("--out", default=str(REPO / "samples" / "transfer_vww_cifar10.json"))
    args = parser.parse_args()

    from toolkit.pipeline import run_export
    from toolkit.recipe import load_recipe
    from toolkit.train import train

    recipe = load_recipe(str(RECIPE))
    backbone = (REPO / recipe.transfer.backbone).resolve()
    data = (REPO / recipe.dataset.name.partition(":")[2]).resolve()
    if not backbone.is_file() or not data.is_dir():
        print(f"skipped: needs {backbone} and {data} (../shared)")
        return 0
    recipe = recipe.with_overrides({
        "dataset.name": f"image-folder:{data}",
        "dataset.max_samples": args.max_samples,
        "transfer.backbone": str(backbone),
    })  # fmt: skip
    budget = recipe.train.epochs + recipe.transfer.fine_tune_epochs
    scratch = recipe.with_overrides({
        "name": "cifar10-vww-scratch", "train.epochs": budget, "transfer.pretrained": False,
        "transfer.fine_tune_epochs": 0,
    })  # fmt: skip

    results = {}
    for which, r in (("transfer", recipe), ("scratch", scratch)):
        started = time.perf_counter()
        res = train(r, args.runs_dir, force=True)
        results[which] = {
            "test_accuracy": res.metrics["test"]["accuracy"],
            "val_accuracy": res.metrics["val"]["accuracy"],
            "epochs": len(res.history.get("epoch", [])),
            "seconds": round(time.perf_counter() - started, 1),
            "run": str(res.run_dir),
        }
        print(which, results[which], flush=True)

    _, report = run_export(
        results["transfer"]["run"], formats=["tflite"], precisions=["fp32", "int8"],
        force=True, latency_runs=20,
    )  # fmt: skip
    for row in report.artifacts:
        if row.runtime == "litert" and row.provider == "xnnpack":
            results["transfer"][f"{row.name}_accuracy"] = row.metric["value"]
            results["transfer"][f"{row.name}_kb"] = round(row.size_bytes / 1024, 1)
    results["setup"] = {
        "data": f"CIFAR-10 test folder, {args.max_samples} images stratified, "
        "70/10/20 train/val/test split (seed 0)",
        "epoch_budget": budget,
        "command": f"python samples/transfer_vww_cifar10.py --max-samples {args.max_samples}",
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    t, s = results["transfer"], results["scratch"]
    print(
        f"transfer {t['test_accuracy']:.3f} vs scratch {s['test_accuracy']:.3f} "
        f"({budget} epochs each); int8 {t.get('tflite-int8_accuracy')} vs float "
        f"{t.get('tflite-fp32_accuracy')}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
