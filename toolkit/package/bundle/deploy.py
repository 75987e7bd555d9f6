"""Serving files for Linux targets: serve.py, requirements-serve.txt, and how to start it on
the device (a systemd unit on a Raspberry Pi, a Dockerfile on x86-64 and Jetson).

Base images are named, not built here (no network at build time); the README says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.package.bundle import TEMPLATES

SERVE_SCRIPT = TEMPLATES / "serve.py"
SERVE_REQUIREMENTS = [
    "fastapi>=0.115",
    "uvicorn>=0.30",
    "prometheus-client>=0.20",
    "python-multipart>=0.0.9",
]
UNIT_NAME = "keras-edge-serve.service"
# platform -> how the server is started there; an Edge TPU target is left out (serve.py runs
# the CPU delegate only).
HOW = {"linux-aarch64": "systemd", "linux-x86_64": "docker", "linux-aarch64-cuda": "docker"}
BASE_IMAGES = {
    "linux-x86_64": "python:3.11-slim-bookworm",
    # JetPack 6 (L4T r36); onnxruntime-gpu for Jetson comes from NVIDIA's Jetson wheels.
    "linux-aarch64-cuda": "nvcr.io/nvidia/l4t-jetpack:r36.4.0",
}


@dataclass(frozen=True)
class Deploy:
    how: str  # systemd | docker
    platform: str


def deploy_for(target: Any) -> Deploy | None:
    """None when the target gets no server (Android, MCUs, the Edge TPU)."""
    how = HOW.get(target.platform)
    if how is None or target.edgetpu:
        return None
    return Deploy(how, target.platform)


def deploy_for_manifest(manifest: dict[str, Any]) -> Deploy | None:
    serve = manifest.get("serve")
    return Deploy(serve["how"], manifest["target"]["platform"]) if serve else None


def systemd_unit(name: str) -> str:
    return f"""# keras-edge serve for {name}. Install (bundle in /opt/{name}, its venv inside it):
#   sudo cp {UNIT_NAME} /etc/systemd/system/ && sudo systemctl daemon-reload
#   sudo systemctl enable --now keras-edge-serve
[Unit]
Description=keras-edge model server ({name})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=pi
WorkingDirectory=/opt/{name}
ExecStart=/opt/{name}/.venv/bin/python /opt/{name}/serve.py --host 127.0.0.1 --port 8000
Restart=on-failure
RestartSec=3
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=/opt/{name}/logs

[Install]
WantedBy=multi-user.target
"""


def dockerfile(name: str, platform: str) -> str:
    base = BASE_IMAGES[platform]
    gpu = platform.endswith("cuda")
    extra = (
        "# onnxruntime-gpu for Jetson is not on PyPI: install NVIDIA's wheel for your JetPack\n"
        "# (requirements.txt names it) before the line below, e.g. from a local wheel file.\n"
        if gpu
        else ""
    )
    run_flags = "--runtime nvidia " if gpu else ""
    return f"""# keras-edge serve for {name} ({platform}). Base image named, not built here:
#   docker build -t {name}-serve .
#   docker run --rm {run_flags}-p 127.0.0.1:8000:8000 {name}-serve
FROM {base}
WORKDIR /bundle
COPY requirements.txt requirements-serve.txt ./
{extra}RUN python3 -m pip install --no-cache-dir -r requirements.txt -r requirements-serve.txt
COPY . .
RUN python3 run.py --selftest
RUN useradd --system --no-create-home serve
USER serve
EXPOSE 8000
# 0.0.0.0 inside the container only; publish the port on 127.0.0.1 unless you mean otherwise.
CMD ["python3", "serve.py", "--host", "0.0.0.0", "--port", "8000"]
HEALTHCHECK CMD python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
"""


def write_deploy_files(work: Path, name: str, deploy: Deploy) -> None:
    """serve.py + drift.py, requirements-serve.txt and the unit or Dockerfile, into the bundle."""
    (work / "serve.py").write_bytes(SERVE_SCRIPT.read_bytes())
    (work / "drift.py").write_bytes((TEMPLATES / "drift.py").read_bytes())
    (work / "requirements-serve.txt").write_text("\n".join(SERVE_REQUIREMENTS) + "\n", "utf-8")
    if deploy.how == "systemd":
        (work / UNIT_NAME).write_text(systemd_unit(name), encoding="utf-8")
    else:
        (work / "Dockerfile").write_text(dockerfile(name, deploy.platform), encoding="utf-8")


def readme_section(name: str, deploy: Deploy | None) -> str:
    """The bundle README's 'Serve over HTTP' section ('' when no server ships)."""
    if deploy is None:
        return ""
    start = (
        f"As a service (Raspberry Pi OS): copy the bundle to `/opt/{name}`, create the venv "
        f"there, then `sudo cp {UNIT_NAME} /etc/systemd/system/ && sudo systemctl enable --now "
        "keras-edge-serve` (it binds 127.0.0.1:8000; edit `--host` in the unit to expose it)."
        if deploy.how == "systemd"
        else f"In a container: `docker build -t {name}-serve .` then `docker run --rm "
        f"{'--runtime nvidia ' if deploy.platform.endswith('cuda') else ''}-p "
        f"127.0.0.1:8000:8000 {name}-serve` (base image `{BASE_IMAGES[deploy.platform]}`, "
        "named here, not built; the build runs the self-test)."
    )
    return f"""
## Serve over HTTP

```bash
.venv/bin/pip install -r requirements.txt -r requirements-serve.txt
.venv/bin/python serve.py --port 8000                     # binds 127.0.0.1; --host 0.0.0.0 for all
curl -s -F file=@photo.png http://127.0.0.1:8000/v1/predict   # or JSON: {{"inputs": [...]}}
curl -s http://127.0.0.1:8000/v1/drift                    # PSI/KS of recent inputs vs the reference
```

`serve.py` needs no toolkit and no TensorFlow: FastAPI, uvicorn, numpy, Pillow, the runtime,
prometheus-client (`/metrics`) and python-multipart (image uploads). It checks every sha256
before it starts (a changed bundle refuses to start), answers bad requests with a 4xx JSON
`{{"error": ...}}`, takes `--api-key-file` (X-API-Key or Bearer) and `--log-requests DIR
--sample 0.1` (JSONL for `keras-edge monitor DIR --bundle .`). Drift compares a rolling window
with the reference statistics in `manifest.json` (`drift`). {start}
"""


REFERENCE_SAMPLES = 1000  # test-split inputs the drift reference is computed from
REFERENCE_BYTES = 64 << 20  # ... at most this much float32 input data, whatever the size


def reference_inputs(spec: dict[str, Any]) -> tuple[Any, str]:
    """Up to 1000 raw inputs: the test split the export was validated on, topped up from the
    training and then the validation split when it is smaller (None + why)."""
    import numpy as np

    from toolkit.core.errors import UserError
    from toolkit.data import DataSpec, load_dataset

    dataset = dict(spec.get("dataset") or {})
    if not dataset.get("name"):
        return None, "the input spec names no dataset"
    if dataset.get("image_size") is not None:
        dataset["image_size"] = tuple(dataset["image_size"])
    per_sample = int(np.prod(spec.get("shape") or [1])) * 4
    count = max(100, min(REFERENCE_SAMPLES, REFERENCE_BYTES // max(1, per_sample)))
    try:
        ds = load_dataset(DataSpec(**dataset))
    except (UserError, TypeError, OSError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0]
        return None, f"cannot load {dataset['name']} ({why})"
    parts, taken = [], []
    for name in ("test", "train", "val"):  # the validated split first; small sets topped up
        split, left = getattr(ds, name), count - sum(len(p) for p in parts)
        if left > 0 and len(split):
            parts.append(split.take_x(min(left, len(split)), seed=0).astype(np.float32))
            taken.append(f"{len(parts[-1])} {name}")
    return np.concatenate(parts), f"{sum(map(len, parts))} {ds.name} inputs ({' + '.join(taken)})"


def serving_files(
    work: Path, name: str, target: Any, spec: dict[str, Any], entries: list[dict[str, Any]]
) -> dict[str, Any]:
    """Manifest keys `drift` (reference statistics) and `serve`, and the serving files.

    The reference is computed by the bundle's own serve.py on the bundled primary model, so
    the statistics a device compares with come from the code that compares them."""
    from toolkit.core.tasks import get_task
    from toolkit.package.bundle import load_run_module

    extra: dict[str, Any] = {}
    x, source = reference_inputs(spec)
    if x is not None and list(x.shape[1:]) == list(spec.get("shape") or []):
        serve = load_run_module(SERVE_SCRIPT)
        entry = entries[0]
        cpu = {**entry, "providers": ["CPUExecutionProvider"]}
        model = serve.run.Model(work / entry["file"], cpu)
        post = get_task(spec.get("task") or "classification").output == "classes"
        probs = serve.class_probabilities(model.run_float(x), model, entry) if post else None
        extra["drift"] = serve.reference_stats(x, probs, spec.get("feature_names"), source)
        limits = extra["drift"]["threshold"]  # the profile's limits over the defaults
        for key, value in (("psi", target.drift_psi), ("ks", target.drift_ks)):
            if value is not None:
                limits[key] = value
    else:
        extra["drift_note"] = f"no drift reference: {source}"
    deploy = deploy_for(target)
    if deploy is not None:
        write_deploy_files(work, name, deploy)
        files = {"systemd": UNIT_NAME, "docker": "Dockerfile"}
        extra["serve"] = {
            "script": "serve.py",
            "requirements": "requirements-serve.txt",
            "how": deploy.how,
            "file": files[deploy.how],
        }
    return extra
