"""The validation report: report.json (the contract), report.md, a rich table and a plot.

report.json is what CI gates, baselines and bundles read, so its keys are fixed by DESIGN.md and
`Report.load` refuses a file without them. Rendering lives in `toolkit.validate.render`; nothing
here imports TensorFlow, ONNX Runtime or matplotlib.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

__all__ = [
    "AGREEMENT_MEANS",
    "ARTIFACT_KEYS",
    "DROP_MEANS",
    "ArtifactResult",
    "Report",
    "collect_versions",
    "now_iso",
]

SCHEMA_VERSION = 1
DROP_MEANS = (
    "reference minus artifact for higher-is-better metrics, artifact minus reference for "
    "lower-is-better; positive = worse"
)
AGREEMENT_MEANS = (
    "classification: fraction of samples with the reference's top-1 class; regression: fraction "
    "of samples whose outputs are all within 1% of the reference outputs' range"
)
# The keys DESIGN.md promises for every artifact entry (error/flags/notes come on top).
ARTIFACT_KEYS = (
    "name",
    "format",
    "precision",
    "path",
    "size_bytes",
    "gzip_bytes",
    "runtime",
    "provider",
    "metric",
    "drop",
    "agreement",
    "max_abs_diff",
    "latency_ms",
)
REPORT_KEYS = ("reference", "artifacts", "versions")
# Without a budget, these only warn: a drop over 1 percentage point (1 % of the reference for
# lower-is-better metrics such as MAE) or fewer than 98 % of samples agreeing with Keras.
WARN_DROP_HIGHER = 0.01
WARN_DROP_RELATIVE_LOWER = 0.01
WARN_AGREEMENT = 0.98
# Drops are differences of sample proportions: 3 of 1,000 samples is 0.0030000000000000027,
# which a bare `drop > 0.003` calls over a 0.003 budget.
DROP_SLACK = 1e-9


def over_drop(drop: float | None, budget: float | None) -> bool:
    """Whether `drop` is over `budget` (False when either is None), up to float rounding."""
    return drop is not None and budget is not None and drop > budget + DROP_SLACK


# report.json key -> distribution it is read from (metadata only: importing them is slow).
_DISTRIBUTIONS = {
    "toolkit": ("keras-edge-toolkit",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu"),
    "ai_edge_litert": ("ai-edge-litert",),
    "numpy": ("numpy",),
}


def collect_versions() -> dict[str, str | None]:
    """Versions of everything that shaped the numbers, so a report can be reproduced."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for key, dists in _DISTRIBUTIONS.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    versions["python"] = platform.python_version()
    versions["platform"] = platform.platform()
    return versions


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ArtifactResult:
    """One artifact measured in one runtime/provider (a row of the validation table)."""

    name: str  # "tflite-int8"
    format: str
    precision: str
    path: str
    size_bytes: int
    gzip_bytes: int  # what an over-the-air update costs
    runtime: str
    provider: str
    metric: dict[str, Any]  # {"name", "value"}
    drop: float | None = None  # see DROP_MEANS
    agreement: float | None = None  # see AGREEMENT_MEANS
    max_abs_diff: float | None = None
    latency_ms: dict[str, float] | None = None  # {"p50", "p90"} at batch 1
    # Label-free fidelity to the reference outputs: {"sqnr_db", "cosine", "relative_rmse",
    # "top5_agreement" (class outputs)}; see core.metrics.fidelity.
    fidelity: dict[str, Any] | None = None
    # Is the drop noise? Paired-bootstrap 95 % interval of `drop`, exact McNemar p-value
    # (accuracy-like metrics), and whether the drop is significant at 5 % (validate.stats).
    drop_ci95: list[float] | None = None
    mcnemar_p: float | None = None
    significant: bool | None = None
    error: str | None = None  # set when the artifact failed to load or run here
    crash: str | None = None  # the runtime's process died: "SIGABRT", "SIGSEGV", "exit 1"
    # Set when this row ran on a subset (LiteRT reference kernels): how many samples, and the
    # fraction of them whose outputs equal the XNNPACK row's bit for bit.
    samples: int | None = None
    bit_exact: float | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Optimize steps of the model this artifact came from ("prune+cluster"); None: the plain
    # model. Such a row is named "<variant>-<plain artifact>", e.g. "prune-tflite-int8".
    variant: str | None = None
    # How a quantized artifact's int8 was made: {"granularity", "ranges"}; None: not quantized.
    ptq: dict[str, str] | None = None

    @property
    def base_name(self) -> str:
        """The plain artifact this row mirrors ("tflite-int8" for "prune-tflite-int8")."""
        return self.name.removeprefix(f"{self.variant}-") if self.variant else self.name

    @property
    def where(self) -> str:
        return f"{self.runtime}/{self.provider}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        optional = (
            "error",
            "crash",
            "variant",
            "fidelity",
            "drop_ci95",
            "mcnemar_p",
            "significant",
            "samples",
            "bit_exact",
            "ptq",
        )
        for key in optional:  # absent rather than null: older readers see no change
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        """One line for logs: 'tflite-int8 litert/xnnpack: accuracy 0.9700 (drop 0.0100) ...'."""
        if self.error:
            return f"{self.name} {self.where}: FAILED {self.error}"
        value, drop = self.metric.get("value"), self.drop
        text = f"{self.name} {self.where}: {self.metric['name']} "
        text += "n/a" if value is None else f"{value:.4f}"
        text += f" (drop {'n/a' if drop is None else format(drop, '+.4f')}"
        text += f", agreement {self.agreement:.3f}" if self.agreement is not None else ""
        if self.fidelity:
            text += f", SQNR {self.fidelity['sqnr_db']:.1f} dB"
        text += ")"
        if self.latency_ms:
            text += f", p50 {self.latency_ms['p50']:.3f} ms"
        return text


def _check_keys(data: Any, keys: tuple[str, ...], what: str, path: Path) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a validation report: {what} is not a JSON object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{path} is not a valid report: {what} lacks {', '.join(missing)}")


@dataclass
class Report:
    """Everything validation measured, plus what is needed to trust and reproduce it."""

    reference: dict[str, Any]  # {"name", "path", "metric": {"name", "value", "higher_is_better"}}
    artifacts: list[ArtifactResult]
    versions: dict[str, str | None]
    data: dict[str, Any] = field(default_factory=dict)  # {"name", "samples", "task"}
    created: str = field(default_factory=now_iso)
    budget: dict[str, Any] | None = None  # {"max_drop", "chosen", "ladder": [...]}; carried
    # Artifacts that could not apply to this model, left out of the export: [{"name", "reason"}]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    # Where the wall time went, in seconds: convert_s, reference_s, accuracy_s, latency_s, jobs.
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_name(self) -> str:
        return str(self.reference["metric"]["name"])

    @property
    def higher_is_better(self) -> bool:
        metric = self.reference["metric"]
        from toolkit.core.tasks import higher_is_better

        return higher_is_better(metric)

    @property
    def agreement_means(self) -> str:
        """What `agreement` means for this report's task, in words (the Task registry's)."""
        from toolkit.core.tasks import TASKS

        task = TASKS.get(str(self.data.get("task", "")))
        return task.agreement_means if task is not None else AGREEMENT_MEANS

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "reference": self.reference,
            "artifacts": [a.to_dict() for a in self.artifacts],
            "versions": self.versions,
            "data": self.data,
            "created": self.created,
            "drop_means": DROP_MEANS,
            "agreement_means": self.agreement_means,
        }
        if self.budget is not None:
            out["budget"] = self.budget
        out["skipped"] = self.skipped
        if self.timings:
            out["timings"] = self.timings
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write_json(self, out_dir: str | Path) -> Path:
        """Write report.json (atomically) into `out_dir`; `validate.render.save_report` adds
        report.md and the plot beside it."""
        from toolkit.core.rundir import atomic_write_text

        return atomic_write_text(Path(out_dir) / "report.json", self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path = Path("<report>")) -> Report:
        _check_keys(data, REPORT_KEYS, "the report", source)
        _check_keys(data["reference"], ("name", "metric"), "reference", source)
        _check_keys(data["reference"]["metric"], ("name", "value"), "reference.metric", source)
        if not isinstance(data["artifacts"], list):
            raise UserError(f"{source} is not a valid report: artifacts is not a list")
        for i, entry in enumerate(data["artifacts"]):
            _check_keys(entry, ARTIFACT_KEYS, f"artifacts[{i}]", source)
            _check_keys(entry["metric"], ("name", "value"), f"artifacts[{i}].metric", source)
        _check_keys(data["versions"], (), "versions", source)
        return cls(
            reference=data["reference"],
            artifacts=[ArtifactResult.from_dict(a) for a in data["artifacts"]],
            versions=data["versions"],
            data=data.get("data", {}),
            created=data.get("created", ""),
            budget=data.get("budget"),
            skipped=list(data.get("skipped") or []),
            timings=dict(data.get("timings") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read a report.json (or the directory holding one); a UserError says what is wrong."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        if not path.is_file():
            raise UserError(f"report not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, path)

    def artifact(self, name: str, runtime: str | None = None) -> ArtifactResult:
        """The row for an artifact; `runtime` is 'litert' or 'litert:xnnpack' (default: first)."""
        rt, _, provider = (runtime or "").partition(":")
        for row in self.artifacts:
            if row.name == name and rt in ("", row.runtime) and provider in ("", row.provider):
                return row
        shown = ", ".join(
            dict.fromkeys(f"{a.name} ({a.runtime}:{a.provider})" for a in self.artifacts)
        )
        where = f" on {runtime}" if runtime else ""
        raise UserError(f"no artifact {name!r}{where} in the report; it has: {shown or 'none'}")

    def apply_budget_flags(self, max_drop: float | None, min_sqnr: float | None = None) -> None:
        """Recompute every row's flags: failures, drops over the budget, low agreement.

        With no budget, large drops are flagged as warnings only; nothing here fails a run
        (the gate in `check` decides that from the flags' inputs).
        """
        ref_value = self.reference["metric"]["value"]
        if self.higher_is_better:
            warn_drop = WARN_DROP_HIGHER
        else:
            warn_drop = WARN_DROP_RELATIVE_LOWER * abs(ref_value or 0.0) or 1e-9
        for row in self.artifacts:
            flags = []
            if row.error:
                flags.append(f"failed in {row.where}")
            elif row.drop is not None:
                if over_drop(row.drop, max_drop):
                    flags.append(f"drop {row.drop:.4g} > budget {max_drop:g}")
                elif max_drop is None and row.drop > warn_drop:
                    flags.append(f"warning: drop {row.drop:.4g} > {warn_drop:.4g}")
            if row.agreement is not None and row.agreement < WARN_AGREEMENT:
                flags.append(f"agreement {row.agreement:.3f} < {WARN_AGREEMENT}")
            sqnr = (row.fidelity or {}).get("sqnr_db")
            if min_sqnr is not None and sqnr is not None and sqnr < min_sqnr:
                flags.append(f"SQNR {sqnr:.1f} dB < budget {min_sqnr:g} dB")
            row.flags = flags

    def over_budget(
        self, max_drop: float | None, min_sqnr: float | None = None
    ) -> list[ArtifactResult]:
        """Rows that failed to run, lose more than `max_drop`, or reproduce the reference's
        outputs below `min_sqnr` dB (for gates)."""

        def over(a: ArtifactResult) -> bool:
            sqnr = (a.fidelity or {}).get("sqnr_db")
            return bool(
                a.error
                or over_drop(a.drop, max_drop)
                or (min_sqnr is not None and (sqnr is None or sqnr < min_sqnr))
            )

        return [a for a in self.artifacts if over(a)]


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB': sizes people compare at a glance."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
