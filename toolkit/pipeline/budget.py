"""`--precisions auto --max-drop X [--min-sqnr DB]`: the cheapest artifact inside a budget.

The budget is a drop of the task's headline metric (AUC for anomaly, MAE for regression, ...),
a floor on label-free fidelity (SQNR of the outputs vs the Keras model's, in dB: usable on
unlabelled data), or both.

Per format, rungs run cheapest first; each candidate is converted, measured in its real
runtime on the *validation* split (the test split stays for the final report, so choosing does
not peek at it), and the first rung inside the budget wins (of the equal-cost corrected
int8 rungs, all are measured and the one inside with the highest SQNR wins):

  tflite: int8 -> int8 of bias-corrected weights -> of equalized weights -> of equalized
          and bias-corrected weights -> with percentile, MSE activation ranges (one tier:
          the best inside wins) -> of AdaRound-rounded and bias-corrected weights ->
          int8-float-io -> int8 with the most sensitive layers kept float (LiteRT's
          quantization debugger ranks them, at the ladder's granularity) -> int16x8 ->
          dynamic -> fp16 -> fp32
  onnx:   int8 -> the same corrected int8 rungs (ranges: percentile) -> int8
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert import BY_NAME, convert
from toolkit.core.progress import console
from toolkit.core.report import over_drop
from toolkit.pipeline.ladder import Quant, Rung, built_key, onnx_rungs, tflite_rungs

# A rung over the budget whose drop is within noise still wins when its 95 % interval puts the
# drop at most this multiple of the budget.
NOISE_SLACK = 2.0
PLAIN = Quant()  # per channel, the ladder's own methods


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
class Choice:
    fmt_name: str
    path: Path | None  # the chosen artifact (in the scratch dir), None when nothing fits
    ladder: list[dict[str, Any]]
    options: dict[str, Any]


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
            ok = drop is not None and not over_drop(drop, self.max_drop)
            shown = "n/a" if drop is None else f"{drop:.4f}"
            if ok:
                parts.append(f"drop {shown} <= budget {self.max_drop:.4f}")
            elif (
                drop is not None
                and significant is False
                and not over_drop(ci95[1] if ci95 else drop, NOISE_SLACK * self.max_drop)
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
    quant: Quant = PLAIN,
) -> Choice:
    """Walk one format's ladder; return the first rung within `budget` (and the log), or of
    a tier of equal-cost rungs (`ladder.EQUAL_COST`) the one within it with the highest
    output SQNR: a label-free measure on every sample, steadier than a drop on a
    validation split of a few hundred (the lowest drop where no SQNR is measured).

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
    tier: list[tuple[tuple[float, float], int, Rung, Path]] = []  # within, of the tier so far
    for i, rung in enumerate(map(quant.apply, rungs)):
        if tier and rung.tier != tier[0][2].tier:
            break  # the next rung costs more: one of the tier's wins
        where = scratch / f"rung{i}"
        try:
            misfit = device.admits(rung.name) if device is not None else None
            if misfit is None:
                path = convert(model, rung.fmt, where, calibration=calibration, **rung.options)
                built[built_key(rung.name, rung.options)] = path
                misfit = device.fits(path, rung.name) if device is not None else None
            if misfit is not None:
                ladder.append({"rung": rung.label, "name": rung.name, "fits": False,
                               "within": False, "reason": misfit})  # fmt: skip
                console.print(f"  {rung.name:<22} {rung.label[:60]:<60} {misfit}",
                              highlight=False, markup=False, soft_wrap=True)  # fmt: skip
                continue
            row = _measure(path, data, model)
        except Exception as err:  # a rung that cannot be built is skipped, and logged
            text = str(err) or type(err).__name__
            ladder.append({"rung": rung.label, "name": rung.name, "error": text[:200]})
            console.print(f"  {rung.name:<22} {rung.label[:60]:<60} failed: "
                          f"{text.splitlines()[0][:120]}", highlight=False, markup=False,
                          soft_wrap=True)  # fmt: skip
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
        if within and rung.tier is None:
            ladder[-1]["chosen"] = True
            return Choice(rung.name, path, ladder, rung.options)
        if within:
            rank = (sqnr if sqnr is not None else -np.inf, -(row.drop or 0.0))
            tier.append((rank, len(ladder) - 1, rung, path))
    if tier:
        _, at, rung, path = max(tier, key=lambda t: t[0])
        ladder[at]["chosen"] = True
        ladder[at]["reason"] += (f"; the highest SQNR of {len(tier)} equal-cost rung(s) "
                                 "within budget")  # fmt: skip
        console.print(f"  chosen: {rung.label}", highlight=False, markup=False, soft_wrap=True)
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
    quant: Quant = PLAIN,
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
