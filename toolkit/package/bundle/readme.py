"""The bundle's README.md, filled from its manifest: what a device developer reads first."""

from __future__ import annotations

from typing import Any

from toolkit.package.bundle import render_readme


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _size(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1024:.1f} KiB"


def _model_rows(manifest: dict[str, Any]) -> str:
    rows = []
    for m in manifest["models"]:
        v = m.get("validation") or {}
        where = f"{m['runtime']} ({m.get('delegate') or ', '.join(m.get('providers', []))})"
        name = f"**{m['name']}**" if m.get("primary") else f"{m['name']} (alternative)"
        metric = (v.get("metric") or {}).get("value")
        rows.append(
            f"| {name} | `{m['file']}` | {where} | {_size(v.get('size_bytes'))} | "
            f"{_fmt(metric)} | {_fmt(v.get('drop'), '+.4f')} | {_fmt(v.get('agreement'), '.3f')} |"
        )
    return "\n".join(rows)


def _input_details(manifest: dict[str, Any]) -> str:
    spec = manifest["input"]
    lines = [
        f"- raw input shape {spec.get('shape')} ({spec.get('layout')}), float32 values in "
        f"{spec.get('value_range')}; normalization is {spec.get('normalization')}",
    ]
    if spec.get("kind") == "image":
        lines.append(f"- colour mode: {spec.get('color_mode')}; images are resized bilinearly")
    for m in manifest["models"]:
        tensor = m["inputs"][0]
        q = tensor.get("quantization")
        quant = (
            f"quantized: q = round(x / {q['scale']:.6g}) {'-' if q['zero_point'] < 0 else '+'} "
            f"{abs(q['zero_point'])}, clipped to "
            f"{tensor['dtype']}"
            if q
            else "float input"
        )
        lines.append(f"- `{m['file']}` input `{tensor['dtype']}` {tensor['shape']}: {quant}")
        if m.get("postprocess") == "softmax":
            lines.append(
                f"- `{m['file']}` outputs int8 logits: {m['derived_from']}; dequantize them with "
                "the output scale and zero point in manifest.json, then apply softmax"
            )
    return "\n".join(lines)


def _edgetpu_text(manifest: dict[str, Any]) -> str:
    check = manifest.get("edgetpu")
    if not check:
        return ""
    verdict = (
        "passed: the model is full-integer and uses only ops the Edge TPU documents as supported"
        if check["ok"]
        else "FAILED: " + "; ".join(check["problems"])
    )
    ops = ", ".join(f"{k} x{v}" for k, v in check["ops"].items())
    return (
        "\n## Edge TPU check\n\n"
        "The Edge TPU compiler is not installable where this bundle was built, so the model was "
        f"checked against the documented requirements ({check['source']}): {verdict}.\n"
        f"Ops: {ops}. I/O: {check['io_dtypes']}. Compile it before use: "
        "`edgetpu_compiler model-uint8.tflite`; the compiler has the final word.\n"
    )


def _serve_text(manifest: dict[str, Any]) -> str:
    from toolkit.package.bundle.deploy import deploy_for_manifest, readme_section

    return readme_section(manifest["name"], deploy_for_manifest(manifest))


def readme_text(manifest: dict[str, Any], target: Any) -> str:
    """README.md for a bundle (deterministic: only manifest values go in)."""
    primary = next(m for m in manifest["models"] if m.get("primary"))
    v = primary.get("validation") or {}
    metric_name = (v.get("metric") or {}).get("name", "metric")
    ref = manifest.get("reference") or {}
    ref_metric = (ref.get("metric") or {}).get("value")
    data = (v.get("data") or {}).get("name")
    spec = manifest["input"]
    image = spec.get("kind") == "image"
    input_text = (
        f"{spec.get('color_mode')}, {spec['shape'][1]}x{spec['shape'][0]}, pixels 0..255 mapped "
        f"to {spec.get('value_range')}"
        if image
        else f"raw arrays of shape {spec.get('shape')}"
    )
    threads = target.threads
    return render_readme(
        {
            "name": manifest["name"],
            "target": target.name,
            "description": target.description,
            "toolkit_version": manifest["versions"].get("packaged_with"),
            "top_k": 3,
            "threads_text": f"{threads} threads" if threads else "the runtime's default threads",
            "input_text": input_text,
            "shape": spec.get("shape"),
            "metric_name": metric_name,
            "model_rows": _model_rows(manifest),
            "data_text": data or "no data (not validated)",
            "reference_text": _fmt(ref_metric),
            "selftest_text": f"Self-test data: {manifest['selftest']}.",
            "input_details": _input_details(manifest),
            "notes": "\n".join(f"- {n}" for n in target.notes) or "- none",
            "edgetpu_text": _edgetpu_text(manifest),
            "serve_text": _serve_text(manifest),
        }
    )
