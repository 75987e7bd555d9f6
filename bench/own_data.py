"""Training on your own data (issue #21): the one-line start and the BatchNorm fix, measured.

    python bench/own_data.py --results bench/RESULTS.md     # ~30-45 min on 2 shared cores
    python bench/own_data.py --out own_data.md --skip-default   # the momentum comparison only

1. `keras-edge train --data image-folder:../shared/data/cifar10-test` with every default, in a
   child process: wall time, the builder/size/epochs it chose, test accuracy, `uptime` load
   before and after (the machine is shared; the load says how much it was).
2. The issue's recipe (MobileNetV2 alpha 0.35 from scratch, 32x32, Adam 0.002, batch 64,
   10 epochs) through `keras-edge train`, against a plain Keras loop on the same train/val
   split with BatchNorm momentum 0.9 (what the issue's author checked by hand).
   `--with-old` adds the same recipe with `bn_momentum: 0.999` (keras.applications' own).
Writes a markdown section; with --results it replaces its section in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CIFAR = "image-folder:../shared/data/cifar10-test"
TITLE = "## Training on your own data (one-line start, BatchNorm momentum)"
KEPT = ["(Measured by an earlier run of this script; kept with `--keep-default`.)", ""]
ISSUE_RECIPE = {
    "name": "issue21-mobilenet_v2",
    "dataset": {"name": CIFAR, "image_size": [32, 32]},
    "model": {"builder": "mobilenet_v2", "args": {"alpha": 0.35, "weights": "none"}},
    "train": {
        "epochs": 10,
        "batch_size": 64,
        "optimizer": {"name": "adam", "learning_rate": 0.002},
        "tensorboard": False,
    },
}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def keras_edge(args: list[str], log: Path) -> tuple[float, int, str, float]:
    """`keras-edge ARGS` in a child process from the repo root: (wall s, exit code, command,
    CPU s). CPU seconds (user + system, os.wait4) say what the run costs apart from the load."""
    import os

    cmd = [sys.executable, "-m", "toolkit", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    shown = shlex.join(["keras-edge", *args])
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - start, os.waitstatus_to_exitcode(status), shown, cpu


def _history(run: Path) -> dict[str, list[float]]:
    import csv

    with (run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {k: [float(r[k]) for r in rows] for k in rows[0]}


def default_run(work: Path) -> dict:
    before = uptime()
    wall, rc, cmd, cpu = keras_edge(
        ["train", "--data", CIFAR, "--runs-dir", str(work / "runs"), "--force"],
        work / "default.log",
    )
    after = uptime()
    out = {"command": cmd, "wall_s": round(wall, 1), "rc": rc, "before": before, "after": after,
           "cpu_s": round(cpu, 1)}  # fmt: skip
    run = work / "runs" / "cifar10-test-resnet8"
    if rc == 0 and (run / "metrics.json").is_file():
        metrics = json.loads((run / "metrics.json").read_text())
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        out.update(
            builder=recipe["model"]["builder"],
            image_size=recipe["dataset"]["image_size"],
            epochs=recipe["train"]["epochs"],
            epochs_run=metrics["epochs_run"],
            train_s=metrics["train_seconds"],
            test_accuracy=metrics["test"]["accuracy"],
            val_accuracy=metrics["val"]["accuracy"],
            warnings=[w["kind"] for w in metrics["warnings"]],
            test_samples=metrics["test"]["samples"],
        )
    return out


def toolkit_issue_run(work: Path, momentum: float | None, seed: int = 0) -> dict:
    recipe = json.loads(json.dumps(ISSUE_RECIPE))
    if momentum is not None:
        recipe["name"] += f"-bn{momentum}"
        recipe["model"]["args"]["bn_momentum"] = momentum
    if seed:  # the training seed only: the split stays the same
        recipe["name"] += f"-seed{seed}"
        recipe["train"]["seed"] = seed
    path = work / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    wall, rc, cmd, _ = keras_edge(
        ["train", str(path), "--runs-dir", str(work / "runs"), "--force"],
        work / f"{recipe['name']}.log",
    )
    run = work / "runs" / recipe["name"]
    out = {"command": cmd, "wall_s": round(wall, 1), "rc": rc}
    if rc == 0:
        metrics, history = json.loads((run / "metrics.json").read_text()), _history(run)
        out.update(
            val_curve=history["val_accuracy"],
            train_last=history["accuracy"][-1],
            val_best=metrics["val"]["accuracy"],
            test=metrics["test"]["accuracy"],
            bn_momentum=metrics["bn_momentum"],
            warnings=[w["kind"] for w in metrics["warnings"]],
        )
    return out


def plain_keras_run(momentum: float = 0.9, seed: int = 0) -> dict:
    """The issue author's check: keras.applications MobileNetV2 + BN momentum 0.9, model.fit on
    the toolkit's own train/val/test split, no toolkit code in the model or the loop."""
    import keras

    from toolkit.data import load_dataset
    from toolkit.data.base import DataSpec

    ds = load_dataset(DataSpec(name=CIFAR, image_size=(32, 32)))
    x_train, x_val, x_test = (s.take_x() for s in (ds.train, ds.val, ds.test))
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), input_tensor=x, alpha=0.35, include_top=False, weights=None
    )
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Dropout(0.2)(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(0.002),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(x_train, ds.train.y, batch_size=64, epochs=10, verbose=2,
                        validation_data=(x_val, ds.val.y))  # fmt: skip
    test = float(model.evaluate(x_test, ds.test.y, verbose=0)[1])
    return {
        "val_curve": [float(v) for v in history.history["val_accuracy"]],
        "train_last": float(history.history["accuracy"][-1]),
        "test": test,
        "wall_s": round(time.perf_counter() - start, 1),
        "split": [len(ds.train), len(ds.val), len(ds.test)],
    }


def _cpu(d: dict) -> str:
    if d.get("cpu_s") is None:
        return "CPU time not measured"
    return f"{d['cpu_s'] / 60:.1f} min CPU (user + system; {d['cpu_s'] / d['wall_s']:.2f} cores)"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def section(data: dict) -> list[str]:
    lines = [TITLE, "", f"`python bench/own_data.py {data['argv']}`; data: the CIFAR-10 test "
             "folder in ../shared (10 classes x 1,000 JPEGs, 32x32), the toolkit's split "
             "(seed 0): 7,000 train / 1,000 val / 2,000 test.", ""]  # fmt: skip
    d = data.get("default")
    if d:
        ok = d.get("test_accuracy") is not None
        lines += [
            "### One-line start, every default",
            "",
            *(KEPT if d.get("kept_from") else []),
            f"`{d['command']}` (exit {d['rc']}): "
            + (
                f"builder **{d['builder']}** at {d['image_size'][0]}x{d['image_size'][1]}, "
                f"{d['epochs_run']}/{d['epochs']} epochs, test accuracy "
                f"**{_pct(d['test_accuracy'])}** ({d['test_samples']} images; val "
                f"{_pct(d['val_accuracy'])}), training {d['train_s']:.0f} s, whole command "
                f"**{d['wall_s'] / 60:.1f} min** wall, {_cpu(d)}; warnings: "
                f"{d['warnings'] or 'none'}."
                if ok
                else "failed; see bench/.work/own_data/default.log."
            ),
            "",
            f"- `uptime` before: {d['before']}",
            f"- `uptime` after: {d['after']}",
            "",
        ]
        if ok:
            verdict = d["test_accuracy"] >= 0.60 and d["wall_s"] <= 15 * 60
            lines += [f"Check: >= 60 % test accuracy in <= 15 min: "
                      f"**{'PASS' if verdict else 'FAIL'}**.", ""]  # fmt: skip
    rows = data.get("comparison", {})
    if rows:
        lines += [
            "### The issue's recipe vs a plain Keras loop (BatchNorm momentum 0.9)",
            "",
            "MobileNetV2 alpha 0.35, weights none, 32x32, Adam 0.002, batch 64, 10 epochs, no "
            "augmentation. Val accuracy per epoch is Keras' own (inference mode); `val (best)` "
            "and `test` are the toolkit's metrics.json (best checkpoint) or the plain loop's "
            "last epoch.",
            "",
            "| run | BN momentum | val accuracy, epochs 1..10 | val @10 | val (best) | test | "
            "train @10 | warnings | wall s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            if "val_curve" not in r:
                lines.append(f"| {label} | failed (exit {r.get('rc')}) |" + " |" * 7)
                continue
            curve = " ".join(f"{v:.3f}" for v in r["val_curve"])
            lines.append(
                f"| {label} | {r.get('bn_momentum', [0.9])} | {curve} | "
                f"{_pct(r['val_curve'][-1])} | {_pct(r.get('val_best'))} | {_pct(r['test'])} | "
                f"{_pct(r['train_last'])} | {r.get('warnings', '—')} | {r['wall_s']} |"
            )
        lines += gap_lines(rows)
        commands = [r["command"] for r in rows.values() if "command" in r]
        shown = "; ".join(f"`{c}`" for c in commands)
        lines += ["", f"Commands: {shown} (recipes in bench/.work/own_data/); plain loop: "
                  "`plain_keras_run()` in this script.", ""]  # fmt: skip
    return lines


def gap_lines(rows: dict) -> list[str]:
    """Ours minus plain at epoch 10: seed 0 alone, and the mean over every seed run."""

    def last(prefix: str) -> list[float]:
        return [r["val_curve"][-1] for k, r in rows.items()
                if k.startswith(prefix) and "val_curve" in r]  # fmt: skip

    ours, plain = last("keras-edge train (bn_momentum auto"), last("plain Keras")
    if not ours or not plain:
        return []
    gap0 = 100 * (ours[0] - plain[0])
    gap = 100 * (sum(ours) / len(ours) - sum(plain) / len(plain))
    spread = 100 * max(max(ours) - min(ours), max(plain) - min(plain))
    out = ["", f"Val accuracy at epoch 10, ours minus plain: seed 0 {gap0:+.1f} pp; mean over "
           f"{len(ours)} / {len(plain)} seeds ({', '.join(f'{100 * v:.1f}' for v in ours)} vs "
           f"{', '.join(f'{100 * v:.1f}' for v in plain)} %) {gap:+.1f} pp; check within 2 pp "
           f"(mean): **{'PASS' if abs(gap) <= 2 else 'FAIL'}**"
           + (" (ours is the higher one)" if gap > 2 else "")
           + f". Seed-to-seed spread within one setup: up to {spread:.1f} pp. With momentum "
           "0.999 the training curve is the same as with 0.9 (BatchNorm's momentum only "
           "changes the moving statistics), inference is not."]  # fmt: skip
    return out


def replace_section(results: Path, lines: list[str]) -> None:
    text = results.read_text() if results.is_file() else ""
    start = text.find(TITLE)
    body = "\n".join(lines).rstrip("\n") + "\n"
    if start < 0:
        results.write_text(text.rstrip("\n") + "\n\n" + body)
        return
    end = text.find("\n## ", start + len(TITLE))
    rest = text[end + 1 :] if end >= 0 else ""
    results.write_text(text[:start] + body + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the section here")
    parser.add_argument("--results", type=Path, help="replace the section in this RESULTS.md")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work" / "own_data")
    parser.add_argument("--skip-default", action="store_true", help="no one-line start run")
    parser.add_argument("--skip-comparison", action="store_true", help="no momentum comparison")
    parser.add_argument("--with-old", action="store_true", help="also bn_momentum 0.999")
    parser.add_argument("--seeds", default="", help="extra training seeds, e.g. 1,2")
    parser.add_argument("--render", action="store_true", help="only re-render the last JSON")
    parser.add_argument("--merge", action="store_true", help="add rows to the last JSON's")
    parser.add_argument(
        "--keep-default", action="store_true", help="with --skip-default: keep the last result"
    )
    args = parser.parse_args(argv)
    import os

    os.chdir(REPO)  # the recipes name ../shared relative to the repository root
    if not (REPO.parent / "shared" / "data" / "cifar10-test").is_dir():
        write(args, [TITLE, "", "Skipped: ../shared/data/cifar10-test is absent.", ""])
        return 0
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    this = shlex.join(argv if argv is not None else sys.argv[1:])
    data: dict = {"argv": this}
    last = work / "own_data.json"
    if args.render and last.is_file():
        write(args, section(json.loads(last.read_text())))
        return 0
    if args.skip_default and args.keep_default and last.is_file():
        kept = json.loads(last.read_text()).get("default")
        if kept:
            data["default"] = {**kept, "kept_from": "an earlier run of this script"}
    if not args.skip_default:  # first, alone: its wall time is the claim
        data["default"] = default_run(work)
        write(args, section(data), work, data)
    if not args.skip_comparison:
        rows = data["comparison"] = {}
        rows["keras-edge train (bn_momentum auto)"] = toolkit_issue_run(work, None)
        rows["plain Keras"] = plain_keras_run()
        write(args, section(data), work, data)
        if args.with_old:
            rows["keras-edge train (bn_momentum 0.999)"] = toolkit_issue_run(work, 0.999)
            write(args, section(data), work, data)
    for seed in [int(v) for v in args.seeds.split(",") if v.strip()]:
        rows = data.setdefault("comparison", {})
        rows[f"keras-edge train (bn_momentum auto, seed {seed})"] = toolkit_issue_run(
            work, None, seed
        )
        rows[f"plain Keras (seed {seed})"] = plain_keras_run(seed=seed)
        if args.merge and last.is_file():  # the rows another run wrote meanwhile come first
            earlier = json.loads(last.read_text())
            rows = {**earlier.get("comparison", {}), **rows}
            shown = earlier["argv"]
            if this not in shown:
                shown = f"{shown}` then `python bench/own_data.py {this}"
            data = {**earlier, "comparison": rows, "argv": shown}
        write(args, section(data), work, data)
    return 0


def write(args: argparse.Namespace, lines: list[str], work: Path | None = None,
          data: dict | None = None) -> None:  # fmt: skip
    """Written after every stage, so a long run that is cut short keeps what it measured."""
    if work is not None:
        (work / "own_data.json").write_text(json.dumps(data, indent=2) + "\n")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    if args.results:
        replace_section(args.results, lines)
    if not args.out and not args.results:
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
