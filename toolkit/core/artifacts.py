"""Naming of optimized variants in an export: RUN/optimized/ converted beside the plain ones.

`keras-edge export RUN` on a run that has been optimized converts both models into one export
dir and validates them together against the dense Keras reference, so one report shows what
each step bought (accuracy, size, gzip size, latency). Variant files are named
`<steps>-<precision><suffix>` (`prune+cluster-int8.tflite`) and their report rows
`<steps>-<artifact>` (`prune+cluster-tflite-int8`, with `variant` set): the plain rows keep
their names, which baselines, `check` and `package` look up. Nothing here imports TensorFlow
until a conversion runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.formats import FORMATS, Format

STEPS = ("prune", "cluster", "qat")  # the stage's fixed order; a tag is a '+'-joined prefix
OPTIMIZED_DIR = "optimized"


@dataclass(frozen=True)
class Variant:
    """One optimized artifact: the optimize steps (`tag`) and the plain format it mirrors."""

    tag: str
    fmt: Format

    @property
    def name(self) -> str:
        return f"{self.tag}-{self.fmt.name}"

    @property
    def filename(self) -> str:
        return f"{self.tag}-{self.fmt.precision}{self.fmt.suffix}"


def is_tag(tag: str) -> bool:
    """'prune', 'prune+cluster', 'cluster+qat', ...: known steps, each once, in stage order."""
    parts = tag.split("+")
    if not all(p in STEPS for p in parts) or len(set(parts)) != len(parts):
        return False
    return parts == sorted(parts, key=STEPS.index)


def parse(filename: str) -> Variant | None:
    """The variant a file name denotes, or None (plain `model-*` files are not variants)."""
    tag, sep, rest = filename.partition("-")
    if not sep or not is_tag(tag):
        return None
    for fmt in FORMATS:
        if fmt.format != "keras" and rest == f"{fmt.precision}{fmt.suffix}":
            return Variant(tag, fmt)
    return None


def discover(export_dir: Path) -> list[Path]:
    """Variant files in an export dir, grouped by tag in stage order, formats in table order."""
    found = [(p, v) for p in Path(export_dir).iterdir() if (v := parse(p.name)) is not None]
    order = {fmt.name: i for i, fmt in enumerate(FORMATS)}
    found.sort(key=lambda pv: (len(pv[1].tag.split("+")), pv[1].tag, order[pv[1].fmt.name]))
    return [p for p, _ in found]


def optimized_dir(run_dir: Path) -> tuple[Path, str] | None:
    """(RUN/optimized, its tag) when it holds a finished optimize result (model + metrics)."""
    out = Path(run_dir) / OPTIMIZED_DIR
    has_model = (out / "model.keras").is_file() or (out / "saved_model.pb").is_file()
    tag = tag_of(out) if has_model else None
    return (out, tag) if tag else None


def tag_of(opt_dir: Path) -> str | None:
    """'prune+cluster' for an optimized dir that pruned then clustered; None if it is not one."""
    try:
        steps = json.loads((Path(opt_dir) / "metrics.json").read_text())["optimize"]["steps"]
        tag = "+".join(steps)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tag if steps and is_tag(tag) else None
