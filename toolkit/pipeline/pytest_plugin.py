"""pytest plugin (entry point `keras_edge`): accuracy budgets as ordinary asserts in your tests.

    def test_int8(edge_report):
        edge_report.artifact("tflite-int8").assert_drop_at_most(0.005)

`edge_report` loads a report.json (or export dir) named by `@pytest.mark.edge_report(PATH)`,
`--edge-report PATH` or the ini key `edge_report`; `edge_export` runs export + validation on a
model and dataset once per session. pytest loads this module in every session of an environment
where the toolkit is installed, so nothing heavy is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["EdgeArtifact", "EdgeReport"]


class EdgeArtifact:
    """Every measured row of one artifact (all runtimes, or the one asked for); asserts hold
    for each row, and a failure names the row, the value and the budget."""

    def __init__(self, name: str, rows: list[Any], metric_name: str) -> None:
        self.name = name
        self.rows = rows
        self.metric_name = metric_name

    def __repr__(self) -> str:
        return f"EdgeArtifact({self.name!r}, {[r.where for r in self.rows]})"

    @property
    def row(self) -> Any:
        """The first row: handy for reading values (`.row.metric["value"]`)."""
        return self.rows[0]

    def _assert(self, what: str, budget: float, value_of: Callable[[Any], Any], over: bool,
                fmt: str) -> EdgeArtifact:  # fmt: skip
        __tracebackhide__ = True
        problems = []
        for row in self.rows:
            where = f"{row.name} on {row.where}"
            if row.error:
                problems.append(f"{where} failed to run: {row.error}")
                continue
            value = value_of(row)
            if value is None:
                problems.append(f"{where}: {what} was not measured")
            elif (value > budget) if over else (value < budget):
                word = "exceeds the budget" if over else "is below the minimum"
                problems.append(
                    f"{where}: {what} {format(value, fmt)} {word} {format(budget, fmt)} "
                    f"({self.metric_name} {row.metric.get('value', float('nan')):.4f})"
                )
        if problems:
            raise AssertionError("\n".join(problems))
        return self

    def assert_drop_at_most(self, max_drop: float) -> EdgeArtifact:
        """Reference minus artifact (positive = worse), in the metric's units: 0.005 = 0.5 pp."""
        __tracebackhide__ = True
        return self._assert("drop", max_drop, lambda r: r.drop, True, ".4f")

    def assert_agreement_at_least(self, min_agreement: float) -> EdgeArtifact:
        """Fraction of samples whose top-1 matches the reference model's."""
        __tracebackhide__ = True
        return self._assert("agreement", min_agreement, lambda r: r.agreement, False, ".4f")

    def assert_size_at_most(self, max_bytes: int) -> EdgeArtifact:
        """The file size in bytes (what the device stores)."""
        __tracebackhide__ = True
        return self._assert("size", max_bytes, lambda r: r.size_bytes, True, ",.0f")

    def assert_max_abs_diff_at_most(self, bound: float) -> EdgeArtifact:
        """Largest absolute output difference from the reference model (parity)."""
        __tracebackhide__ = True
        return self._assert("max abs diff", bound, lambda r: r.max_abs_diff, True, ".3g")


class EdgeReport:
    """A loaded validation report, with `artifact(name)` for budget asserts."""

    def __init__(self, report: Any, path: Path | None = None, export: Any = None) -> None:
        self.report = report  # toolkit.core.report.Report
        self.path = path
        self.export = export  # ExportResult when produced by `edge_export`

    def __repr__(self) -> str:
        return f"EdgeReport({str(self.path)!r}, artifacts={self.names})"

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(a.name for a in self.report.artifacts))

    def artifact(self, name: str, runtime: str | None = None) -> EdgeArtifact:
        """Rows of `name`; `runtime` narrows to 'litert' or 'litert:xnnpack' (default: all)."""
        __tracebackhide__ = True
        rt, _, provider = (runtime or "").partition(":")
        rows = [
            a
            for a in self.report.artifacts
            if a.name == name and rt in ("", a.runtime) and provider in ("", a.provider)
        ]
        if not rows:
            shown = ", ".join(f"{a.name} ({a.runtime}:{a.provider})" for a in self.report.artifacts)
            where = f" on {runtime}" if runtime else ""
            raise AssertionError(f"no artifact {name!r}{where} in {self.path}; it has: {shown}")
        return EdgeArtifact(name, rows, self.report.metric_name)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("keras-edge", "keras-edge accuracy budgets")
    group.addoption(
        "--edge-report",
        dest="edge_report",
        default=None,
        help="report.json (or export dir) for the edge_report fixture.",
    )
    parser.addini("edge_report", "report.json (or export dir) for the edge_report fixture.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "edge_report(path): the report.json or export dir the edge_report fixture loads"
    )


def _load(path: Path) -> EdgeReport:
    from toolkit.core.errors import UserError
    from toolkit.core.report import Report

    try:
        return EdgeReport(Report.load(path), path)
    except UserError as err:
        problem = str(err)
    pytest.fail(f"edge_report: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def _edge_report_cache() -> dict[Path, EdgeReport]:
    return {}


@pytest.fixture
def edge_report(request: pytest.FixtureRequest, _edge_report_cache: dict) -> EdgeReport:
    """The report named by the closest `edge_report` marker, else --edge-report, else the ini."""
    marker = request.node.get_closest_marker("edge_report")
    config = request.config
    if marker is not None and marker.args:
        raw, base = marker.args[0], Path(request.node.path).parent
    elif config.getoption("edge_report"):
        raw, base = config.getoption("edge_report"), Path(config.invocation_params.dir)
    elif config.getini("edge_report"):
        raw, base = config.getini("edge_report"), config.rootpath
    else:
        pytest.fail(
            "edge_report: no report given; pass --edge-report PATH, set `edge_report = PATH` "
            "in the pytest ini, or mark the test with @pytest.mark.edge_report(PATH)",
            pytrace=False,
        )
    path = (base / Path(str(raw)).expanduser()).resolve()
    if path not in _edge_report_cache:
        _edge_report_cache[path] = _load(path)
    return _edge_report_cache[path]


def _key(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, (str, int, float, bool, type(None), Path)):
        return str(value) if isinstance(value, Path) else value
    return ("object", id(value))  # an in-memory Keras model: cached by identity


@pytest.fixture(scope="session")
def edge_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., EdgeReport]:
    """`edge_export(model, data=None, formats=None, precisions=None, **run_export_kwargs)`.

    `model` is a run dir, a model file, or an in-memory Keras model (then `data` is required).
    Each distinct call exports and validates once per session; repeats return the cached report.
    """
    cache: dict[Any, EdgeReport] = {}

    def run(
        model: Any,
        data: str | None = None,
        formats: list[str] | None = None,
        precisions: list[str] | None = None,
        **kwargs: Any,
    ) -> EdgeReport:
        key = (_key(model), data, _key(formats), _key(precisions), _key(kwargs))
        if key in cache:
            return cache[key]
        from toolkit.pipeline.exporting import run_export

        out = tmp_path_factory.mktemp("edge-export")
        if not isinstance(model, (str, Path)):
            saved = out / "model.keras"
            model.save(saved)
            model = saved
        kwargs.setdefault("out", out / "export")
        result, report = run_export(
            model, data=data, formats=formats, precisions=precisions, **kwargs
        )
        if report is None:
            pytest.fail(f"edge_export: no dataset known for {model}; pass data=...", pytrace=False)
        cache[key] = EdgeReport(report, result.export_dir / "report.json", export=result)
        return cache[key]

    return run
