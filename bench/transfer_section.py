"""The transfer-learning section of bench/RESULTS.md, from samples/transfer_vww_cifar10.py's JSON.

    python bench/transfer_section.py [--run] [--json samples/transfer_vww_cifar10.json]

`--run` first runs the sample (about 5 minutes on 2 cores: two 8-epoch trainings and two
exports); without it the last JSON the sample wrote is rendered. Prints the markdown section.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "samples" / "transfer_vww_cifar10.json"


def run_sample(out: Path, max_samples: int = 3000) -> None:
    """The sample itself, as a user runs it; its runs go to bench/.work."""
    command = [sys.executable, str(REPO / "samples" / "transfer_vww_cifar10.py")]
    command += ["--max-samples", str(max_samples), "--out", str(out)]
    command += ["--runs-dir", str(REPO / "bench" / ".work" / "transfer")]
    subprocess.run(command, check=True, cwd=REPO)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def section(data: dict) -> list[str]:
    """Markdown lines: transfer vs scratch at equal epochs, then the int8 export of the winner."""
    t, s, setup = data["transfer"], data["scratch"], data["setup"]
    margin = t["test_accuracy"] - s["test_accuracy"]
    fp32 = t.get("tflite-fp32/xnnpack_accuracy")
    lines = [
        "## Transfer learning: vww_96.h5 -> CIFAR-10 vs the same network from scratch",
        "",
        f"`{setup['command']}` (or `python bench/transfer_section.py --run`). Data: "
        f"{setup['data']}. Both train MobileNetV1-0.25 at 96x96 for {setup['epoch_budget']} "
        "epochs: the transfer run 3 with the pretrained backbone frozen then 5 fine-tuning "
        "(BatchNorm frozen); the scratch run the same architecture from random weights, "
        "BatchNorm momentum 0.9 so its statistics keep up on this short budget.",
        "",
        "| model | test accuracy | val accuracy | train accuracy (last epoch) | seconds |",
        "|---|---|---|---|---|",
    ]
    for label, row in (("transfer (vww_96.h5)", t), ("from scratch", s)):
        lines.append(
            f"| {label} | {_pct(row['test_accuracy'])} | {_pct(row['val_accuracy'])} | "
            f"{_pct(row.get('train_accuracy_last_epoch'))} | {row['seconds']} |"
        )
    lines += [
        "",
        f"Margin: {100 * margin:+.1f} percentage points on the test split "
        f"({'transfer wins' if margin > 0 else 'transfer does NOT win'}).",
        "",
        "Transfer model exported (`run_export`, 256 calibration samples), test split, LiteRT:",
        "",
        "| artifact | XNNPACK accuracy | reference-kernel accuracy | drop vs fp32 (pp) | KiB |",
        "|---|---|---|---|---|",
    ]
    for prefix, label in (("", ""), ("auto:", " (chosen by `--precisions auto --max-drop 0.01`)")):
        for name in ("tflite-fp32", "tflite-int8"):
            xnn = t.get(f"{prefix}{name}/xnnpack_accuracy")
            if xnn is None:
                continue
            ref = t.get(f"{prefix}{name}/reference_accuracy")
            drops = [fp32 - v for v in (xnn, ref) if v is not None and fp32 is not None]
            worst = f"{100 * max(drops):+.2f}" if drops else "—"
            lines.append(
                f"| {name}{label} | {_pct(xnn)} | {_pct(ref)} | {worst} | "
                f"{t.get(f'{prefix}{name}_kb', '—')} |"
            )
    lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--run", action="store_true", help="run the sample first")
    args = parser.parse_args()
    if args.run:
        run_sample(args.json)
    if not args.json.is_file():
        print(f"no {args.json}: run with --run (needs ../shared)", file=sys.stderr)
        return 2
    print("\n".join(section(json.loads(args.json.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
