"""The regression baseline: what a report measured, frozen into a small JSON that CI compares with.

A baseline is derived from a report.json (`Baseline.from_report`) and committed next to the
recipe (models/baselines/). It keeps, per artifact x runtime/provider, the metric, the drop, the
agreement, the size and a parity bound, plus the tolerances it is meant to be checked with, so
`keras-edge check REPORT --baseline B` needs no flags in CI. It is versioned (`kind` + `schema`)
and hand-editable: loosening one bound is a reviewed one-line diff.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

__all__ = ["BASELINE_KIND", "BASELINE_SCHEMA", "Baseline", "BaselineEntry", "Tolerances"]

BASELINE_KIND = "keras-edge-baseline"
BASELINE_SCHEMA = 1
DEFAULT_TOLERANCE = 0.005  # in the metric's units: half a percentage point of accuracy
DEFAULT_SIZE_GROWTH = 0.05  # fraction of the baseline size
# A parity bound has headroom over what was measured: kernels differ slightly between CPUs.
PARITY_FACTOR = 2.0
PARITY_FLOOR = 1e-4


@dataclass
class Tolerances:
    """How far a report may move from the baseline before it counts as a regression."""

    metric: float = DEFAULT_TOLERANCE  # also the slack for drop and agreement
    size_growth: float = DEFAULT_SIZE_GROWTH
    per_artifact: dict[str, float] = field(default_factory=dict)  # name or glob -> metric tol

    def for_artifact(self, name: str) -> float:
        """An exact name wins over a glob (`*-int8`), a glob over the default."""
        if name in self.per_artifact:
            return self.per_artifact[name]
        for pattern, tol in self.per_artifact.items():
            if fnmatch.fnmatchcase(name, pattern):
                return tol
        return self.metric

    def merged(
        self,
        metric: float | None = None,
        size_growth: float | None = None,
        per_artifact: dict[str, float] | None = None,
    ) -> Tolerances:
        """Command-line values over the file's: a flag given wins, one left out keeps the file's."""
        return Tolerances(
            metric=self.metric if metric is None else metric,
            size_growth=self.size_growth if size_growth is None else size_growth,
            per_artifact={**self.per_artifact, **(per_artifact or {})},
        )


@dataclass
class BaselineEntry:
    """One artifact in one runtime/provider, as it measured when the baseline was made."""

    artifact: str
    runtime: str
    provider: str
    format: str
    precision: str
    metric: float | None
    drop: float | None
    agreement: float | None
    size_bytes: int | None
    max_abs_diff: float | None
    max_abs_diff_bound: float | None  # the gate: current max_abs_diff must stay <= this

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.artifact, self.runtime, self.provider)

    @property
    def label(self) -> str:
        return f"{self.artifact} {self.runtime}/{self.provider}"


def parity_bound(measured: float | None) -> float | None:
    """Headroom over a measured max abs diff, so a different CPU's rounding does not fail CI."""
    if measured is None:
        return None
    return max(measured * PARITY_FACTOR, measured + PARITY_FLOOR)


def _number(value: Any, where: str, source: Path, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise UserError(f"{source}: {where} must be {kind} or null, got {value!r}")
    return value


@dataclass
class Baseline:
    """A versioned, committed summary of a report that `check` compares fresh reports with."""

    reference: dict[str, Any]  # {"name", "metric": {"name", "value", "higher_is_better"}}
    entries: list[BaselineEntry]
    tolerances: Tolerances = field(default_factory=Tolerances)
    data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    source: str = ""  # the report it was made from

    @property
    def metric_name(self) -> str:
        return str(self.reference["metric"]["name"])

    @property
    def higher_is_better(self) -> bool:
        metric = self.reference["metric"]
        from toolkit.core.tasks import higher_is_better

        return higher_is_better(metric)

    @classmethod
    def from_report(
        cls, report: Any, tolerances: Tolerances | None = None, source: str = ""
    ) -> Baseline:
        """Freeze a Report; rows that failed to run are left out (a baseline holds what works)."""
        from toolkit.core.report import now_iso

        entries = [
            BaselineEntry(
                artifact=row.name,
                runtime=row.runtime,
                provider=row.provider,
                format=row.format,
                precision=row.precision,
                metric=row.metric.get("value"),
                drop=row.drop,
                agreement=row.agreement,
                size_bytes=row.size_bytes,
                max_abs_diff=row.max_abs_diff,
                max_abs_diff_bound=parity_bound(row.max_abs_diff),
            )
            for row in report.artifacts
            if not row.error
        ]
        reference = {"name": report.reference["name"], "metric": dict(report.reference["metric"])}
        if report.reference.get("weights_sha256"):  # tells a retrained model from the same one
            reference["weights_sha256"] = report.reference["weights_sha256"]
        reference["metric"].setdefault("higher_is_better", report.higher_is_better)
        return cls(
            reference=reference,
            entries=entries,
            tolerances=tolerances or Tolerances(),
            data=dict(report.data),
            versions=dict(report.versions),
            created=now_iso(),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": BASELINE_KIND,
            "schema": BASELINE_SCHEMA,
            "created": self.created,
            "source": self.source,
            "reference": self.reference,
            "data": self.data,
            "tolerances": asdict(self.tolerances),
            "entries": [asdict(e) for e in self.entries],
            "versions": self.versions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        from toolkit.core.rundir import atomic_write_text

        return atomic_write_text(Path(path), self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: Path = Path("<baseline>")) -> Baseline:
        """Validate the shape first, so a wrong file fails with what is wrong, not a KeyError."""
        if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
            got = data.get("kind") if isinstance(data, dict) else type(data).__name__
            hint = " (that is a report.json; make a baseline with --update)" if (
                isinstance(data, dict) and "artifacts" in data
            ) else ""  # fmt: skip
            raise UserError(
                f"{source} is not a keras-edge baseline: kind is {got!r}, "
                f"expected {BASELINE_KIND!r}{hint}"
            )
        if data.get("schema") != BASELINE_SCHEMA:
            raise UserError(
                f"{source}: baseline schema {data.get('schema')!r} is not supported "
                f"(this toolkit reads schema {BASELINE_SCHEMA}); regenerate it with --update"
            )
        ref = data.get("reference")
        metric = ref.get("metric") if isinstance(ref, dict) else None
        if not isinstance(metric, dict) or "name" not in metric or "name" not in ref:
            raise UserError(f"{source}: reference must be {{name, metric: {{name, value}}}}")
        _number(metric.get("value"), "reference.metric.value", source)
        tol = data.get("tolerances") or {}
        if not isinstance(tol, dict):
            raise UserError(f"{source}: tolerances must be an object")
        per = tol.get("per_artifact") or {}
        if not isinstance(per, dict):
            raise UserError(f"{source}: tolerances.per_artifact must map names to numbers")
        tolerances = Tolerances(
            metric=_number(tol.get("metric", DEFAULT_TOLERANCE), "tolerances.metric", source),
            size_growth=_number(
                tol.get("size_growth", DEFAULT_SIZE_GROWTH), "tolerances.size_growth", source
            ),
            per_artifact={
                str(k): _number(v, f"tolerances.per_artifact.{k}", source) for k, v in per.items()
            },
        )
        if not isinstance(data.get("entries"), list):
            raise UserError(f"{source}: entries must be a list")
        entries = [cls._entry(e, i, source) for i, e in enumerate(data["entries"])]
        return cls(
            reference=ref,
            entries=entries,
            tolerances=tolerances,
            data=data.get("data") or {},
            versions=data.get("versions") or {},
            created=str(data.get("created", "")),
            source=str(data.get("source", "")),
        )

    @staticmethod
    def _entry(entry: Any, i: int, source: Path) -> BaselineEntry:
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{source}: {where} is not an object")
        missing = [k for k in ("artifact", "runtime", "provider") if not entry.get(k)]
        if missing:
            raise UserError(f"{source}: {where} lacks {', '.join(missing)}")
        nums = {
            k: _number(entry.get(k), f"{where}.{k}", source)
            for k in ("metric", "drop", "agreement", "max_abs_diff", "max_abs_diff_bound")
        }
        return BaselineEntry(
            artifact=str(entry["artifact"]),
            runtime=str(entry["runtime"]),
            provider=str(entry["provider"]),
            format=str(entry.get("format", "")),
            precision=str(entry.get("precision", "")),
            size_bytes=_number(
                entry.get("size_bytes"), f"{where}.size_bytes", source, integer=True
            ),
            **nums,
        )

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read a baseline file; a missing or malformed one is a UserError naming the problem."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"baseline not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, path)


def resolve_baseline(name_or_path: str | Path) -> Path:
    """A path, or the name of a built-in baseline (`digits-cnn` -> models/baselines/...json)."""
    path = Path(name_or_path).expanduser()
    text = str(name_or_path)
    if path.exists() or path.suffix or "/" in text:
        return path
    from toolkit.core.resources import builtin_dir

    try:
        builtin = builtin_dir("models") / "baselines" / f"{text}.json"
    except UserError:
        return path
    return builtin if builtin.is_file() else path
