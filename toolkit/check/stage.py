"""The regression gate: compare a fresh report.json with a committed baseline.

`check(report, baseline)` returns a `CheckResult`: one row per baseline artifact x check (plus the
reference metric), each pass / fail / skip, with baseline, current, delta and the limit it was held
to. The result renders as a rich table, JUnit XML (one testcase per row) and markdown for CI
summaries; the CLI turns any failure into exit 1. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.check.baseline import Baseline, BaselineEntry, Tolerances, resolve_baseline
from toolkit.core.errors import UserError
from toolkit.core.report import ArtifactResult, Report
from toolkit.core.tasks import PROPORTION_METRICS

__all__ = ["CHECKS", "CheckResult", "CheckRow", "check"]

# Per artifact x runtime, in this order; the JUnit testcase count is len(entries) * len(CHECKS) + 1.
CHECKS = ("present", "metric", "drop", "agreement", "max_abs_diff", "size")
EPS = 1e-9  # float noise: 0.95 - 0.945 is not more than 0.005
FLOAT_PRECISIONS = ("fp32", "fp16")  # artifacts whose max abs diff is rounding, not weights
VERSION_KEYS = ("toolkit", "tensorflow", "keras", "onnxruntime", "ai_edge_litert")


@dataclass
class CheckRow:
    """One comparison: what the baseline had, what the report has, the limit, the verdict."""

    artifact: str  # "tflite-int8"
    where: str  # "litert/xnnpack", or "(reference)" for the reference model's own metric
    check: str  # one of CHECKS
    status: str  # "pass" | "fail" | "skip" | "new"
    baseline: float | None = None
    current: float | None = None
    limit: float | None = None
    limit_op: str = "<="  # current must stay `limit_op` limit
    message: str = ""

    @property
    def subject(self) -> str:
        return f"{self.artifact} {self.where}"

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


@dataclass
class CheckResult:
    """Every comparison made, plus notes (version or data differences) that are not failures."""

    rows: list[CheckRow]
    metric_name: str
    baseline_path: str = ""
    report_path: str = ""
    tolerances: Tolerances = field(default_factory=Tolerances)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.regressions

    @property
    def gated(self) -> list[CheckRow]:
        """The rows that become JUnit testcases: everything but artifacts new in the report."""
        return [r for r in self.rows if r.status != "new"]

    def summary(self) -> str:
        """One line for the exit message: how many regressed, and the first of them."""
        gated = len(self.gated)
        if self.passed:
            return f"no regressions: {gated} checks passed against {self.baseline_path}"
        first = self.regressions[0]
        more = f" (+{len(self.regressions) - 1} more)" if len(self.regressions) > 1 else ""
        return (
            f"{len(self.regressions)} regression(s) in {gated} checks against "
            f"{self.baseline_path}: {first.subject}: {first.message}{more}"
        )

    def to_junit(self) -> str:
        from toolkit.check.render import to_junit

        return to_junit(self)

    def to_markdown(self) -> str:
        from toolkit.check.render import to_markdown

        return to_markdown(self)

    def print_table(self) -> None:
        from toolkit.check.render import print_table

        print_table(self)


def _metric_row(
    subject: tuple[str, str],
    base: float | None,
    cur: float | None,
    tol: float,
    name: str,
    higher: bool,
) -> CheckRow:
    row = CheckRow(*subject, "metric", "skip", base, cur)
    if base is None:
        row.message = "no baseline value"
        return row
    if cur is None:
        row.status, row.message = "fail", f"{name} was {base:.4f}, now not measured"
        return row
    row.limit, row.limit_op = (base - tol, ">=") if higher else (base + tol, "<=")
    worse = (base - cur) if higher else (cur - base)
    if worse > tol + EPS:
        verb = "fell" if higher else "rose"
        row.status = "fail"
        row.message = (
            f"{name} {verb} from {base:.4f} to {cur:.4f} ({cur - base:+.4f}; tolerance {tol:g})"
        )
    else:
        row.status = "pass"
    return row


def _bounded_row(
    subject: tuple[str, str],
    check: str,
    base: float | None,
    cur: float | None,
    limit: float | None,
    op: str,
    what: str,
    fmt: str,
) -> CheckRow:
    """A check of `cur` against a fixed limit (drop, agreement, parity, size)."""
    row = CheckRow(*subject, check, "skip", base, cur, limit, op)
    if limit is None:
        row.message = "no baseline value"
        return row
    if cur is None:
        row.status, row.message = "fail", f"{what} was {format(base, fmt)}, now not measured"
        return row
    bad = cur > limit + EPS if op == "<=" else cur < limit - EPS
    row.status = "fail" if bad else "pass"
    if bad:
        row.message = (
            f"{what} {format(cur, fmt)} is outside its limit {op} {format(limit, fmt)} "
            f"(baseline {format(base, fmt) if base is not None else 'n/a'})"
        )
    return row


def noise_floor(proportion: float | None, samples: int | None, paired: bool = False) -> float:
    """Half-width of a 95 % interval for a change in a proportion measured on `samples`.

    Unpaired (a fresh accuracy against the baseline's): two binomial estimates, so
    1.96 * sqrt(2 p (1 - p) / n). Paired (a drop, measured on the same samples as the reference):
    only samples where artifact and reference disagree move it, so 1.96 * sqrt(d / n) with d the
    disagreement rate. A tolerance below this would fail CI on sampling noise alone.
    """
    if proportion is None or not samples:
        return 0.0
    p = min(max(float(proportion), 0.0), 1.0)
    variance = p / samples if paired else 2 * p * (1 - p) / samples
    return 1.96 * variance**0.5


def _widened(tol: float, floor: float) -> tuple[float, str]:
    if floor > tol:
        return floor, f" (tolerance widened from {tol:g} to the {floor:.4f} noise floor)"
    return tol, ""


def _entry_rows(
    entry: BaselineEntry,
    row: ArtifactResult | None,
    tol: Tolerances,
    name: str,
    higher: bool,
    context: dict[str, Any] | None = None,
) -> list[CheckRow]:
    subject = (entry.artifact, f"{entry.runtime}/{entry.provider}")
    if row is None or row.error:
        why = "missing from the report" if row is None else f"failed to run: {row.error}"
        present = CheckRow(*subject, "present", "fail", 1.0, 0.0, message=why)
        skipped = [CheckRow(*subject, c, "skip", message=why) for c in CHECKS[1:]]
        return [present, *skipped]
    mtol = tol.for_artifact(entry.artifact)
    size_limit = None if entry.size_bytes is None else entry.size_bytes * (1 + tol.size_growth)
    size = _bounded_row(subject, "size", entry.size_bytes, row.size_bytes, size_limit, "<=",
                        "size", ",.0f")  # fmt: skip
    if size.status == "fail":
        growth = row.size_bytes / entry.size_bytes - 1
        size.message = (
            f"size grew from {entry.size_bytes:,} to {row.size_bytes:,} bytes "
            f"({growth:+.1%}; allowed +{tol.size_growth:.0%})"
        )
    ctx = context or {}
    # Sampling noise only enters when the model was retrained: the same weights give the same
    # predictions on the same samples, up to kernel rounding. A row scored on a subset (LiteRT
    # reference kernels) is as noisy as its own sample count, not the report's.
    n = None if ctx.get("same_model") else (row.samples or ctx.get("samples"))
    proportion = name in PROPORTION_METRICS
    metric_tol, metric_note = _widened(
        mtol, noise_floor(entry.metric, n) if proportion else 0.0)  # fmt: skip
    disagree = None if entry.agreement is None else 1.0 - entry.agreement
    drop_tol, drop_note = _widened(mtol, noise_floor(disagree, n, paired=True))
    agree_tol, agree_note = _widened(mtol, noise_floor(entry.agreement, n))
    rows = [
        CheckRow(*subject, "present", "pass", 1.0, 1.0),
        _metric_row(subject, entry.metric, row.metric.get("value"), metric_tol, name, higher),
        _bounded_row(subject, "drop", entry.drop, row.drop,
                     None if entry.drop is None else entry.drop + drop_tol, "<=", "drop", ".4f"),
        _bounded_row(subject, "agreement", entry.agreement, row.agreement,
                     None if entry.agreement is None else entry.agreement - agree_tol, ">=",
                     "agreement", ".4f"),
        _parity_row(subject, entry, row, ctx.get("same_model", False)),
        size,
    ]  # fmt: skip
    for r, note in zip(rows[1:4], (metric_note, drop_note, agree_note), strict=True):
        if r.status == "fail" and note:
            r.message += note
    for r in rows[1:3]:  # metric and drop: is the artifact's drop vs its reference real?
        if r.status == "fail" and row.significant is not None:
            p = f"McNemar p {row.mcnemar_p:.3g}" if row.mcnemar_p is not None else "95 % interval"
            r.message += (
                f"; the drop vs the reference is significant ({p})"
                if row.significant
                else f"; the drop vs the reference is within noise at this sample size ({p})"
            )
    return rows


def _parity_row(
    subject: tuple[str, str], entry: BaselineEntry, row: ArtifactResult, same_model: bool
) -> CheckRow:
    """Max abs diff is gated where it is a property of the conversion, not of the trained weights:
    float artifacts always (their diff is rounding), quantized ones only when the reference
    model's weights are the baseline's (a retrained model, e.g. on another CPU family whose
    oneDNN kernels round differently, quantizes to other int8 outputs)."""
    if entry.precision not in FLOAT_PRECISIONS and not same_model:
        return CheckRow(*subject, "max_abs_diff", "skip", entry.max_abs_diff, row.max_abs_diff,
                        message="reference weights differ from the baseline's (retrained): a "
                        "quantized artifact's max abs diff is not comparable")  # fmt: skip
    return _bounded_row(subject, "max_abs_diff", entry.max_abs_diff, row.max_abs_diff,
                        entry.max_abs_diff_bound, "<=", "max abs diff", ".2e")  # fmt: skip


def _notes(report: Report, baseline: Baseline) -> list[str]:
    """Differences that explain a diff without being one: versions, evaluation data."""
    notes = []
    for key in VERSION_KEYS:
        old, new = baseline.versions.get(key), report.versions.get(key)
        if old and new and old != new:
            notes.append(f"{key} {old} in the baseline, {new} now")
    old_n, new_n = baseline.data.get("samples"), report.data.get("samples")
    if old_n and new_n and old_n != new_n:
        notes.append(f"baseline measured on {old_n} samples, this report on {new_n}")
    return notes


def _load(report: Report | str | Path, baseline: Baseline | str | Path) -> tuple[Report, Baseline]:
    if not isinstance(report, Report):
        report = Report.load(report)
    if not isinstance(baseline, Baseline):
        baseline = Baseline.load(resolve_baseline(baseline))
    return report, baseline


def check(
    report: Report | str | Path,
    baseline: Baseline | str | Path,
    tolerance: float | None = None,
    *,
    size_growth: float | None = None,
    per_artifact: dict[str, float] | None = None,
) -> CheckResult:
    """Compare a report with a baseline; tolerances given here override the baseline file's.

    Never raises for a regression (the result says so; the CLI turns it into exit 1). Raises a
    UserError when the two cannot be compared (unreadable files, different metrics).
    """
    report_path = "" if isinstance(report, Report) else str(report)
    baseline_path = "" if isinstance(baseline, Baseline) else str(baseline)
    report, baseline = _load(report, baseline)
    if report.metric_name != baseline.metric_name:
        raise UserError(
            f"the baseline measures {baseline.metric_name} but the report measures "
            f"{report.metric_name}; they cannot be compared (regenerate with --update)"
        )
    for value in (tolerance, size_growth, *(per_artifact or {}).values()):
        if value is not None and value < 0:
            raise UserError(f"tolerances must be >= 0, got {value}")
    tol = baseline.tolerances.merged(tolerance, size_growth, per_artifact)
    name, higher = baseline.metric_name, baseline.higher_is_better
    ref_name = str(baseline.reference["name"])
    rows = [
        _metric_row((ref_name, "(reference)"), baseline.reference["metric"].get("value"),
                    report.reference["metric"].get("value"), tol.for_artifact(ref_name), name,
                    higher)
    ]  # fmt: skip
    current = {(a.name, a.runtime, a.provider): a for a in report.artifacts}
    old_digest = baseline.reference.get("weights_sha256")
    context = {
        "samples": report.data.get("samples"),
        "same_model": bool(old_digest) and old_digest == report.reference.get("weights_sha256"),
    }
    for entry in baseline.entries:
        rows += _entry_rows(entry, current.get(entry.key), tol, name, higher, context)
    known = {e.key for e in baseline.entries}
    for key, row in current.items():
        if key not in known:
            rows.append(CheckRow(row.name, row.where, "present", "new", None, None,
                                 message="not in the baseline (add it with --update)"))  # fmt: skip
    return CheckResult(
        rows=rows,
        metric_name=name,
        baseline_path=baseline_path or "the baseline",
        report_path=report_path,
        tolerances=tol,
        notes=_notes(report, baseline),
    )


def update_baseline(
    report: Report | str | Path,
    path: str | Path,
    tolerances: Tolerances | None = None,
) -> Baseline:
    """Write a new baseline from a report (the explicit `--update`); returns what was written."""
    source = "" if isinstance(report, Report) else str(report)
    if not isinstance(report, Report):
        report = Report.load(report)
    baseline = Baseline.from_report(report, tolerances, source=source)
    if not baseline.entries:
        raise UserError("the report has no artifact that ran; refusing to write an empty baseline")
    baseline.save(path)
    return baseline


def parse_per_artifact(items: list[str] | None) -> dict[str, float]:
    """`["tflite-int8=0.01", "*-fp32=0"]` -> {name: tol}; a malformed item is a UserError."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            tol = float(value)
        except ValueError:
            tol = None
        if not sep or not name.strip() or tol is None or tol < 0:
            raise UserError(
                f"--per-artifact expects NAME=TOLERANCE (e.g. tflite-int8=0.01), got {item!r}"
            )
        out[name.strip()] = tol
    return out
