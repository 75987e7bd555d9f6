"""The package stage: validated artifacts + a target profile -> a device bundle (dir + zip).

`package(export_dir, target)` only packages: it copies the target's artifacts, writes
manifest.json (input/output spec with quantization, labels, this artifact's validation row
from report.json, versions, sha256 of every file), labels.txt, requirements.txt, README.md,
run.py and self-test data whose expected outputs come from the bundled run.py itself on this
machine. Same inputs give a byte-identical zip. `run_package` is the sequencing the CLI uses:
export first when the run lacks the target's artifact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import GateFailed, UserError
from toolkit.core.report import over_drop
from toolkit.core.targets import Target, load_target

# Self-test tolerances, measured on x86-64 vs emulated arm64 (see pi/compare.py): LiteRT's
# reference kernels give bit-identical integer outputs; on the default path every int8 kernel
# is bit-identical too except the optimized SOFTMAX (1 step on a few values), so a bundle that
# keeps its softmax in the model allows one step, one that runs it on the host none.
INT_ATOL = {"reference": 0, "xnnpack": 1}  # in quantization steps
FLOAT_ATOL = {"fp16": 2e-2, "int8": 1e-2, "dynamic": 1e-2}  # float outputs (e.g. ONNX QDQ)
DEFAULT_ATOL = 1e-4


def selftest_plan(entry: dict[str, Any], target: Target) -> list[tuple[str | None, float]]:
    """(LiteRT delegate or None, tolerance) per self-test check of one bundled model."""
    from toolkit.core.formats import get

    integer = entry["outputs"][0]["dtype"] in ("int8", "uint8", "int16")
    if entry["runtime"] != "litert":
        return [(None, FLOAT_ATOL.get(get(entry["name"]).precision, DEFAULT_ATOL))]
    if not integer:
        return [(target.delegate, FLOAT_ATOL.get(get(entry["name"]).precision, DEFAULT_ATOL))]
    # Without the int8 softmax every kernel is bit-identical across CPUs (tests/test_pi.py).
    steps = 0 if entry.get("postprocess") == "softmax" else INT_ATOL[target.delegate]
    plan = [(target.delegate, steps)]
    return plan + ([("reference", 0)] if target.delegate != "reference" else [])


@dataclass
class BundleResult:
    bundle_dir: Path
    zip_path: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    exported: Path | None = None  # set when run_package had to export the artifacts first


def find_export_dir(path: Path, target: Target) -> Path | None:
    """The export dir holding the target's primary artifact: PATH itself, PATH/export or
    PATH/export-<target> (where `run_package` exports when PATH/export lacks it)."""
    from toolkit.core.formats import get

    filename = get(target.artifact).filename
    for candidate in (path, path / "export", path / f"export-{target.name}"):
        if (candidate / filename).is_file():
            return candidate
    return None


def _row_for(report: Any, artifact: str, target: Target) -> Any | None:
    from toolkit.core.formats import get

    if report is None:
        return None
    fmt = get(artifact)
    wanted = f"litert:{target.delegate}" if fmt.runtime == "litert" else "onnxruntime"
    try:
        return report.artifact(artifact, wanted)
    except UserError:
        return None


def _check_budget(row: Any, artifact: str, target: Target) -> None:
    if row is None or target.max_drop is None:
        return
    if row.error:
        raise GateFailed(f"{artifact} failed validation on {row.where}: {row.error}")
    if over_drop(row.drop, target.max_drop):
        raise GateFailed(
            f"{artifact} drops {row.metric['name']} by {row.drop:.4f} on {row.where}, over the "
            f"{target.name} budget {target.max_drop}; retrain/quantize better or pass "
            "--ignore-budget"
        )


def check_granularity(path: Path, artifact: str, target: Target) -> None:
    """A profile's `granularity`, checked on the file itself: a per-channel artifact for a
    per-tensor device is bad input (exit 2), not a bundle that fails on the device."""
    from toolkit.core.model_stats import weight_granularity

    if target.granularity is None:
        return
    found = weight_granularity(path)
    if found is not None and found != target.granularity:
        raise UserError(
            f"{path} ({artifact}) has {found} weight scales; {target.name} takes "
            f"{target.granularity}: re-export with --granularity {target.granularity}"
        )


def _host_softmax(source: Path, dest: Path, run: Any, x: np.ndarray) -> dict[str, Any] | None:
    """Write `source` without its trailing int8 SOFTMAX to `dest` (None: nothing to split).

    The split model must pick the same class as the original on the self-test inputs wherever
    the original's int8 probabilities have a unique winner; otherwise the edit is refused.
    """
    from toolkit.core.rundir import atomic_write_bytes
    from toolkit.core.tflite_edit import split_trailing_softmax

    content = split_trailing_softmax(source.read_bytes())
    if content is None:
        return None
    atomic_write_bytes(dest, content)
    info = {"runtime": "litert", "providers": []}
    before = run.Model(source, info, delegate="reference").run_float(x).reshape(len(x), -1)
    after = run.Model(dest, info, delegate="reference").run_float(x).reshape(len(x), -1)
    top = np.sort(before, axis=1)
    unique = top[:, -1] > top[:, -2]
    if not (before.argmax(1) == after.argmax(1))[unique].all():
        raise UserError(f"{source.name}: the model without its softmax picks other classes")
    return {
        "postprocess": "softmax",
        "derived_from": f"{source.name} without its final SOFTMAX (run.py applies it in float); "
        f"the same top-1 on {int(unique.sum())}/{len(x)} self-test inputs with a unique winner",
    }


def _model_entry(run: Any, path: Path, artifact: str, target: Target, primary: bool) -> dict:
    from toolkit.core.formats import get

    fmt = get(artifact)
    entry: dict[str, Any] = {
        "name": artifact,
        "file": path.name,
        "format": fmt.format,
        "precision": fmt.precision,
        "runtime": fmt.runtime,
        "pip": target.pip_package(artifact),
        "primary": primary,
        "threads": target.threads,
    }
    if fmt.runtime == "litert":
        entry["delegate"] = target.delegate
    else:
        entry["providers"] = target.providers or ["CPUExecutionProvider"]
    model = run.Model(path, {**entry, "providers": ["CPUExecutionProvider"]})
    entry["inputs"], entry["outputs"] = model.inputs, model.outputs
    return entry


def package(
    export_dir: str | Path,
    target: str | Path | Target,
    *,
    out: Path | None = None,
    force: bool = False,
    ignore_budget: bool = False,
    samples: int | np.ndarray = 16,
    task: str | None = None,
) -> BundleResult:
    """Build `<out>/<target>/` and `<out>/<target>.zip` from an export dir (default out:
    EXPORT_DIR/../bundles). Raises GateFailed when the artifact is over the target's budget.

    `task` decides how run.py post-processes outputs; default: the input spec's, else the
    task the report was validated as, else classification."""
    from toolkit.core import __version__
    from toolkit.core.formats import get
    from toolkit.core.report import Report
    from toolkit.core.rundir import atomic_dir
    from toolkit.package.bundle import RUN_SCRIPT, deterministic_zip, load_run_module
    from toolkit.package.bundle.deploy import serving_files
    from toolkit.package.bundle.manifest import (
        build_manifest,
        input_spec_for,
        selftest_samples,
        validation_entry,
    )
    from toolkit.package.bundle.readme import readme_text

    target = target if isinstance(target, Target) else load_target(target)
    if target.firmware:
        return _package_firmware(export_dir, target, out, force, ignore_budget, samples)
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}")
    report = Report.load(export_dir) if (export_dir / "report.json").is_file() else None
    notes = [] if report else [f"{export_dir} has no report.json: the bundle carries no metrics"]
    files = {}
    for artifact in target.artifacts:
        path = export_dir / get(artifact).filename
        if path.is_file():
            files[artifact] = path
        elif artifact == target.artifact:
            raise UserError(
                f"{export_dir} has no {path.name} ({artifact}) for target {target.name}; "
                f"export it: keras-edge export MODEL -f {artifact}"
            )
        else:
            notes.append(f"alternative {artifact} is not in {export_dir}: left out")
    for artifact, path in files.items():
        check_granularity(path, artifact, target)
    rows = {a: _row_for(report, a, target) for a in files}
    if not ignore_budget:
        _check_budget(rows[target.artifact], target.artifact, target)

    run = load_run_module(RUN_SCRIPT)
    entries = [_model_entry(run, p, a, target, a == target.artifact) for a, p in files.items()]
    shape = [int(d) for d in entries[0]["inputs"][0]["shape"][1:]]
    spec, spec_notes = input_spec_for(export_dir, shape)
    notes += spec_notes
    from toolkit.core.tasks import get_task

    if task is not None or "task" not in spec:
        known = (report.data.get("task") if report is not None else None) or "classification"
        spec = {**spec, "task": get_task(task or known).name}
    boxes = get_task(spec["task"]).output == "boxes"  # a detector: run.py decodes with detect.py
    if isinstance(samples, np.ndarray):
        x, sample_text = samples.astype(np.float32), f"{len(samples)} given inputs"
    else:
        x, sample_text = selftest_samples(spec, shape, samples)

    edgetpu = None
    if target.edgetpu:
        from toolkit.package.edgetpu_ops import check_edgetpu

        edgetpu = check_edgetpu(files[target.artifact])
        if not edgetpu.ok:
            notes.append(edgetpu.summary())

    out = Path(out) if out else export_dir.parent / "bundles"
    name = export_dir.parent.name if export_dir.name.startswith("export") else export_dir.name
    with atomic_dir(out / target.name, force=force) as work:
        work.chmod(0o755)  # mkdtemp made it private; a bundle is for copying around
        (work / "selftest").mkdir()
        np.save(work / "selftest" / "inputs.npy", x)
        for i, entry in enumerate(entries):
            split = None
            integer = entry["outputs"][0]["dtype"] in ("int8", "uint8")
            # a detector keeps its softmax (FOMO's is per cell, not one over the output)
            if target.host_softmax and entry["runtime"] == "litert" and integer and not boxes:
                split = _host_softmax(files[entry["name"]], work / entry["file"], run, x)
            if split is None:
                shutil.copyfile(files[entry["name"]], work / entry["file"])
            else:  # the entry describes the bundled file: its outputs are now the logits
                primary = entry["primary"]
                entry = entries[i] = _model_entry(
                    run, work / entry["file"], entry["name"], target, primary
                )
                entry.update(split)
            entry["selftest"] = {"inputs": "selftest/inputs.npy", "checks": []}
            for delegate, atol in selftest_plan(entry, target):
                cpu = {**entry, "providers": ["CPUExecutionProvider"]}  # the reference run
                model = run.Model(work / entry["file"], cpu, delegate=delegate)
                rel = f"selftest/expected-{entry['name']}-{delegate or 'cpu'}.npy"
                np.save(work / rel, model.run_float(x))
                check = {"expected": rel, "atol": atol, "delegate": delegate}
                entry["selftest"]["checks"].append(
                    {k: v for k, v in check.items() if v is not None}
                )
            entry["validation"] = validation_entry(rows[entry["name"]], report)
        shutil.copyfile(RUN_SCRIPT, work / "run.py")
        if boxes:  # run.py imports it for the boxes
            shutil.copyfile(RUN_SCRIPT.with_name("detect.py"), work / "detect.py")
        labels = list(spec.get("labels") or [])
        (work / "labels.txt").write_text("".join(f"{lb}\n" for lb in labels), encoding="utf-8")
        (work / "requirements.txt").write_text(
            "\n".join(target.requirement_lines()) + "\n", encoding="utf-8"
        )
        manifest = build_manifest(
            name, target, spec, entries, labels, report, edgetpu, sample_text, __version__
        )
        manifest.update(serving_files(work, name, target, spec, entries))  # drift + serve.py
        (work / "README.md").write_text(readme_text(manifest, target), encoding="utf-8")
        manifest["files"] = file_hashes(work)
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    bundle_dir = out / target.name
    zip_path = deterministic_zip(bundle_dir, out / f"{target.name}.zip", f"{name}-{target.name}")
    return BundleResult(bundle_dir, zip_path, manifest, notes)


def file_hashes(bundle: Path) -> dict[str, str]:
    """sha256 of every file but manifest.json, by bundle-relative path (checked to stay inside)."""
    from toolkit.package.bundle import bundle_files, safe_relpath, sha256_file

    return {
        safe_relpath(bundle, rel): sha256_file(bundle / rel)
        for rel in bundle_files(bundle)
        if rel != "manifest.json"
    }


def _package_firmware(
    export_dir: str | Path,
    target: Target,
    out: Path | None,
    force: bool,
    ignore_budget: bool,
    samples: int | np.ndarray,
) -> BundleResult:
    """A microcontroller target (`firmware: tflm`): C++ sources, not a Python bundle. The
    accuracy budget is checked on the TFLM row (else LiteRT's reference kernels) first."""
    from toolkit.core.formats import get
    from toolkit.core.report import Report
    from toolkit.package.mcu import package_mcu

    primary = Path(export_dir) / get(target.artifact).filename
    if primary.is_file():  # (package_mcu names a missing file)
        check_granularity(primary, target.artifact, target)
    report_path = Path(export_dir) / "report.json"
    if not ignore_budget and report_path.is_file():
        report = Report.load(Path(export_dir))
        for where in ("tflm:host", f"litert:{target.delegate}"):
            try:
                row = report.artifact(target.artifact, where)
            except UserError:
                continue
            _check_budget(row, target.artifact, target)
            break
    bundle_dir, zip_path, manifest, notes = package_mcu(
        export_dir, target, out=out, force=force, ignore_budget=ignore_budget, samples=samples
    )
    return BundleResult(bundle_dir, zip_path, manifest, notes)
