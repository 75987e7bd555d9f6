#!/usr/bin/env python3
"""Run this bundle's model on a device: `python run.py IMAGE...`, `--bench`, `--selftest`.

Needs only numpy, Pillow (for images) and the runtime manifest.json names: ai-edge-litert
(falling back to tflite-runtime) for .tflite, onnxruntime for .onnx. Written by
keras-edge-toolkit; its sha256 is in manifest.json, so edit a copy, not this file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FAILED, USAGE = 1, 2  # exit codes: integrity/self-test failure; bad input or missing runtime
_INT = ("int8", "uint8", "int16")


class BundleError(Exception):
    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def inside(bundle: Path, rel: str) -> Path:
    """A manifest path, refused unless it stays inside the bundle directory."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise BundleError(f"manifest path {rel!r} leaves the bundle; refusing it", FAILED)
    path = (bundle / rel).resolve()
    if os.path.commonpath([str(path), str(bundle.resolve())]) != str(bundle.resolve()):
        raise BundleError(f"manifest path {rel!r} resolves outside the bundle", FAILED)
    return path


def load_manifest(bundle: Path = HERE) -> dict:
    try:
        return json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BundleError(f"cannot read {bundle / 'manifest.json'}: {err}", FAILED) from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(bundle: Path, manifest: dict, only: list[str] | None = None) -> int:
    """Check sha256s (all files, or `only`); raise naming every file that was changed."""
    files = manifest.get("files") or {}
    bad = []
    for rel in only or sorted(files):
        path = inside(bundle, rel)
        if rel not in files:
            bad.append(f"{rel} is not listed in manifest.json")
        elif not path.is_file():
            bad.append(f"{rel} is missing")
        elif sha256(path) != files[rel]:
            bad.append(f"{rel} does not match its sha256 in manifest.json")
    if bad:
        raise BundleError(
            "bundle integrity check failed: "
            + "; ".join(bad)
            + ". The bundle was modified or corrupted: refusing to run it (re-copy the bundle).",
            FAILED,
        )
    return len(only or files)


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the runtime's C++ banner ('Created TensorFlow Lite XNNPACK delegate')."""
    try:
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    sys.stderr.flush()
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _tensor(name: str, shape, dtype, quant=None) -> dict:
    q = {"scale": float(quant[0]), "zero_point": int(quant[1])} if quant and quant[0] else None
    shape = [int(d) for d in shape]
    return {"name": name, "shape": shape, "dtype": np.dtype(dtype).name, "quantization": q}


def _lite(d: dict) -> dict:
    return _tensor(d["name"], d["shape"], d["dtype"], d["quantization"])


class Model:
    """One bundled model file in its runtime; `run` takes and returns the raw tensor dtype."""

    def __init__(
        self,
        path: Path,
        entry: dict,
        threads: int | None = None,
        provider: str | None = None,
        edgetpu: bool = False,
        delegate: str | None = None,
    ) -> None:
        self.path, self.entry, self._warm = path, entry, False
        threads = entry.get("threads") if threads is None else threads
        threads = threads or None  # 0/None: the runtime's default
        if entry["runtime"] == "litert":
            self.where = delegate or entry.get("delegate") or "xnnpack"
            self._open_litert(threads, edgetpu)
        else:
            self._open_onnx(threads, provider)

    def _open_litert(self, threads: int | None, edgetpu: bool) -> None:
        lite = None
        for module, self.library in (
            ("ai_edge_litert", "ai-edge-litert"),
            ("tflite_runtime", "tflite-runtime"),
        ):
            try:  # LiteRT first; the frozen tflite-runtime for old or 32-bit systems
                lite = importlib.import_module(f"{module}.interpreter")
                break
            except ImportError:
                continue
        if lite is None:
            package = self.entry.get("pip") or "ai-edge-litert"
            raise BundleError(
                f"no TFLite runtime installed: pip install {package} "
                "(or tflite-runtime on 32-bit/older systems)"
            )
        kwargs: dict = {"model_path": str(self.path), "num_threads": threads}
        if edgetpu:
            kwargs["experimental_delegates"] = [lite.load_delegate("libedgetpu.so.1")]
            self.where = "edgetpu"
        elif self.where == "reference":  # the portable integer kernels, no delegate
            if not hasattr(lite, "OpResolverType"):
                raise BundleError(f"{self.library} has no reference kernels (OpResolverType)")
            kwargs["experimental_op_resolver_type"] = lite.OpResolverType.BUILTIN_REF
        with _quiet_stderr():
            self._interp = lite.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        det_in, det_out = self._interp.get_input_details(), self._interp.get_output_details()
        det_out = sorted(det_out, key=lambda d: d["name"]) if len(det_out) > 1 else det_out
        self.inputs, self.outputs = [_lite(d) for d in det_in], [_lite(d) for d in det_out]
        self._in, self._outs = det_in[0]["index"], [d["index"] for d in det_out]

    def _open_onnx(self, threads: int | None, provider: str | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError(
                f"no ONNX runtime installed: pip install {self.entry.get('pip') or 'onnxruntime'}"
            ) from None
        self.library = "onnxruntime"
        available = ort.get_available_providers()
        wanted = [provider] if provider else self.entry.get("providers") or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        self._session = ort.InferenceSession(str(self.path), options, providers=chosen)
        self.where = self._session.get_providers()[0]
        types = {"tensor(float)": "float32", **{f"tensor({t})": t for t in (*_INT, "float16")}}

        def spec(a) -> dict:  # a dynamic (symbolic) dim is fed one sample at a time
            return _tensor(
                a.name, [d if isinstance(d, int) and d > 0 else 1 for d in a.shape], types[a.type]
            )

        self.inputs = [spec(a) for a in self._session.get_inputs()]
        outputs = [spec(a) for a in self._session.get_outputs()]
        self.outputs = sorted(outputs, key=lambda t: t["name"]) if len(outputs) > 1 else outputs

    def run(self, x: np.ndarray) -> np.ndarray:
        """One sample (no batch dim) already in the input dtype -> the raw output; several
        outputs (a detector's boxes and scores): flattened and joined in name order."""
        x = np.ascontiguousarray(x[None])
        if hasattr(self, "_interp"):
            self._interp.set_tensor(self._in, x)
            if self._warm:
                self._interp.invoke()
            else:  # the delegate is applied (and announces itself) on the first invoke
                with _quiet_stderr():
                    self._interp.invoke()
                self._warm = True
            got = [self._interp.get_tensor(i)[0].copy() for i in self._outs]
        else:
            names = [t["name"] for t in self.outputs]
            got = [np.asarray(o[0]) for o in self._session.run(names, {self.inputs[0]["name"]: x})]
        return got[0] if len(got) == 1 else np.concatenate([g.reshape(-1) for g in got])

    def run_float(self, x: np.ndarray) -> np.ndarray:
        """Raw float inputs (N, ...) -> raw outputs (N, ...) in the output tensor's dtype."""
        return np.stack([self.run(quantize(sample, self.inputs[0])) for sample in x])


def quantize(x: np.ndarray, tensor: dict) -> np.ndarray:
    q = tensor.get("quantization")
    if tensor["dtype"] not in _INT or not q:
        return np.asarray(x, dtype=tensor["dtype"])
    info = np.iinfo(tensor["dtype"])
    values = np.round(np.asarray(x, np.float32) / np.float32(q["scale"])) + q["zero_point"]
    return np.clip(values, info.min, info.max).astype(tensor["dtype"])


def dequantize(y: np.ndarray, tensor: dict) -> np.ndarray:
    q = tensor.get("quantization")
    if tensor["dtype"] not in _INT or not q:
        return np.asarray(y, dtype=np.float32)
    return (y.astype(np.float32) - np.float32(q["zero_point"])) * np.float32(q["scale"])


def dequantize_all(raw: np.ndarray, outputs: list[dict]) -> np.ndarray:
    """Raw (N, ...) outputs of one or several tensors -> float32 (N, D), each with its scale."""
    flat, parts, start = raw.reshape(len(raw), -1), [], 0
    for tensor in outputs:
        size = int(np.prod(tensor["shape"][1:])) if len(outputs) > 1 else flat.shape[1]
        parts.append(dequantize(flat[:, start : start + size], tensor))
        start += size
    return np.concatenate(parts, axis=1)


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class scores -> probabilities (softmax/sigmoid unless they already are)."""
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if out.shape[1] == 1:
        p = out if ((out >= 0) & (out <= 1)).all() else 1 / (1 + np.exp(-out))
        return np.concatenate([1 - p, p], axis=1)
    if (out >= -1e-6).all() and np.allclose(out.sum(axis=1), 1.0, atol=0.02):
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def load_image(path: Path, spec: dict) -> tuple[np.ndarray, str]:
    """An image of any size/mode -> the raw float input the manifest describes, plus a note."""
    from PIL import Image

    height, width, channels = spec["shape"]
    try:
        with Image.open(path) as img:
            img.load()
            before = f"{img.mode} {img.width}x{img.height}"
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit scans: 65535 -> 255
                scale = 1.0 if img.mode == "F" else 1 / 257
                values = np.clip(np.asarray(img, np.float64) * scale, 0, 255).astype(np.uint8)
                img = Image.fromarray(values)
            if img.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):  # transparency onto white
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba)
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (width, height):
                img = img.resize((width, height), getattr(Image, "Resampling", Image).BILINEAR)
            arr = np.asarray(img, dtype=np.float32).reshape(height, width, channels)
    except OSError as err:
        raise BundleError(f"{path}: not a readable image ({err})") from None
    after = f"{img.mode} {width}x{height}"
    lo, hi = spec["value_range"]
    note = "" if before == after else f"converted {before} -> {after}"
    return (lo + arr / 255.0 * (hi - lo)).astype(np.float32), note


def load_inputs(paths: list[str], spec: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """Images or .npy raw inputs -> (batch, names, notes)."""
    shape, xs, names, notes = tuple(spec["shape"]), [], [], []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise BundleError(f"input not found: {path}")
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False).astype(np.float32)
            arr = arr[None] if arr.shape == shape else arr
            if arr.shape[1:] != shape:
                raise BundleError(f"{path}: shape {arr.shape}; the model takes {shape} or N x that")
            xs.append(arr)
            names += [f"{path.name}[{i}]" for i in range(len(arr))] if len(arr) > 1 else [path.name]
            continue
        if spec.get("kind") != "image" or len(shape) != 3:
            raise BundleError(f"{path}: this model takes {shape} arrays (.npy), not images")
        arr, note = load_image(path, spec)
        xs.append(arr[None])
        names.append(path.name)
        notes += [f"{path.name}: {note}"] if note else []
    return np.concatenate(xs), names, notes


def pick(manifest: dict, name: str | None) -> dict:
    models = manifest["models"]
    if name is None:
        return next(m for m in models if m.get("primary")) if models else {}
    for m in models:
        if name in (m["name"], m["file"]):
            return m
    raise BundleError(f"no model {name!r}; this bundle has {', '.join(m['name'] for m in models)}")


def compare(got: np.ndarray, expected: np.ndarray, atol: float) -> tuple[bool, str]:
    """Raw outputs vs expected: atol 0 means bit-identical; integer atol is in quantization
    steps. Top-1 must agree wherever the expected winner leads by more than 2 x atol."""
    n = len(expected)
    if atol == 0:
        ok = got.dtype == expected.dtype and np.array_equal(got, expected)
        text = "bit-identical" if ok else f"{int((got != expected).sum())} values differ"
    else:
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        ok = float(diff.max()) <= atol
        text = f"{int((diff > 0).sum())} of {diff.size} values differ, max {diff.max():.3g}"
        text += f" (tolerance {atol:g})"
    flat = expected.reshape(n, -1).astype(np.float64)
    ranked = np.sort(flat, axis=1)
    margin = ranked[:, -1] - ranked[:, -2] if flat.shape[1] > 1 else np.full(n, np.inf)
    agree = got.reshape(n, -1).argmax(1) == flat.argmax(1)
    ok = ok and bool(agree[margin > 2 * atol].all())
    return ok, f"{text}, top-1 {int(agree.sum())}/{n}"


def selftest(bundle: Path, manifest: dict, args: argparse.Namespace) -> int:
    n = verify(bundle, manifest)
    print(f"sha256 OK for {n} files ({platform.machine()}, Python {platform.python_version()})")
    failed = 0
    for entry in manifest["models"]:
        x = np.load(inside(bundle, entry["selftest"]["inputs"]), allow_pickle=False)
        for check in entry["selftest"]["checks"]:
            expected = np.load(inside(bundle, check["expected"]), allow_pickle=False)
            delegate = check.get("delegate")
            try:
                model = Model(
                    inside(bundle, entry["file"]),
                    entry,
                    args.threads,
                    args.provider,
                    delegate=delegate,
                )
            except BundleError as err:
                if entry.get("primary") and delegate != "reference":
                    raise
                print(f"{entry['name']} ({delegate or entry['runtime']}): skipped ({err})")
                continue
            ok, text = compare(model.run_float(x.astype(np.float32)), expected, check["atol"])
            failed += not ok
            print(
                f"{entry['name']} ({model.library} {model.where}): {len(x)} samples, {text}: "
                f"{'OK' if ok else 'FAILED'}"
            )
    print("selftest passed" if not failed else "selftest FAILED")
    return FAILED if failed else 0


def bench(model: Model, entry: dict, runs: int) -> None:
    """Batch-1 latency on the first self-test input, after 10 warm-up runs."""
    sample = np.load(inside(HERE, entry["selftest"]["inputs"]))[0].astype(np.float32)
    x, times = quantize(sample, model.inputs[0]), []
    for i in range(10 + runs):
        start = time.perf_counter()
        model.run(x)
        times += [(time.perf_counter() - start) * 1000] if i >= 10 else []
    p50, p90 = np.percentile(times, [50, 90])
    print(
        f"{entry['name']} on {model.library} {model.where} ({platform.machine()}): p50 "
        f"{p50:.3f} ms, p90 {p90:.3f} ms, mean {np.mean(times):.3f} ms over {runs} runs"
    )


def predict(model: Model, manifest: dict, args: argparse.Namespace) -> None:
    """Top-k labels per input (or JSON); --save-raw keeps the raw output tensors."""
    x, names, notes = load_inputs(args.inputs, manifest["input"])
    raw = model.run_float(x)
    if args.save_raw:
        np.save(args.save_raw, raw)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    labels, results = manifest.get("labels") or [], []
    output = manifest.get("output") or {}
    post = output.get("postprocess") or ("values" if output.get("task") == "regression" else "")
    if post == "boxes":  # a detector: NMS-decoded boxes per input (detect.py, beside this file)
        import detect

        size = manifest["input"]["shape"][:2]
        rows = detect.decode(dequantize_all(raw, model.outputs), size, len(labels))
        print(detect.show(names, args.inputs, rows, labels, size, args.draw, args.json))
        return
    if post in ("values", "score", "labels"):  # real values, an anomaly score, sigmoid labels
        values = dequantize(raw, model.outputs[0]).reshape(len(raw), -1).astype(np.float64)
        for n, row in zip(names, values):  # noqa: B905
            if post == "score":
                results.append({"input": n, "score": float(row.mean())})
            elif post == "labels":
                on = [labels[i] if i < len(labels) else str(i) for i in np.flatnonzero(row >= 0.5)]
                results.append({"input": n, "labels": on})
            else:
                results.append({"input": n, "value": [float(v) for v in row]})
        lines = [f"{r['input']}: " + (", ".join(f"{v:.4f}" for v in r["value"]) if "value" in r
                 else f"{r['score']:.4f}" if "score" in r else ", ".join(r["labels"]) or "(none)")
                 for r in results]  # fmt: skip
        print(json.dumps(results, indent=2) if args.json else "\n".join(lines))
        return
    scores = dequantize(raw, model.outputs[0])
    if model.entry.get("postprocess") == "softmax":  # the bundle moved it out of the model
        scores = scores.reshape(len(scores), -1).astype(np.float64)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    for name, row in zip(names, probabilities(scores)):  # noqa: B905
        top = [
            {
                "label": labels[i] if i < len(labels) else str(i),
                "index": int(i),
                "score": round(float(row[i]), 6),
            }
            for i in np.argsort(-row, kind="stable")
        ]
        results.append({"input": name, "top": top[: args.top_k]})
        if not args.json:
            shown = ", ".join(f"{t['label']} ({t['score']:.3f})" for t in top[: args.top_k])
            print(f"{name}: {shown}")
    if args.json:
        print(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", help="images (any size/mode) or .npy raw inputs")
    parser.add_argument("--selftest", action="store_true", help="check sha256s and sample outputs")
    parser.add_argument("--bench", action="store_true", help="print latency (batch 1)")
    parser.add_argument("--runs", type=int, default=100, help="--bench timed runs")
    parser.add_argument("--model", help="model name or file (default: the primary)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--threads", type=int, help="default: the manifest's")
    parser.add_argument("--provider", help="ONNX Runtime execution provider")
    parser.add_argument("--delegate", choices=("xnnpack", "reference"), help="LiteRT kernels")
    parser.add_argument("--edgetpu", action="store_true", help="Coral: run MODEL_edgetpu.tflite")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--save-raw", metavar="NPY", help="save raw output tensors")
    parser.add_argument("--draw", metavar="DIR", help="detection: save each image with its boxes")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest()
        if args.selftest:
            return selftest(HERE, manifest, args)
        if not args.inputs and not args.bench:
            parser.error("give input files, --bench or --selftest")
        entry = pick(manifest, args.model)
        path = inside(HERE, entry["file"])
        verify(HERE, manifest, [entry["file"]])  # never run a changed model
        if args.edgetpu:
            path = path.with_name(f"{path.stem}_edgetpu.tflite")
            if not path.is_file():
                raise BundleError(f"{path.name} not found: run edgetpu_compiler {entry['file']}")
        model = Model(path, entry, args.threads, args.provider, args.edgetpu, args.delegate)
        if args.bench:
            bench(model, entry, args.runs)
        if args.inputs:
            predict(model, manifest, args)
        return 0
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
