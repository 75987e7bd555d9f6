"""What int8 does to a detector's mAP: boxes and scores as two outputs vs one concatenated.

    python samples/detection/int8_outputs.py runs/detect-synth [--out /tmp/int8-outputs]

Converts the run's model (and, for a box detector, the same weights with one concatenated
output) to tflite-int8 and onnx-int8, validates each by mAP@0.5 on the run's test split in
LiteRT (XNNPACK) and ONNX Runtime (CPU), and prints one markdown table. docs/detection.md
quotes its numbers.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def measure(run: Path, out: Path) -> list[dict]:
    from toolkit.builders.detection import concatenated
    from toolkit.convert import convert
    from toolkit.core.modelio import load_model
    from toolkit.core.recipe import load_recipe
    from toolkit.data import load_dataset
    from toolkit.data.evaldata import EvalData
    from toolkit.validate.stage import validate

    model = load_model(run).model
    ds = load_dataset(load_recipe(str(run / "recipe.yaml")).dataset.spec())
    calibration = ds.train.take_x(256)
    data = EvalData(ds.test.take_x(), ds.test.y, "detection", ds.labels, name="test split")
    layouts = {"separate": model}
    if "boxes" in model.output_names:
        layouts["concatenated"] = concatenated(model)
    rows = []
    for layout, net in layouts.items():
        where = out / layout
        where.mkdir(parents=True, exist_ok=True)
        paths = [convert(net, name, where, calibration=calibration)
                 for name in ("tflite-int8", "onnx-int8")]  # fmt: skip
        report = validate(paths, data, reference=net, latency_runs=0, progress=False,
                          runtimes=["litert:xnnpack", "onnxruntime:cpu"])  # fmt: skip
        ref = report.reference["metric"]["value"]
        for row in report.artifacts:
            rows.append({"layout": layout, "outputs": len(net.outputs),
                         "artifact": row.name, "runtime": row.where, "float": ref,
                         "int8": row.metric["value"], "drop": row.drop})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="int8-outputs-"))
    rows = measure(args.run, out)
    print("| layout | outputs | artifact | runtime | float mAP@0.5 | int8 mAP@0.5 | drop (pt) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['outputs']} | {r['artifact']} | {r['runtime']} | "
              f"{r['float']:.4f} | {r['int8']:.4f} | {100 * r['drop']:+.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
