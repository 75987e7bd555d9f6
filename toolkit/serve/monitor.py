"""`keras-edge monitor LOG_DIR --bundle B`: an offline drift report from sampled request logs.

The logged inputs (and class probabilities) are compared with the bundle's manifest reference
in the same way the live server compares its window: PSI and KS per feature/channel, PSI of
the predicted classes and confidences. Writes drift.md, drift.json and drift.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError


@dataclass
class MonitorResult:
    report: dict[str, Any]
    markdown: Path
    plot: Path
    json_path: Path


def _reference(bundle: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from toolkit.serve.source import _read_json, verify_bundle

    path = bundle / "manifest.json" if bundle.is_dir() else bundle
    if not path.is_file():
        raise UserError(f"no manifest.json in {bundle}: --bundle takes a bundle directory")
    manifest = _read_json(path)
    verify_bundle(path.parent, manifest)
    if not manifest.get("drift"):
        raise UserError(f"{path} has no drift reference; re-package the model with this version")
    return manifest, manifest["drift"]


def _markdown(report: dict[str, Any], manifest: dict[str, Any], logs: Path, extra: dict) -> str:
    limits = report["threshold"]
    verdict = {
        "drift": "**DRIFT**: at least one statistic is over its threshold",
        "ok": "no drift: every statistic is under its threshold",
        "warming up": f"too few samples ({report['samples']}) to judge",
    }[report["status"]]
    lines = [
        f"# Drift report: {manifest.get('name')} ({(manifest.get('target') or {}).get('name')})",
        "",
        f"{report['samples']} logged samples from `{logs}` ({extra['span']}) against the "
        f"reference of {manifest['drift'].get('samples')} inputs "
        f"({manifest['drift'].get('source') or 'validation data'}).",
        "",
        f"Verdict: {verdict} (PSI over {limits['psi']}, KS over {limits['ks']}, each raised to "
        "the sampling noise of this many samples where that is higher: the limits below).",
        "",
    ]
    if extra["other_models"]:
        lines += [
            f"Note: {extra['other_models']} samples came from another model sha256 than "
            "this bundle's primary; they are included.",
            "",
        ]
    lines += [
        "| input feature | PSI (limit) | KS (limit) | mean (logged) | mean (reference) |",
        "|---|---|---|---|---|",
    ]
    for f in report["features"]:
        flag = " **over**" if f["psi"] > f["psi_limit"] or f["ks"] > f["ks_limit"] else ""
        lines.append(
            f"| {f['name']}{flag} | {f['psi']:.4f} ({f['psi_limit']:.3g}) | {f['ks']:.4f} "
            f"({f['ks_limit']:.3g}) | {f['mean']:.4f} | {f['reference_mean']:.4f} |"
        )
    out = report.get("outputs")
    if out:
        lines += [
            "",
            "| output | value |",
            "|---|---|",
            f"| PSI of predicted classes | {out['class_psi']:.4f} (limit "
            f"{out['class_psi_limit']:.3g}) |",
            f"| PSI of confidences | {out['confidence_psi']:.4f} (limit "
            f"{out['confidence_psi_limit']:.3g}) |",
            f"| mean confidence | {out['mean_confidence']:.4f} |",
        ]
    lines += ["", "![drift](drift.png)", ""]
    return "\n".join(lines)


def _plot(
    path: Path, reference: dict[str, Any], inputs: np.ndarray, probs: Any, report: dict[str, Any]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.serve.drift import reference_cdf

    ref_out = reference.get("outputs")
    cols = 3 if ref_out and probs is not None else 2
    fig, axes = plt.subplots(1, cols, figsize=(5 * cols, 3.8))
    names = [f["name"] for f in report["features"]][:32]
    axes[0].bar(range(len(names)), [f["psi"] for f in report["features"]][:32])
    axes[0].axhline(report["threshold"]["psi"], color="red", linestyle="--", label="threshold")
    axes[0].set_xticks(range(len(names)), names, rotation=60, fontsize=7)
    axes[0].set_title("input PSI per feature")
    axes[0].legend()
    worst = int(np.argmax([f["psi"] for f in report["features"]]))
    values = np.sort(inputs[:, worst, :].reshape(-1))
    axes[1].plot(values, np.arange(1, len(values) + 1) / len(values), label="logged")
    qv = reference["inputs"][worst]["quantiles"]
    axes[1].plot(qv, reference_cdf(qv)(np.asarray(qv)), label="reference", linestyle="--")
    axes[1].set_title(f"CDF of {reference['inputs'][worst]['name']} (largest PSI)")
    axes[1].legend()
    if cols == 3:
        classes = len(ref_out["class_distribution"])
        got = np.bincount(probs.argmax(1), minlength=classes)[:classes] / len(probs)
        idx = np.arange(classes)
        axes[2].bar(idx - 0.2, ref_out["class_distribution"], 0.4, label="reference")
        axes[2].bar(idx + 0.2, got, 0.4, label="logged")
        axes[2].set_title("predicted class distribution")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def monitor(
    log_dir: str | Path,
    bundle: str | Path,
    out: str | Path | None = None,
    threshold: float | None = None,
) -> MonitorResult:
    """Write LOG_DIR/drift.md (or OUT/), drift.json and drift.png; the report as a dict."""
    from toolkit.core.rundir import atomic_write_text
    from toolkit.serve.drift import compare, sample_positions
    from toolkit.serve.logs import read_logs

    logs = Path(log_dir)
    manifest, reference = _reference(Path(bundle))
    if threshold is not None:
        if threshold <= 0:
            raise UserError(f"--threshold must be > 0; got {threshold}")
        reference = {**reference, "threshold": {**reference["threshold"], "psi": threshold}}
    x, probs, shas, times = read_logs(logs)
    shape = tuple((manifest.get("input") or {}).get("shape") or x.shape[1:])
    if tuple(x.shape[1:]) != shape:
        raise UserError(f"the logged inputs have shape {x.shape[1:]}; this bundle takes {shape}")
    sampled = sample_positions(x)
    report = compare(reference, sampled, probs)
    primary = next((m for m in manifest["models"] if m.get("primary")), manifest["models"][0])
    sha = manifest["files"].get(primary["file"])
    extra = {
        "other_models": sum(1 for s in shas if s and s != sha),
        "span": f"{min(times):.0f} .. {max(times):.0f} unix time" if times else "",
    }
    target = Path(out) if out else logs
    target.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(target / "drift.json", json.dumps(report, indent=2) + "\n")
    md = atomic_write_text(target / "drift.md", _markdown(report, manifest, logs, extra))
    plot = target / "drift.png"
    if report["features"]:
        _plot(plot, reference, sampled, probs, report)
    return MonitorResult(report, md, plot, json_path)
