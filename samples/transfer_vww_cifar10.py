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


SCRATCH_BN_MOMENTUM = 0.9


def _fast_batchnorm(momentum: float) -> object:
    """A callback giving the from-scratch baseline BatchNorm statistics that keep up.

    Keras' default momentum 0.99 leaves the moving statistics far behind the weights on a
    budget of a few hundred steps: the scratch net then predicts one class at inference even
    while it learns in training mode. 0.9 gives the baseline its fair chance; the transfer
    model keeps its pretrained BatchNorm frozen, so this does not touch it.
    """
    import keras

    class FastBatchNorm(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            stack = list(self.model.layers)
            while stack:
                layer = stack.pop()
                stack.extend(getattr(layer, "layers", []))
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = momentum

    return FastBatchNorm()


def _record(out: dict, report: object, prefix: str) -> None:
    """Accuracy and size of each TFLite artifact, per LiteRT kernel set (XNNPACK, reference)."""
    for row in report.artifacts:  # type: ignore[attr-defined]
        if row.runtime == "litert":
            out[f"{prefix}{row.name}/{row.provider}_accuracy"] = row.metric["value"]
            out[f"{prefix}{row.name}_kb"] = round(row.size_bytes / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-samples", type=int, default=3000)
    parser.add_argument("--runs-dir", default=str(REPO / "runs" / "transfer-sample"))
    parser.add_argument("--out", default=str(REPO / "samples" / "transfer_vww_cifar10.json"))
    args = parser.parse_args()

    from toolkit.core.recipe import load_recipe
    from toolkit.pipeline.exporting import run_export
    from toolkit.train.stage import train

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
        extra = [_fast_batchnorm(SCRATCH_BN_MOMENTUM)] if which == "scratch" else None
        res = train(r, args.runs_dir, force=True, extra_callbacks=extra)
        results[which] = {
            "test_accuracy": res.metrics["test"]["accuracy"],
            "val_accuracy": res.metrics["val"]["accuracy"],
            "train_accuracy_last_epoch": res.history.get("accuracy", [None])[-1],
            "epochs": len(res.history.get("epoch", [])),
            "seconds": round(time.perf_counter() - started, 1),
            "run": str(res.run_dir),
        }
        print(which, results[which], flush=True)

    run = Path(results["transfer"]["run"])
    _, report = run_export(
        run, formats=["tflite"], precisions=["fp32", "int8"], force=True, latency_runs=20,
    )  # fmt: skip
    _record(results["transfer"], report, "")
    # The product's answer to "int8 within 1 pp": the budget ladder picks the cheapest rung.
    _, report = run_export(
        run, formats=["tflite"], precisions=["auto"], max_drop=0.01, force=True,
        latency_runs=20, out=run / "export-auto",
    )  # fmt: skip
    _record(results["transfer"], report, "auto:")
    if report.budget:
        results["transfer"]["auto_chosen"] = report.budget
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
        f"({budget} epochs each); int8 {t.get('tflite-int8/xnnpack_accuracy')} vs float "
        f"{t.get('tflite-fp32/xnnpack_accuracy')}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
