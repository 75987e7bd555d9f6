"""Post-training quantization on hard models (issue #15): the plain converters, the maintained
PTQ tools and ours, side by side, every artifact measured in its own runtime.

    .venv/bin/python bench/ptq.py --results bench/RESULTS.md     # ~20-30 min on 2 shared cores
    .venv/bin/python bench/ptq.py --quick --out /tmp/ptq.md      # 500 test samples, one model

Models (trained ones cached in --work, so re-runs skip training; see bench/ptq_models.py):
vww_96.h5 (MLPerf Tiny visual wake words, third-party) in parity mode on CIFAR-10 images at
96x96 with `--input-range 0,1`; MobileNetV2 alpha 0.35 and MobileNetV3-Small (hard-swish,
squeeze-excite) trained to convergence on the CIFAR-10 folder at 64x64; vit_tiny (GELU,
LayerNorm, attention) at 32x32; the built-in recipes of ptq_models.FROM_RECIPES. One calibration set
(--calib samples of the training split, seed 0) for every method; scores on the test split.

Rows per (model, granularity): float Keras and the float .tflite/.onnx every tool starts
from; plain TFLiteConverter int8; onnxruntime quantize_static (MinMax, Entropy, Percentile);
ai-edge-quantizer static_wi8_ai8 (min-max, MSE weights, true min/max calibration);
nncf.quantize (fast / full bias correction, full with MINMAX activation ranges); ours:
toolkit.convert with every PTQ option its exporters take at run time (discovered by
signature, see `ours_rows`), plus any toolkit.optimize equalization / bias
correction helper that exists. Needs the `ptq` extra (`pip install -e ".[ptq]"`).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shlex
import sys
import time
import traceback
import typing
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptq_anchors as anchors
import ptq_models
from ptq_render import base_parser, commit, uptime, versions, write_section

MODELS = ("vww_96", "mobilenet_v2_035", "mobilenet_v3_small", "vww_transfer", "vww_transfer_full",
          "vww_transfer_mnist", "resnet8", "lstm_motions", "transformer_motions", "autoencoder",
          "vit_tiny")  # fmt: skip
# Exporter options that are not PTQ methods (present before issue #15).
NOT_PTQ = {
    "tflite": {"calibration", "input_signature", "denylisted_nodes", "denylisted_ops"},
    "onnx": {"calibration", "input_signature", "opset", "nodes_to_exclude", "reduce_range"},
}
HELPER_NAMES = re.compile(r"equaliz|bias_correct|cross_layer|adaround|gptq|round", re.I)


# ---------------------------------------------------------------- "ours", discovered
def _choices(module: Any, fn: Any, name: str, param: inspect.Parameter, probe: Any) -> list:
    """Values to try for a new exporter option: a Literal's values, the other bool, a constant
    named after it (RANGES, GRANULARITIES; also METHODS in toolkit.convert.<fmt>_<name>), else
    the values named by the exporter's own error for a bogus value (`probe(name, value)`)."""
    import importlib

    hint = param.annotation
    if isinstance(hint, str):
        try:
            hint = typing.get_type_hints(fn).get(name, hint)
        except Exception:
            hint = param.annotation
    args = [a for a in typing.get_args(hint) if a is not type(None)] if hint else []
    for a in [hint, *args]:
        if typing.get_origin(a) is typing.Literal:
            return [v for v in typing.get_args(a) if v != param.default]
    if isinstance(param.default, bool) or hint is bool:
        return [not bool(param.default)]
    stem = name.upper().rstrip("S")
    places = [(module, stem)]
    with contextlib.suppress(ImportError):
        places.append((importlib.import_module(f"{module.__name__}_{name}"), ""))
    for where, prefix in places:
        for attr, value in vars(where).items():
            if attr.startswith(prefix) and attr.isupper() and isinstance(value, (tuple, list)):
                vals = [v for v in value if isinstance(v, str) and v != param.default]
                if vals:
                    return vals
    message = probe(name, "__not_a_value__")
    quoted = re.findall(r"'([^']+)'", message.split("got")[0]) if message else []
    return [v for v in dict.fromkeys(quoted) if v != param.default]


def ours_rows(fmt: str, probe: Any) -> tuple[list[tuple[str, dict]], list[str], bool]:
    """(label, options) rows for toolkit's `fmt` exporter, notes, and whether it takes
    `granularity`. The first row is always the exporter's defaults."""
    import importlib

    module = importlib.import_module(f"toolkit.convert.{fmt}")
    fn = getattr(module, f"export_{fmt}")
    params = inspect.signature(fn).parameters
    new = {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in NOT_PTQ[fmt]}
    rows: list[tuple[str, dict]] = [("defaults", {})]
    notes = []
    for name, param in new.items():
        if name == "granularity":
            continue
        values = _choices(module, fn, name, param, probe)
        if not values:
            notes.append(f"{fmt} option `{name}` found, no values to try were discoverable")
        rows += [(f"{name}={v}", {name: v}) for v in values]
    # The weight methods stack (equalize or AdaRound, then bias correction): each with bias
    # correction after it; without bias correction, one row with every bool on.
    switches = [n for n, p in new.items() if isinstance(p.default, bool) and not p.default]
    last = "bias_correction" if "bias_correction" in switches else None
    if last:
        rows += [(f"{n} + {last}", {n: True, last: True}) for n in switches if n != last]
    elif len(switches) > 1:
        rows.append((" + ".join(switches), dict.fromkeys(switches, True)))
    return rows, notes, "granularity" in new


def optimize_helpers() -> list[tuple[str, Callable[..., Any]]]:
    """Functions in toolkit.optimize.* that look like PTQ weight steps (equalization, bias
    correction, rounding) and take a model first."""
    import importlib
    import pkgutil

    import toolkit.optimize as pkg

    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in ("bridge", "cluster", "prune", "qat", "stage"):
            continue
        try:
            module = importlib.import_module(f"toolkit.optimize.{info.name}")
        except Exception:
            continue
        for name, fn in vars(module).items():
            if (
                name.startswith("_")
                or not inspect.isfunction(fn)
                or fn.__module__ != module.__name__
            ):
                continue
            if not HELPER_NAMES.search(name):
                continue
            first = next(iter(inspect.signature(fn).parameters), "")
            if first in ("model", "keras_model"):
                found.append((f"{info.name}.{name}", fn))
    return found


def _probe(model: Any, fmt: str, out: Path, calib: np.ndarray, name: str, value: Any) -> str:
    """The exporter's error for `name=value` (it names the accepted values), or ""."""
    from toolkit.convert import convert

    try:
        convert(model, fmt, out, calibration=calib, **{name: value})
    except Exception as exc:
        return str(exc)
    return ""


def _helper_artifact(fn: Any, model: Any, out: Path, calib: np.ndarray, pt: bool) -> Path:
    return anchors.tflite_plain(_apply_helper(fn, model, calib), out, calib, pt)


def _apply_helper(fn: Callable[..., Any], model: Any, calib: np.ndarray) -> Any:
    import keras

    params = inspect.signature(fn).parameters
    from toolkit.core.model_copy import clone_with_weights

    clone = clone_with_weights(model)
    kw = {k: calib for k in ("calibration", "data", "calib") if k in params}
    result = fn(clone, **kw)
    return result if isinstance(result, keras.Model) else clone


# ---------------------------------------------------------------- measuring
def measure(path: Path | Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    from toolkit.data.evaldata import predict_batched
    from toolkit.runtimes import open_runner

    start = time.perf_counter()
    if isinstance(path, Path):
        runner = open_runner(path)
        try:
            out = predict_batched(runner.predict, x)
        finally:
            runner.close()
    else:
        out = path.predict(x, batch_size=256, verbose=0)
    return np.asarray(out, np.float32), time.perf_counter() - start


def score(out: np.ndarray, ref_out: np.ndarray, test: Any) -> dict:
    """The task's headline metric (accuracy, or ROC-AUC for the anomaly autoencoder) and its
    drop against float, scored exactly as `keras-edge export` scores its rows. Drops are in
    points x100 (pp for accuracy, AUC x100 for AUC)."""
    from toolkit.core.tasks import get_task
    from toolkit.validate.scoring import drop_statistics, metric_outputs
    from toolkit.validate.scoring import score as task_score

    task = get_task(test.task)
    name, sign = task.headline, 1.0 if task.higher_is_better else -1.0
    scored = metric_outputs(test, out), metric_outputs(test, ref_out)
    metrics, fid = task_score(test, out, ref_out, scored[0])
    ref_metrics, _ = task_score(test, ref_out, ref_out, scored[1])
    stats = drop_statistics(test, out, ref_out, name, task.higher_is_better,
                            (scored[1], scored[0]))  # fmt: skip
    ci = stats.get("drop_ci95")
    agree = float(np.mean(out.argmax(-1) == ref_out.argmax(-1))) if task.classifies else None
    return {"metric": float(metrics[name]),
            "drop_pp": 100 * sign * float(ref_metrics[name] - metrics[name]),
            "ci95_pp": [100 * v for v in ci] if ci else None, "mcnemar_p": stats.get("mcnemar_p"),
            "agreement": agree, "sqnr_db": fid["sqnr_db"]}  # fmt: skip


def run_case(
    m: dict,
    per_tensor: bool,
    work: Path,
    log: Callable[[str], None],
    keep: re.Pattern | None = None,
) -> list[dict]:
    """Every row of one (model, granularity); with `keep`, the float references and the
    rows whose label it matches."""
    from toolkit.convert import convert

    gran = "per-tensor" if per_tensor else "per-channel"
    out = work / "artifacts" / m["key"] / gran
    out.mkdir(parents=True, exist_ok=True)
    model, calib, pt = m["model"], m["calib"], per_tensor
    fp_dir = work / "artifacts" / m["key"] / "float"
    fp_dir.mkdir(parents=True, exist_ok=True)
    tfl32 = convert(model, "tflite-fp32", fp_dir)
    onnx32 = convert(model, "onnx-fp32", fp_dir)
    makers: list[tuple[str, str, Callable[[], Any]]] = [
        ("float", "Keras float (reference)", lambda: model),
        ("float", "float .tflite (LiteRT XNNPACK)", lambda: tfl32),
        ("float", "float .onnx (ORT CPU)", lambda: onnx32),
        ("plain", "TFLiteConverter int8", lambda: anchors.tflite_plain(model, out, calib, pt)),
    ]
    for method in ("MinMax", "Entropy", "Percentile"):
        make = partial(anchors.ort_static, onnx32, out, calib, pt, method)
        makers.append(("anchor", f"ORT quantize_static {method}", make))  # PLAIN_ORT: MinMax
    for algo in ("min_max", "mse"):
        label = "static_wi8_ai8" + (" + MSE weights" if algo == "mse" else "")
        make = partial(anchors.aeq, tfl32, out, calib, pt, algo)
        makers.append(("anchor", f"ai-edge-quantizer {label}", make))
    # each tool's calibration with the all-sample min/max instead of its per-sample average
    make = partial(anchors.aeq, tfl32, out, calib, pt, "min_max", true_min_max=True)
    makers.append(("anchor", "ai-edge-quantizer static_wi8_ai8, true min/max", make))
    for fast in (True, False):
        make = partial(anchors.nncf_quantize, onnx32, out, calib, pt, fast)
        makers.append(
            ("anchor", f"nncf.quantize, {'fast' if fast else 'full'} bias correction", make)
        )
    make = partial(anchors.nncf_quantize, onnx32, out, calib, pt, False, minmax=True)
    makers.append(("anchor", "nncf.quantize, full bias correction, MINMAX ranges", make))
    notes: list[str] = []
    for fmt in ("tflite", "onnx"):
        probe = partial(_probe, model, f"{fmt}-int8", out / "probe", calib)
        rows, found, takes_gran = ours_rows(fmt, probe)
        notes += found
        if pt and not takes_gran:
            notes.append(f"toolkit's {fmt} exporter takes no `granularity`: no per-tensor 'ours'")
            continue
        for label, opts in rows:
            opts = {**opts, **({"granularity": gran} if takes_gran else {})}
            sub = out / f"ours-{fmt}-{re.sub(r'[^A-Za-z0-9]+', '_', label)}"
            make = partial(convert, model, f"{fmt}-int8", sub, calib, **opts)
            makers.append(("ours", f"ours {fmt}-int8 {label}", make))
    for name, fn in optimize_helpers():
        sub = out / f"ours-helper-{name}"
        make = partial(_helper_artifact, fn, model, sub, calib, pt)
        makers.append(("ours", f"ours {name} + tflite-int8", make))
    rows_out, ref_out = [], None
    makers = [mk for mk in makers if keep is None or mk[0] == "float" or keep.search(mk[1])]
    for family, label, make in makers:
        row: dict[str, Any] = {"family": family, "method": label}
        try:
            start = time.perf_counter()
            # onnxruntime's calibrators leave temp files (*.data, sym_shape_infer_temp.onnx)
            # in the working directory when they fail: keep them in the work dir
            with contextlib.chdir(out):
                artifact = make()
            row["convert_s"] = round(time.perf_counter() - start, 1)
            outputs, row["eval_s"] = measure(artifact, m["x"])
            if ref_out is None:
                ref_out = outputs
            row.update(score(outputs, ref_out, m["test"]))
            row["size_bytes"] = artifact.stat().st_size if isinstance(artifact, Path) else None
        except Exception as exc:
            text = str(exc).strip()
            row["error"] = type(exc).__name__ + (f": {text.splitlines()[0][:160]}" if text else "")
            with (out / "errors.log").open("a") as handle:
                handle.write(f"{label}\n{traceback.format_exc()}\n")
        shown = row.get("error") or (
            f"{row['metric']:.4f} drop {row['drop_pp']:+.2f} pp SQNR {row['sqnr_db']:.1f} dB"
        )
        log(f"{m['key']} {gran} {label}: {shown}")
        rows_out.append(row)
    if ref_out is None:
        raise RuntimeError(f"{m['key']}: the float reference did not run")
    return [{"notes": sorted(set(notes))}, *rows_out]


def main() -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--granularities", default="per-channel,per-tensor")
    parser.add_argument("--calib", type=int, default=256, help="calibration samples")
    parser.add_argument("--limit", type=int, default=None, help="test samples (default: all)")
    parser.add_argument("--quick", action="store_true", help="vww_96 only, 500 test samples")
    parser.add_argument(
        "--section-only", action="store_true", help="rewrite the section from WORK/ptq.json"
    )
    parser.add_argument(
        "--merge", action="store_true", help="keep WORK/ptq.json's other models in the section"
    )
    parser.add_argument("--title", default=None, help="the RESULTS.md section to (re)write")
    parser.add_argument("--rows", help="only the rows whose label matches this regex (+ float)")
    parser.add_argument("--note", help="a paragraph for the section (kept in ptq.json)")
    args = parser.parse_args()
    if args.section_only:
        data = json.loads((args.work / "ptq.json").read_text())
        return write_section({**data, "note": args.note or data.get("note")}, args)
    if args.quick:
        args.models, args.limit = "vww_96", args.limit or 500
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = "python bench/ptq.py " + shlex.join(sys.argv[1:])
    before, start = uptime(), time.perf_counter()
    logf = (work / "ptq.log").open("a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    data: dict[str, Any] = {"command": command.strip(), "calib": args.calib, "models": [],
                            "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "versions": versions(), "load_before": before,
                            "commit": commit(), "rows": args.rows,
                            "note": args.note}  # fmt: skip
    keys = args.models.split(",")
    previous = None
    if args.merge and (work / "ptq.json").is_file():
        previous = json.loads((work / "ptq.json").read_text())
        data["models"] = [e for e in previous["models"] if e["key"] not in keys]
        data["command"] = f"{previous['command']}`, then `{data['command']}"
        data["load_before"] = previous["load_before"]
        data["commit"] = f"{previous.get('commit', 'unrecorded')}`, then `{data['commit']}"
    for key in keys:
        m = ptq_models.prepare(work, key, args.calib, args.limit)
        entry = {k: m[k] for k in ("key", "what", "metric", "splits", "recorded", "params")}
        entry["cases"], entry["scored"] = {}, len(m["y"])
        for gran in args.granularities.split(","):
            keep = re.compile(args.rows) if args.rows else None
            entry["cases"][gran] = run_case(m, gran == "per-tensor", work, log, keep)
            if entry not in data["models"]:
                data["models"].append(entry)
            (work / "ptq.json").write_text(json.dumps(data, indent=1, default=str))
    data["load_after"], data["wall_min"] = uptime(), (time.perf_counter() - start) / 60
    if previous is not None:
        data["wall_min"] += previous["wall_min"]
        data["date"] = f"{previous['date']} .. {data['date']}"
    (work / "ptq.json").write_text(json.dumps(data, indent=1, default=str))
    return write_section(data, args)


if __name__ == "__main__":
    sys.exit(main())
