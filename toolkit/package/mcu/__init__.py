"""Firmware bundles for microcontrollers: a validated int8 .tflite as TFLite Micro C++ sources.

`package_mcu(export_dir, target)` strips the model, checks TFLM has every op it uses, measures
its arena, refuses it when it is over the board's flash or RAM budget (one line, before any
file is written), then writes model_data.cc/.h, an op resolver with exactly the model's ops,
a self-test that compares the board's output bytes with the host's TFLM, main.cc,
CMakeLists.txt, an Arduino sketch, manifest.json and README.md, and zips it all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.targets import Target

SOURCES = ("model_data.h", "model_data.cc", "op_resolver.h", "selftest_data.h",
           "selftest_data.cc", "model_runner.h", "model_runner.cc")  # fmt: skip


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _io(runner: Any) -> dict[str, Any]:
    def spec(t: Any) -> dict[str, Any]:
        return {"shape": list(t.shape), "dtype": t.dtype, "quantization": t.quantization}

    return {"input": spec(runner.inputs[0]), "output": spec(runner.outputs[0])}


def _host_check(source: Path, stripped: Path, x: np.ndarray) -> dict[str, Any]:
    """The stripped model in TFLM vs the exported file in TFLM and in LiteRT's reference
    kernels, on the self-test inputs: raw integers, sample by sample."""
    from toolkit.runtimes import open_runner, quantize

    with open_runner(stripped, runtime="tflm") as tflm:
        q = quantize(x, tflm.inputs[0])
        got = np.stack([tflm._run(q[i : i + 1]) for i in range(len(q))])
    with open_runner(source, runtime="tflm") as original:
        same_file = np.stack([original._run(q[i : i + 1]) for i in range(len(q))])
    with open_runner(source, runtime="litert", provider="reference") as ref:
        litert = np.stack([ref._run(q[i : i + 1]) for i in range(len(q))])
    if not np.array_equal(got, same_file):
        raise UserError(f"stripping {source.name} changed TFLM's outputs: not packaged")
    per = got.reshape(len(q), -1).astype(np.int64) - litert.reshape(len(q), -1)
    return {
        "samples": len(q),
        "stripped_equals_exported_in_tflm": True,
        "identical_to_litert_reference": int((per == 0).all(axis=1).sum()),
        "max_step_diff_vs_litert_reference": int(np.abs(per).max()),
        "quantized_inputs": q,
        "outputs": got,
    }


def _validation(report: Any, artifact: str) -> dict[str, Any] | None:
    """The artifact's TFLM validation row, else its LiteRT reference-kernel row."""
    from toolkit.package.bundle.manifest import validation_entry

    if report is None:
        return None
    for where in ("tflm:host", "litert:reference"):
        try:
            return validation_entry(report.artifact(artifact, where), report)
        except UserError:
            continue
    return None


def plan(export_dir: Path, target: Target, ignore_budget: bool = False) -> dict[str, Any]:
    """Everything decided before a file is written: stripped bytes, ops, arena, needs.
    Raises UserError for a missing artifact, an op TFLM lacks, or a model over budget."""
    from toolkit.core.formats import get
    from toolkit.core.model_stats import tflite_stats
    from toolkit.package.mcu.budget import check_fits, needs_of
    from toolkit.package.mcu.strip import schema_floor, strip_model
    from toolkit.runtimes.tflm import tflm_available
    from toolkit.runtimes.tflm_arena import measure_arena

    fmt = get(target.artifact)
    source = export_dir / fmt.filename
    if not source.is_file():
        raise UserError(
            f"{export_dir} has no {source.name} ({target.artifact}) for target {target.name}; "
            f"export it: keras-edge export MODEL -f {target.artifact}"
        )
    if not tflm_available():
        raise UserError(f"packaging for {target.name} needs tflite-micro: pip install tflite-micro")
    content = source.read_bytes()
    stripped = strip_model(content)
    measure = measure_arena(source, content=stripped)  # raises MissingOp (exit 2)
    needs = needs_of(measure, len(stripped), target)
    if not ignore_budget:
        check_fits(needs, measure, target, fmt.precision, source.name)
    return {
        "source": source,
        "content": content,
        "stripped": stripped,
        "floor": schema_floor(content),
        "measure": measure,
        "needs": needs,
        "ops": tflite_stats(source)["ops"],
        "precision": fmt.precision,
    }


def package_mcu(
    export_dir: str | Path,
    target: Target,
    *,
    out: Path | None = None,
    force: bool = False,
    ignore_budget: bool = False,
    samples: int | np.ndarray = 16,
) -> tuple[Path, Path, dict[str, Any], list[str]]:
    """Build `<out>/<target>/` (sources, sketch, manifest, README) and `<out>/<target>.zip`;
    returns (bundle dir, zip, manifest, notes) for `package` to wrap."""
    from toolkit.core import __version__
    from toolkit.core.report import Report
    from toolkit.core.rundir import atomic_dir
    from toolkit.package.bundle import bundle_files, deterministic_zip, sha256_file
    from toolkit.package.bundle.manifest import input_spec_for, selftest_samples
    from toolkit.package.mcu import sources as src
    from toolkit.package.mcu.readme import readme_text
    from toolkit.runtimes import open_runner

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}")
    p = plan(export_dir, target, ignore_budget)
    report = Report.load(export_dir) if (export_dir / "report.json").is_file() else None
    notes = [] if report else [f"{export_dir} has no report.json: the manifest has no metrics"]
    with open_runner(p["source"], runtime="tflm") as runner:
        io = _io(runner)
    shape = [int(d) for d in io["input"]["shape"][1:]]
    spec, spec_notes = input_spec_for(export_dir, shape)
    notes += spec_notes
    if isinstance(samples, np.ndarray):
        x, sample_text = samples.astype(np.float32), f"{len(samples)} given inputs"
    else:
        x, sample_text = selftest_samples(spec, shape, samples)
    out = Path(out) if out else export_dir.parent / "bundles"
    name = export_dir.parent.name if export_dir.name.startswith("export") else export_dir.name
    labels = [str(lb) for lb in (spec.get("labels") or [])]
    measure, needs = p["measure"], p["needs"]
    with atomic_dir(out / target.name, force=force) as work:
        work.chmod(0o755)
        flashed = work / "model.tflite"
        flashed.write_bytes(p["stripped"])
        check = _host_check(p["source"], flashed, x)
        head = src.header_comment(p["source"].name, _sha(p["content"]), __version__)
        arena = {"measured": measure.arena_bytes, "size": needs.arena_bytes,
                 "margin": needs.arena_bytes - measure.arena_bytes}  # fmt: skip
        texts = {
            "model_data.h": src.model_data_h(head, arena, io, len(labels)),
            "model_data.cc": src.model_data_cc(head, p["stripped"], labels),
            "op_resolver.h": src.op_resolver_h(head, p["ops"]),
            "selftest_data.h": src.selftest_h(head),
            "selftest_data.cc": src.selftest_cc(
                head, check["quantized_inputs"][0], check["outputs"][0]
            ),
            "model_runner.h": src.MODEL_RUNNER_H,
            "model_runner.cc": src.MODEL_RUNNER_CC,
        }
        sketch = f"{name.replace('-', '_')}_selftest"
        (work / "arduino" / sketch).mkdir(parents=True)
        for rel, text in texts.items():
            (work / rel).write_text(text, encoding="utf-8")
            (work / "arduino" / sketch / rel).write_text(text, encoding="utf-8")
        (work / "main.cc").write_text(src.MAIN_CC, encoding="utf-8")
        (work / "CMakeLists.txt").write_text(src.cmakelists(name), encoding="utf-8")
        (work / "arduino" / sketch / f"{sketch}.ino").write_text(
            src.arduino_sketch(sketch), encoding="utf-8"
        )
        (work / "labels.txt").write_text("".join(f"{lb}\n" for lb in labels), encoding="utf-8")
        validation = _validation(report, target.artifact)
        host = {k: v for k, v in check.items() if k not in ("quantized_inputs", "outputs")}
        manifest = {
            "schema": 1,
            "name": name,
            "kind": "tflm-firmware",
            "target": target.model_dump(
                include={
                    "name",
                    "description",
                    "platform",
                    "flash_kb",
                    "ram_kb",
                    "flash_reserved_kb",
                    "ram_reserved_kb",
                    "arena_margin_kb",
                    "notes",
                }
            ),
            "model": {
                "artifact": target.artifact,
                "exported_file": p["source"].name,
                "exported_sha256": _sha(p["content"]),
                "exported_bytes": len(p["content"]),
                "flashed_file": "model.tflite",
                "flashed_sha256": _sha(p["stripped"]),
                "flashed_bytes": len(p["stripped"]),
                "schema_floor_bytes": p["floor"],
                "c_array": "model_data.cc: g_model_data (alignas(16))",
            },
            "arena": {**measure.as_dict(), "constant_bytes": needs.arena_bytes},
            "flash": {
                "model_bytes": len(p["stripped"]),
                "tflm_code_estimate": needs.code_bytes,
                "reserved": target.flash_reserved_kb * 1024,
                "total": needs.flash,
                "budget": (target.flash_kb or 0) * 1024 or None,
            },
            "ram": {
                "arena": needs.arena_bytes,
                "reserved": target.ram_reserved_kb * 1024,
                "total": needs.ram,
                "budget": (target.ram_kb or 0) * 1024 or None,
            },
            "models": [  # the shape every bundle's manifest has (the CLI prints it)
                {
                    "name": target.artifact,
                    "file": "model_data.cc",
                    "format": "tflite",
                    "precision": p["precision"],
                    "runtime": "tflm",
                    "primary": True,
                    "inputs": [io["input"]],
                    "outputs": [io["output"]],
                    "validation": validation,
                }
            ],
            "validation": validation,
            "ops": p["ops"],
            "resolver": [src.resolver_method(op)[0] for op in sorted(p["ops"])],
            "io": io,
            "labels": labels,
            "host_check": {**host, "inputs": sample_text},
            "versions": {**(report.versions if report else {}), "packaged_with": __version__},
        }
        (work / "README.md").write_text(readme_text(manifest, target, sketch), encoding="utf-8")
        manifest["files"] = {
            rel: sha256_file(work / rel) for rel in bundle_files(work) if rel != "manifest.json"
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    bundle_dir = out / target.name
    zip_path = deterministic_zip(bundle_dir, out / f"{target.name}.zip", f"{name}-{target.name}")
    return bundle_dir, zip_path, manifest, notes


def fits_target(path: str | Path, target: Target, precision: str | None = None) -> str | None:
    """None when a .tflite fits the firmware target's flash and RAM (stripped, arena measured),
    else the one-line reason (`package` would refuse it): for a ladder choosing precisions.
    `precision` (default: the target's artifact's) picks the fix the reason suggests."""
    from toolkit.core.formats import get
    from toolkit.package.mcu.budget import check_fits, needs_of
    from toolkit.package.mcu.strip import strip_model
    from toolkit.runtimes.tflm_arena import measure_arena

    path = Path(path)
    stripped = strip_model(path.read_bytes())
    try:
        measure = measure_arena(path, content=stripped)
        check_fits(needs_of(measure, len(stripped), target), measure, target,
                   precision or get(target.artifact).precision, path.name)  # fmt: skip
    except UserError as exc:
        return str(exc)
    return None
