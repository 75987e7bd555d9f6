"""Peak RSS of `keras-edge export` on a 50,000-image folder vs one ten times smaller (issue #8).

Image folders and calibration stream through tf.data / per-batch decoding, so exporting a big
folder must not hold it in memory: the peak RSS of the export process should stay flat while
the folder grows 10x. This script makes that measurable rather than claimed:

1. writes two deterministic class-per-subfolder PNG folders (N and N/10 images, 32x32 RGB,
   10 classes; each class has its own colour and stripe pattern plus noise, so it is learnable),
2. trains a tiny CNN recipe for 3 epochs on the small folder (`keras-edge train`),
3. runs `keras-edge export RUN --data image-folder:FOLDER --formats tflite --precisions int8`
   for each folder as a child process, validating on the folder's whole test split (20 %),
   and reads that child's own peak RSS (`os.wait4` -> ru_maxrss, KiB on Linux),
4. prints a markdown section (and writes it with `--out`) comparing the peaks with what the
   images would take in memory as float32.

    .venv/bin/python bench/rss_folder.py --out bench/.work/rss_folder.md
    .venv/bin/python bench/rss_folder.py --images 5000 --keep   # quicker smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # pixels; RGB
CLASSES = 10
EPOCHS = 3  # enough for the tiny CNN to learn the colours: accuracy is not the point
TEST_FRACTION = 0.2  # DataSpec's default: what export validates on
NOISE_MIB = 64  # run-to-run spread of a TF process's peak RSS is well below this
TITLE = "## Peak RSS: exporting an image folder"


def _class_image(label: int, index: int) -> np.ndarray:
    """One deterministic 32x32 RGB image: the class's colour and stripe period, plus noise."""
    rng = np.random.default_rng(label * 1_000_003 + index)
    hue = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], np.float32)
    stripes = (np.arange(SIZE) // (label % 5 + 1)) % 2  # period depends on the class
    pattern = np.where(stripes[:, None] if label < 5 else stripes[None, :], 60.0, -60.0)
    image = hue + pattern[..., None] + rng.normal(0, 25, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_folder(root: Path, images: int) -> Path:
    """`root/class_K/img_I.png`, the layout `image-folder:PATH` reads; skipped if complete."""
    from PIL import Image

    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == str(images):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True)

    def write(i: int) -> None:
        label = i % CLASSES
        Image.fromarray(_class_image(label, i)).save(root / f"class_{label}" / f"img_{i:06d}.png")

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(images), chunksize=256))
    marker.write_text(str(images))
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def train_tiny(folder: Path, work: Path) -> Path:
    """A tiny CNN trained briefly on `folder` through the CLI; returns the run directory."""
    import yaml

    recipe = {
        "name": "rss-folder-cnn",
        "dataset": {"name": f"image-folder:{folder}", "image_size": [SIZE, SIZE], "seed": 0},
        "preprocess": {"normalize": "rescale"},
        "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
        "train": {"epochs": EPOCHS, "batch_size": 64, "tensorboard": False, "seed": 0},
    }
    path = work / "rss-folder-cnn.yaml"
    path.write_text(yaml.safe_dump(recipe))
    runs = work / "runs"
    cmd = [sys.executable, "-m", "toolkit", "train", str(path), "--runs-dir", str(runs), "--force"]
    subprocess.run(cmd, cwd=work, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return runs / "rss-folder-cnn"


def export_cmd(run_dir: Path, folder: Path, out: Path, latency_runs: int) -> list[str]:
    return [sys.executable, "-m", "toolkit", "export", str(run_dir), "--data",
            f"image-folder:{folder}", "--formats", "tflite", "--precisions", "int8",
            "--latency-runs", str(latency_runs), "--out", str(out), "--force"]  # fmt: skip


def measure(cmd: list[str], cwd: Path, log: Path) -> tuple[float, int, int]:
    """Run `cmd`; (wall s, its own peak RSS in KiB, exit code). wait4 reads this child only."""
    with log.open("w") as fh:
        fh.write(shlex.join(cmd) + "\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    return wall, int(usage.ru_maxrss), os.waitstatus_to_exitcode(status)


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f}"


def _verdict(grew_mib: float, held_mib: float) -> str:
    """Streams if RSS grew by less than half the extra test data; else it is held in memory.

    Peak RSS of a TensorFlow process varies by a few tens of MiB run to run, so a difference
    in held data smaller than NOISE_MIB cannot tell the two apart.
    """
    if grew_mib < held_mib / 2:
        return "streams"
    if held_mib < NOISE_MIB:
        return f"too small to tell (under {NOISE_MIB} MiB of extra test data; use --images 50000)"
    return "holds the data in memory"


def section(rows: list[dict], command: str, minutes: float) -> str:
    """The markdown section: one row per folder, then what the numbers say."""
    lines = [
        f"{TITLE} ({rows[0]['images']:,} images vs {rows[-1]['images']:,})",
        "",
        f"Generated by `{command}` in {minutes:.1f} min (child: "
        f"`{rows[0]['cmd_shown']}`). Peak RSS is the export process's own ru_maxrss "
        "(`os.wait4`). Images: 32x32 RGB PNG, 10 classes; export validates on the folder's "
        f"whole test split ({TEST_FRACTION:.0%}, not capped), on every LiteRT runtime "
        "(XNNPACK and the reference kernels) plus the Keras reference pass; calibration: "
        "256 training images.",
        "",
        "| images in folder | test images evaluated | folder as float32 (MiB) | "
        "test split as float32 (MiB) | export peak RSS (MiB) | wall (s) | exit | "
        "tflite-int8 accuracy (XNNPACK) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {r['evaluated']:,} | {_mib(r['folder_bytes'])} | "
            f"{_mib(r['test_bytes'])} | {r['rss_kib'] / 1024:,.0f} | {r['wall']:.0f} | "
            f"{r['rc']} | {r['accuracy']} |"
        )
    small, big = rows[-1], rows[0]
    grew = (big["rss_kib"] - small["rss_kib"]) / 1024
    held = (big["test_bytes"] - small["test_bytes"]) / 2**20
    lines += [
        "",
        f"From {small['images']:,} to {big['images']:,} images the export's peak RSS changed "
        f"by {grew:+,.0f} MiB; holding the extra test images alone as float32 would add "
        f"{held:,.0f} MiB, and the whole folder {_mib(big['folder_bytes'] - small['folder_bytes'])}"
        f" MiB. Verdict: **{_verdict(grew, held)}**.",
        "",
    ]
    return "\n".join(lines)


def _accuracy(out: Path) -> tuple[int, str]:
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return 0, "—"
    row = next((a for a in report["artifacts"] if a["provider"] == "xnnpack"), None)
    value = row["metric"]["value"] if row else None
    return int(report["data"]["samples"]), "—" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="the big folder's size")
    parser.add_argument("--work", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (reuses folders)")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write the section here")
    args = parser.parse_args(argv)
    command = shlex.join(["python", os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])])
    work = (args.work or Path(tempfile.mkdtemp(prefix="keras-edge-rss-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        sizes = [args.images, args.images // 10]
        folders = {}
        for n in sizes:
            clock = time.perf_counter()
            folders[n] = write_folder(work / f"folder-{n}", n)
            print(
                f"rss_folder: {n} images ready in {time.perf_counter() - clock:.0f} s", flush=True
            )
        run_dir = train_tiny(folders[sizes[-1]], work)
        rows = []
        for n in sizes:
            out = work / f"export-{n}"
            cmd = export_cmd(run_dir, folders[n], out, args.latency_runs)
            wall, rss, rc = measure(cmd, work, work / f"export-{n}.log")
            evaluated, accuracy = _accuracy(out)
            print(f"rss_folder: {n} images: peak RSS {rss / 1024:.0f} MiB, {wall:.0f} s, "
                  f"exit {rc}", flush=True)  # fmt: skip
            shown = shlex.join(["keras-edge", *cmd[3:]]).replace(str(work), "WORK")
            rows.append({"images": n, "evaluated": evaluated, "rss_kib": rss, "wall": wall,
                         "rc": rc, "accuracy": accuracy, "cmd_shown": shown,
                         "folder_bytes": n * SIZE * SIZE * 3 * 4,
                         "test_bytes": round(n * TEST_FRACTION) * SIZE * SIZE * 3 * 4})  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = section(rows, command, (time.perf_counter() - start) / 60)
    print(text)
    if args.out:
        sys.path.insert(0, str(REPO))
        from toolkit.core.rundir import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
