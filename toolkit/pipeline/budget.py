"""`--precisions auto --max-drop X [--min-sqnr DB]`: the cheapest artifact inside a budget.

The budget is a drop of the task's headline metric (AUC for anomaly, MAE for regression, ...),
a floor on label-free fidelity (SQNR of the outputs vs the Keras model's, in dB: usable on
unlabelled data), or both.

Per format, rungs run cheapest first; each candidate is converted, measured in its real
runtime on the *validation* split (the test split stays for the final report, so choosing does
not peek at it), and the first rung inside the budget wins:

  tflite: int8 -> int8 of bias-corrected weights -> of equalized weights -> of equalized
          and bias-corrected weights -> of AdaRound-rounded and bias-corrected ones ->
          int8-float-io -> int8 with the most sensitive layers kept float (LiteRT's
          quantization debugger ranks them, at the ladder's granularity) -> int16x8 ->
          dynamic -> fp16 -> fp32
  onnx:   int8 -> the same four corrected int8 rungs -> int8
          with the most sensitive nodes kept float (weight and output SQNR measured on an
          int8 probe, `toolkit.convert.onnx_sensitivity`) -> dynamic -> fp16 -> fp32

The corrected int8 rungs have the plain int8's size and latency (only biases, channel scales
and which way weights round change; `toolkit.convert.equalize`, `bias_correct`, `adaround`):
they cost conversion time only.

`--granularity per-tensor` (or a `--fits` profile's `granularity`) goes to every quantized
rung; `--ptq METHOD` forces one method on every calibrated int8 rung instead of trying the
corrected rungs (toolkit.convert.methods).

With a firmware target (`--fits mcu-cortex-m`), a rung whose artifact does not fit the board's
flash or RAM (TFLM arena measured) is skipped before it is measured, and the ladder says why.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert import BY_NAME, Format, convert
from toolkit.core.progress import console

# A rung over the budget whose drop is within noise still wins when its 95 % interval puts the
# drop at most this multiple of the budget.
NOISE_SLACK = 2.0
SENSITIVE_STEPS = (1, 3)  # how many of the most sensitive layers/nodes to keep float, in turn


@dataclass(frozen=True)
class DeviceFit:
    """A device the chosen artifact must fit (a firmware target's flash and RAM).

    Each check returns None when it passes, else the one-line reason."""

    name: str
    admits: Callable[[str], str | None]  # by artifact name, before converting
    fits: Callable[[Path, str], str | None]  # by the converted file (arena measured)
    granularity: str | None = None  # the profile's weight scales, when it names them


def device_fit(name_or_path: str | Path) -> DeviceFit:
    """The DeviceFit of a firmware target profile (`--fits mcu-cortex-m`); UserError for a
    profile without flash/RAM budgets."""
    from toolkit.core.errors import UserError
    from toolkit.core.targets import io_dtype_of, load_target
    from toolkit.package.mcu import fits_target

    target = load_target(name_or_path)
    if target.firmware is None or (target.flash_kb is None and target.ram_kb is None):
        raise UserError(
            f"--fits {target.name}: not a firmware target with flash_kb/ram_kb budgets "
            "(e.g. mcu-cortex-m, esp32-s3)"
        )
    integer = ("int8", "uint8", "int16")

    def admits(artifact: str) -> str | None:
        io = io_dtype_of(artifact)
        if BY_NAME[artifact].format != "tflite":
            return f"{target.name} runs TFLite Micro: {artifact} is not a .tflite"
        if io not in integer:
            return f"{io} input/output: {target.name}'s firmware takes integer I/O"
        return None

    def fits(path: Path, artifact: str) -> str | None:
        return fits_target(path, target, BY_NAME[artifact].precision)

    return DeviceFit(target.name, admits, fits, target.granularity)


@dataclass
class Rung:
    name: str  # artifact name in the format table, e.g. "tflite-int8"
    label: str  # what the rung is, e.g. "int8, 3 most sensitive layers float"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def fmt(self) -> Format:
        return BY_NAME[self.name]


@dataclass
class Choice:
    fmt_name: str
    path: Path | None  # the chosen artifact (in the scratch dir), None when nothing fits
    ladder: list[dict[str, Any]]
    options: dict[str, Any]


def _tflite_sensitive(model: Any, calibration: np.ndarray, granularity: str | None) -> list[str]:
    from toolkit.convert.tflite import layer_sensitivity

    rows = layer_sensitivity(model, calibration, granularity=granularity or "per-channel")
    return [r["tensor_name"] for r in rows if np.isfinite(r["rmse_over_scale"])]


def _built_key(name: str, options: dict[str, Any]) -> tuple[str, str]:
    return name, repr(sorted(options.items()))


def _onnx_sensitive(
    model: Any,
    calibration: np.ndarray,
    scratch: Path,
    granularity: str | None,
    built: dict[tuple[str, str], Path],
) -> tuple[list[str], str]:
    """Quantized Conv/MatMul/Gemm nodes, most sensitive first (measured on the ladder's plain
    int8 at its granularity, converted again only if the ladder did not build it; see
    `onnx_sensitivity`), and how they were ranked. If the measurement fails, the last nodes
    first: output layers are usually the most sensitive."""
    import onnx

    from toolkit.convert.onnx_sensitivity import QUANTIZABLE, node_sensitivity

    options = {"granularity": granularity} if granularity else {}
    try:
        probe = built.get(_built_key("onnx-int8", options)) or convert(
            model, BY_NAME["onnx-int8"], scratch / "probe-int8", calibration=calibration,
            **options,
        )  # fmt: skip
        return [r["node"] for r in node_sensitivity(probe, calibration)], "most sensitive"
    except Exception as err:  # ranking is an optimisation; the rungs still run unranked
        console.print(f"  onnx node sensitivity not measured ({str(err)[:120]}); last nodes "
                      "first", highlight=False, markup=False)  # fmt: skip
    fp32 = convert(model, BY_NAME["onnx-fp32"], scratch / "probe")
    graph = onnx.load(str(fp32)).graph
    nodes = [n.name for n in reversed(graph.node) if n.op_type in QUANTIZABLE and n.name]
    return nodes, "last"


# Same size and latency as plain int8, so they come before anything that keeps float.
# Bias correction alone first: it leaves the float function as it is, where equalization
# replaces a ReLU6 between a pair by ReLU. Equalization alone next: on a fine-tuned MobileNetV1
# per tensor it beat equalization + bias correction (RESULTS.md, "cross-layer equalization
# with fixed-channel scales"), bias correction's 256-sample mean shifts then overcorrecting.
CORRECTED = [
    ("full int8, bias-corrected weights (same size and latency)", {"bias_correction": True}),
    ("full int8, equalized weights (same size and latency)", {"equalize": True}),
    ("full int8, equalized + bias-corrected weights (same size and latency)",
     {"equalize": True, "bias_correction": True}),
    ("full int8, AdaRound-rounded + bias-corrected weights (same size and latency)",
     {"adaround": True, "bias_correction": True}),
]  # fmt: skip


@dataclass(frozen=True)
class Quant:
    """How every rung quantizes: weight granularity (None: per channel) and a forced PTQ
    method (None: the ladder tries plain int8, then its corrected rungs)."""

    granularity: str | None = None
    method: str | None = None

    def apply(self, rung: Rung) -> Rung:
        from toolkit.convert.methods import get_method, takes_method

        options, label = dict(rung.options), rung.label
        if self.granularity and rung.fmt.precision not in ("fp32", "fp16"):
            options["granularity"] = self.granularity
        if self.method is not None and takes_method(rung.fmt):
            options.update(get_method(self.method).options)
            label = f"{label} [--ptq {self.method}]"
        return Rung(rung.name, label, options)


def tflite_rungs(
    model: Any,
    calibration: np.ndarray,
    float_io: bool = True,
    corrected: bool = True,
    granularity: str | None = None,
) -> Iterator[Rung]:
    """The TFLite ladder; `float_io=False` (a device that takes integer I/O only) skips the
    sensitivity analysis, whose rungs all have float I/O; `corrected=False` (a forced
    method) skips the corrected int8 rungs; layers are ranked at the ladder's `granularity`
    (a layer per-tensor weights hurt may be harmless per channel)."""
    yield Rung("tflite-int8", "full int8, int8 input/output")
    for label, options in CORRECTED if corrected else []:
        yield Rung("tflite-int8", label, dict(options))
    yield Rung("tflite-int8-float-io", "int8 internals, float input/output")
    sensitive = _tflite_sensitive(model, calibration, granularity) if float_io else []
    for k in SENSITIVE_STEPS:
        if k <= len(sensitive):
            keep = sensitive[:k]
            yield Rung(
                "tflite-int8-float-io",
                f"int8 with the {k} most sensitive layer(s) float: {', '.join(keep)}",
                {"denylisted_nodes": keep},
            )
    for precision in ("int16x8", "dynamic", "fp16", "fp32"):
        yield Rung(f"tflite-{precision}", BY_NAME[f"tflite-{precision}"].description)


def onnx_rungs(
    model: Any,
    scratch: Path,
    corrected: bool = True,
    calibration: np.ndarray | None = None,
    granularity: str | None = None,
    built: dict[tuple[str, str], Path] | None = None,
) -> Iterator[Rung]:
    """The ONNX ladder; nodes are ranked (measured, at `granularity`) only once the ladder
    gets past the full-int8 rungs, so a model whose int8 is fine never pays for it; `built`
    (filled by `search` as it converts) lends the plain int8 to the ranking."""
    yield Rung("onnx-int8", "static QDQ int8")
    for label, options in CORRECTED if corrected else []:
        yield Rung("onnx-int8", label, dict(options))
    nodes, how = _onnx_sensitive(model, calibration, scratch, granularity, built or {})
    for k in SENSITIVE_STEPS:
        if k <= len(nodes):
            keep = nodes[:k]
            yield Rung(
                "onnx-int8",
                f"int8 with the {how} {k} node(s) float: {', '.join(keep)}",
                {"nodes_to_exclude": keep},
            )
    for precision in ("dynamic", "fp16", "fp32"):
        yield Rung(f"onnx-{precision}", BY_NAME[f"onnx-{precision}"].description)


@dataclass(frozen=True)
class Budget:
    """What an artifact must keep: at most `max_drop` of the headline metric, at least
    `min_sqnr` dB of output fidelity. Either may be None (not asked)."""

    max_drop: float | None = None
    min_sqnr: float | None = None

    def judge(
        self,
        drop: float | None,
        sqnr: float | None,
        significant: bool | None = None,
        ci95: Sequence[float] | None = None,
    ) -> tuple[bool, str]:
        """(within, reason). A drop over the budget that is not significant (indistinguishable
        from the reference at this sample size) is within when its 95 % interval's upper end
        is at most NOISE_SLACK x the budget: the cheaper rung wins, and the reason says so.
        The interval, not the point drop, bounds it: on a validation split too small to
        resolve the budget almost every drop is "not significant", and keeping those let a
        real loss through (resnet8 per tensor, ONNX: val +0.50 pp kept, test +0.95 pp)."""
        within, parts = True, []
        if self.max_drop is not None:
            ok = drop is not None and drop <= self.max_drop
            shown = "n/a" if drop is None else f"{drop:.4f}"
            if ok:
                parts.append(f"drop {shown} <= budget {self.max_drop:.4f}")
            elif (
                drop is not None
                and significant is False
                and (ci95[1] if ci95 else drop) <= NOISE_SLACK * self.max_drop
            ):
                ok = True
                parts.append(
                    f"drop {shown} > budget {self.max_drop:.4f} but within noise (not "
                    f"significant, 95 % interval at most {NOISE_SLACK:g}x the budget): the "
                    "cheaper rung is kept"
                )
            else:
                parts.append(f"drop {shown} > budget {self.max_drop:.4f}")
            within &= ok
        if self.min_sqnr is not None:
            ok = sqnr is not None and sqnr >= self.min_sqnr
            within &= ok
            shown = "n/a" if sqnr is None else f"{sqnr:.1f}"
            parts.append(f"SQNR {shown} {'>=' if ok else '<'} {self.min_sqnr:g} dB")
        return within, "; ".join(parts)


def _measure(path: Path, data: Any, reference: Any) -> Any:
    """The candidate's row in its default runtime (metric, drop, fidelity, significance)."""
    from toolkit.validate.stage import validate

    report = validate([path], data, reference=reference, latency_runs=0, progress=False)
    return next(a for a in report.artifacts if not a.error)


def search(
    model: Any,
    fmt: str,
    data: Any,
    calibration: np.ndarray,
    budget: Budget,
    scratch: Path,
    device: DeviceFit | None = None,
    quant: Quant = Quant(),
) -> Choice:
    """Walk one format's ladder; return the first rung within `budget` (and the log).

    A rung the `device` does not admit or that does not fit it is skipped before its
    (costlier) accuracy pass, and the ladder says why."""
    float_io = device is None or device.admits("tflite-int8-float-io") is None
    corrected = quant.method is None
    built: dict[tuple[str, str], Path] = {}  # what the ladder converted, by rung and options
    rungs = (
        tflite_rungs(model, calibration, float_io, corrected, quant.granularity)
        if fmt == "tflite"
        else onnx_rungs(model, scratch, corrected, calibration, quant.granularity, built)
    )
    ladder: list[dict[str, Any]] = []
    for i, rung in enumerate(map(quant.apply, rungs)):
        where = scratch / f"rung{i}"
        try:
            misfit = device.admits(rung.name) if device is not None else None
            if misfit is None:
                path = convert(model, rung.fmt, where, calibration=calibration, **rung.options)
                built[_built_key(rung.name, rung.options)] = path
                misfit = device.fits(path, rung.name) if device is not None else None
            if misfit is not None:
                ladder.append({"rung": rung.label, "name": rung.name, "fits": False,
                               "within": False, "reason": misfit})  # fmt: skip
                console.print(f"  {rung.name:<22} {rung.label[:60]:<60} {misfit}",
                              highlight=False, markup=False, soft_wrap=True)  # fmt: skip
                continue
            row = _measure(path, data, model)
        except Exception as err:  # a rung that cannot be built is skipped, and logged
            ladder.append({"rung": rung.label, "name": rung.name, "error": str(err)[:200]})
            continue
        sqnr = (row.fidelity or {}).get("sqnr_db")
        within, reason = budget.judge(row.drop, sqnr, row.significant, row.drop_ci95)
        ladder.append(
            {"rung": rung.label, "name": rung.name, "metric": row.metric["value"],
             "drop": row.drop, "drop_ci95": row.drop_ci95, "significant": row.significant,
             "sqnr_db": sqnr, "within": within, "reason": reason}
        )  # fmt: skip
        console.print(  # one line per rung, unwrapped when piped (CI logs)
            f"  {rung.name:<22} {rung.label[:60]:<60} {reason}", highlight=False, soft_wrap=True
        )
        if within:
            return Choice(rung.name, path, ladder, rung.options)
    return Choice(f"{fmt}-none", None, ladder, {})


def choose(
    model: Any,
    formats: list[str],
    data: Any,
    calibration: np.ndarray,
    limits: Budget | float,
    out_dir: Path,
    device: DeviceFit | None = None,
    quant: Quant = Quant(),
) -> tuple[list[Path], dict[str, Any]]:
    """Run the ladder per format; copy each winner into `out_dir`. Returns (paths, budget).

    `limits` is a Budget, or a bare max drop (the historical signature); `device` keeps only
    artifacts that fit that device (see `search`); `quant` sets every rung's granularity and
    a forced method."""
    limits = limits if isinstance(limits, Budget) else Budget(max_drop=float(limits))
    chosen: list[Path] = []
    budget: dict[str, Any] = {"max_drop": limits.max_drop, "split": "validation", "formats": {}}
    if limits.min_sqnr is not None:
        budget["min_sqnr"] = limits.min_sqnr
    if device is not None:
        budget["fits"] = device.name
    if quant.granularity:
        budget["granularity"] = quant.granularity
    if quant.method:
        budget["ptq"] = quant.method
    scratch = Path(tempfile.mkdtemp(prefix="keras-edge-ladder-"))
    try:
        for fmt in formats:
            console.print(f"[bold]{fmt}[/]: searching for the cheapest artifact within budget")
            choice = search(model, fmt, data, calibration, limits, scratch / fmt, device, quant)
            budget["formats"][fmt] = {
                "chosen": choice.fmt_name if choice.path else None,
                "options": choice.options,
                "ladder": choice.ladder,
            }
            if choice.path is not None:
                target = out_dir / choice.path.name
                shutil.copy2(choice.path, target)
                chosen.append(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return chosen, budget
