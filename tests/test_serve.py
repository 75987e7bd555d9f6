"""keras-edge serve / monitor and the bundle's serve.py, against real servers on loopback.

One trained digits model (8x8, 5 epochs), one export, one raspberry-pi bundle, and three real
uvicorn processes started together for the module: `keras-edge serve BUNDLE` (API key, request
log), `keras-edge serve EXPORT_DIR` (dynamic batching) and the bundle's own `serve.py`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from toolkit.serve import drift as drift_mod

REPO = Path(__file__).resolve().parents[1]
RECIPE = {
    "name": "digits8",
    "dataset": {"name": "digits", "image_size": [8, 8]},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 5, "batch_size": 32, "tensorboard": False},
}
KEY = "s3cret-key-for-tests"
WINDOW = 180  # the digits validation split: a window full of it replaces everything before


# ---- drift statistics (no server needed) ----------------------------------------------------
def _bundle_drift():
    """The bundle's drift.py, loaded by path as serve.py loads it."""
    import importlib.util

    path = REPO / "toolkit" / "package" / "bundle" / "drift.py"
    spec = importlib.util.spec_from_file_location("bundle_drift_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["continuous", "atoms"])
def test_ks_matches_scipy_two_sample_ks(kind: str) -> None:
    from scipy import stats

    rng = np.random.default_rng(0)
    if kind == "continuous":
        ref, live = rng.normal(size=6000), rng.normal(0.25, 1.2, size=900)
    else:  # pixels: about half are exactly 0, the rest integers 1..16
        ref = rng.integers(1, 17, 6000) * (rng.random(6000) > 0.5)
        live = rng.integers(1, 17, 900) * (rng.random(900) > 0.4)
    quantiles = np.quantile(ref, drift_mod.QUANTILES).tolist()
    expected = stats.ks_2samp(live, ref).statistic
    assert drift_mod.ks_statistic(live, quantiles) == pytest.approx(expected, abs=0.012)
    assert _bundle_drift().ks_statistic(live, quantiles) == pytest.approx(expected, abs=0.012)
    # the same data as the reference scores near 0 (scipy's kstest would say ~0.5 with atoms)
    assert drift_mod.ks_statistic(ref[:900], quantiles) < 0.03


def test_toolkit_and_bundle_drift_give_the_same_numbers() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 17, size=(400, 8, 8, 1)).astype(np.float32)
    probs = rng.dirichlet(np.ones(10), size=400)
    bundle = _bundle_drift()
    ref = drift_mod.reference_stats(x, probs, source="s")
    assert ref == bundle.reference_stats(x, probs, None, "s")
    live, live_p = np.clip(x[:200] + 3, 0, 16), probs[::-1][:200]
    ours = drift_mod.compare(ref, drift_mod.sample_positions(live), live_p)
    theirs = bundle.compare(ref, bundle.sample_positions(live), live_p)
    for key in ("status", "drift", "max_input_psi", "max_output_psi", "features", "outputs"):
        assert ours[key] == theirs[key], key
    assert ours["drift"] is True and ours["max_input_psi"] > 0.2
    same = drift_mod.compare(ref, drift_mod.sample_positions(x), probs)
    assert same["drift"] is False and same["max_input_psi"] < 1e-6


def test_cli_help_does_not_import_the_server_stack() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from toolkit.cli.app import app;"
        "r = CliRunner().invoke(app, ['serve', '--help']); assert r.exit_code == 0, r.output;"
        "assert '--max-batch' in r.output;"
        "mods = ('fastapi', 'uvicorn', 'tensorflow', 'onnxruntime');"
        "bad = [m for m in mods if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "nowhere/model.tflite"], "nothing to serve"),
        (["serve", "README.md"], "cannot tell which runtime"),
        (["serve", "samples", "--port", "70000"], "--port must be 0..65535"),
        (["serve", "samples", "--host", "my host"], "--host must be an IP address"),
        (["monitor", "nowhere", "--bundle", "samples"], "no manifest.json"),
        (["serve", "samples", "--api-key-file", "nowhere.txt"], "cannot read the API key file"),
        (["serve", "samples", "--max-batch", "0"], "--max-batch must be at least 1"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(cli, args: list[str], needle: str) -> None:
    result = cli(*args, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


# ---- one model, one export, one bundle, three servers ----------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    from toolkit.core.recipe import parse_recipe
    from toolkit.package.stage import package
    from toolkit.pipeline.exporting import run_export
    from toolkit.train.stage import train

    root = tmp_path_factory.mktemp("serve")
    run = train(parse_recipe(RECIPE), root / "runs").run_dir
    export = run / "export"
    run_export(run, formats=["tflite-int8"], out=export, latency_runs=2)
    bundle = package(export, "raspberry-pi", out=root / "bundles", ignore_budget=True).bundle_dir
    (root / "key").write_text(KEY + "\n")
    return {"root": root, "run": run, "export": export, "bundle": bundle, "key": root / "key"}


class Server:
    def __init__(self, args: list[str], log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.log = log
        self.proc = subprocess.Popen(
            [*args, "--port", str(self.port)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def wait(self, timeout: float = 120) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited {self.proc.returncode}: {self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready in {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def servers(built):
    import httpx

    root, cli = built["root"], [sys.executable, "-m", "toolkit", "serve"]
    started = {
        "bundle": Server(
            [
                *cli,
                str(built["bundle"]),
                "--api-key-file",
                str(built["key"]),
                "--log-requests",
                str(root / "logs"),
                "--sample",
                "1.0",
                "--window",
                str(WINDOW),
            ],
            root / "bundle.log",
        ),
        "export": Server(
            [
                *cli,
                str(built["export"]),
                "--max-batch",
                "8",
                "--max-wait-ms",
                "30",
                "--window",
                str(WINDOW),
            ],
            root / "export.log",
        ),
        "standalone": Server(
            [sys.executable, str(built["bundle"] / "serve.py"), "--window", str(WINDOW)],
            root / "standalone.log",
        ),
    }
    try:
        for server in started.values():
            server.wait()
        clients = {
            "bundle": httpx.Client(base_url=started["bundle"].url, headers={"X-API-Key": KEY}),
            "export": httpx.Client(base_url=started["export"].url),
            "standalone": httpx.Client(base_url=started["standalone"].url),
        }
        yield {**clients, "procs": started}
    finally:
        for server in started.values():
            server.stop()


def _run_py(bundle: Path, *args: str) -> list[dict]:
    result = subprocess.run(
        [sys.executable, str(bundle / "run.py"), *args, "--json", "--top-k", "10"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _split(name: str) -> np.ndarray:
    from toolkit.data import DataSpec, load_dataset

    ds = load_dataset(DataSpec(name="digits", image_size=(8, 8)))
    return getattr(ds, name).take_x(None).astype(np.float32)


@pytest.mark.slow
def test_bundle_predictions_equal_run_py(built, servers) -> None:
    bundle = built["bundle"]
    x = np.load(bundle / "selftest" / "inputs.npy")
    expected = _run_py(bundle, str(bundle / "selftest" / "inputs.npy"))
    for name in ("bundle", "standalone"):
        got = servers[name].post("/v1/predict?top_k=10", json={"inputs": x.tolist()})
        assert got.status_code == 200, got.text
        body = got.json()
        assert (
            body["sha256"]
            == json.loads((bundle / "manifest.json").read_text())["files"]["model-int8.tflite"]
        )
        assert [p["top"] for p in body["predictions"]] == [e["top"] for e in expected], name
    # an image upload is decoded as run.py decodes the same file
    png = REPO / "samples" / "digits" / "digit-3.png"
    want = _run_py(bundle, str(png))[0]["top"][:3]
    for name in ("bundle", "standalone"):
        files = {"file": ("digit.png", png.read_bytes(), "image/png")}
        got = servers[name].post("/v1/predict", files=files)
        assert got.status_code == 200, got.text
        assert got.json()["predictions"][0]["top"] == want
        raw = servers[name].post(
            "/v1/predict", content=png.read_bytes(), headers={"content-type": "image/png"}
        )
        assert raw.json()["predictions"][0]["top"] == want


@pytest.mark.slow
def test_export_predictions_equal_the_validated_artifact_batched_or_not(built, servers) -> None:
    from toolkit.runtimes import open_runner
    from toolkit.serve.outputs import probabilities

    x = _split("val")[:48]
    runner = open_runner(built["export"] / "model-int8.tflite")
    want = probabilities(runner.predict(x), host_softmax=False)
    client = servers["export"]
    info = client.get("/v1/model").json()
    assert info["validation"]["metric"]["value"] > 0.5 and info["batching"]["max_batch"] == 8
    sequential = [client.post("/v1/predict", json={"inputs": s.tolist()}).json() for s in x[:8]]

    def one(sample: np.ndarray) -> dict:
        return client.post("/v1/predict", json={"inputs": sample.tolist(), "top_k": 10}).json()

    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(one, x))
    for i, answer in enumerate(concurrent):
        scores = {t["index"]: t["score"] for t in answer["predictions"][0]["top"]}
        np.testing.assert_allclose([scores[k] for k in range(10)], want[i], atol=1e-6)
    for i, answer in enumerate(sequential):
        assert answer["predictions"][0]["top"] == concurrent[i]["predictions"][0]["top"][:3]
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    batch = {s.name: s.value for s in families["keras_edge_batch_size"].samples}
    assert batch["keras_edge_batch_size_sum"] > batch["keras_edge_batch_size_count"]  # batched


def _bad_requests() -> list[tuple[str, dict, int, str]]:
    from PIL import Image

    huge, truncated = io.BytesIO(), io.BytesIO()
    Image.new("L", (5000, 5000)).save(huge, format="PNG")
    Image.new("L", (64, 64), 200).save(truncated, format="PNG")
    sample = np.zeros((8, 8, 1)).tolist()
    return [
        ("non-JSON", {"content": b"{inputs: [", "headers": {"content-type": "application/json"}},
         400, "not valid JSON"),
        ("wrong shape", {"json": {"inputs": [[1.0, 2.0]]}}, 422, "shape"),
        ("wrong dtype", {"json": {"inputs": [[["a"] * 1] * 8] * 8}}, 422, "numbers only"),
        ("bool", {"json": {"inputs": [[[True]] * 8] * 8}}, 422, "numbers only"),
        ("NaN", {"content": json.dumps({"inputs": sample}).replace("0.0", "NaN", 1).encode(),
                 "headers": {"content-type": "application/json"}}, 422, "NaN"),
        ("ragged", {"json": {"inputs": [[[0.0]] * 8] * 7 + [[[0.0]] * 3]}}, 422, "ragged"),
        ("no inputs key", {"json": {"x": sample}}, 422, "inputs"),
        ("wrong content type", {"content": b"1,2,3", "headers": {"content-type": "text/csv"}},
         415, "content type"),
        ("truncated image", {"content": truncated.getvalue()[:60],
                             "headers": {"content-type": "image/png"}}, 422, "image"),
        ("huge image", {"content": huge.getvalue(), "headers": {"content-type": "image/png"}},
         413, "pixels"),
        ("body over the limit", {"content": b"[" * (9 << 20),
                                 "headers": {"content-type": "application/json"}}, 413, "limit"),
        ("bad top_k", {"json": {"inputs": sample}, "params": {"top_k": "-1"}}, 422, "top_k"),
        ("multipart without file", {"data": {"x": "1"}, "files": {"other": ("a", b"b")}},
         422, "file"),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bundle", "standalone"])
def test_every_bad_request_is_a_4xx_with_one_message_and_the_server_stays_up(servers, name):
    client = servers[name]
    for label, kwargs, status, needle in _bad_requests():
        got = client.post("/v1/predict", **kwargs)
        assert got.status_code == status, (label, got.status_code, got.text)
        body = got.json()
        assert list(body) == ["error"] and needle in body["error"], (label, body)
        assert "Traceback" not in got.text
    assert client.get("/nope").status_code == 404
    ok = client.post("/v1/predict", json={"inputs": np.zeros((8, 8, 1)).tolist()})
    assert ok.status_code == 200 and servers["procs"][name].proc.poll() is None


@pytest.mark.slow
def test_api_key_is_enforced(servers) -> None:
    import httpx

    url = servers["procs"]["bundle"].url
    x = {"inputs": np.zeros((8, 8, 1)).tolist()}
    assert httpx.post(f"{url}/v1/predict", json=x).status_code == 401
    wrong = httpx.post(f"{url}/v1/predict", json=x, headers={"X-API-Key": KEY + "x"})
    assert wrong.status_code == 401 and wrong.json() == {
        "error": "missing or wrong API key: send X-API-Key"
    }
    bearer = httpx.post(f"{url}/v1/predict", json=x, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
    assert httpx.get(f"{url}/docs").status_code == 200


@pytest.mark.slow
def test_model_endpoint_and_metrics(servers, built) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = servers["bundle"]
    info = client.get("/v1/model").json()
    assert info["manifest"]["drift"]["samples"] > 100 and len(info["labels"]) == 10
    assert info["input"]["shape"] == [8, 8, 1] and info["host_softmax"] is True
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    client.post("/v1/predict", content=b"nope", headers={"content-type": "application/json"})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    requests = families["keras_edge_requests"].samples
    assert any(
        s.labels == {"path": "/v1/predict", "code": "400"} and s.value >= 1 for s in requests
    )
    assert any(s.labels["code"] == "200" for s in requests)
    assert "keras_edge_request_duration_seconds" in families
    assert "keras_edge_drift_detected" in families
    # the server's own log reaches stderr (not the CLI's output capture)
    assert "Uvicorn running on" in (built["root"] / "bundle.log").read_text()


def _feed(client, x: np.ndarray) -> None:
    for start in range(0, len(x), 32):
        got = client.post("/v1/predict", json={"inputs": x[start : start + 32].tolist()})
        assert got.status_code == 200, got.text


def _gauges(client) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.slow
def test_drift_stays_low_in_distribution_and_crosses_on_shifted_inputs(servers) -> None:
    val = _split("val")
    assert len(val) == WINDOW
    shifted = np.clip(val + 5.0, 0, 16)  # brighter strokes and background
    reports = {}
    for name in ("bundle", "export", "standalone"):
        client = servers[name]
        _feed(client, val)
        calm = client.get("/v1/drift").json()
        assert calm["status"] == "ok" and calm["samples"] == WINDOW, (name, calm)
        assert calm["max_input_psi"] < 0.2 and calm["features"][0]["ks"] < 0.1, (name, calm)
        assert calm["outputs"]["class_psi"] < 0.2, (name, calm)
        gauges = _gauges(client)
        assert gauges[("keras_edge_drift_detected", ())] == 0
        _feed(client, shifted)
        hot = client.get("/v1/drift").json()
        assert hot["status"] == "drift" and hot["max_input_psi"] > 0.2, (name, hot)
        gauges = _gauges(client)
        assert gauges[("keras_edge_drift_detected", ())] == 1
        psi = gauges[("keras_edge_drift_psi", (("feature", "channel 0"),))]
        assert psi == pytest.approx(hot["features"][0]["psi"]) and psi > 0.2
        reports[name] = hot
    # keras-edge serve and the standalone serve.py compute the same numbers on the same window
    assert reports["bundle"]["features"] == reports["standalone"]["features"]
    assert reports["bundle"]["outputs"] == reports["standalone"]["outputs"]


@pytest.mark.slow
def test_monitor_report_from_the_request_log(servers, built, cli, tmp_path) -> None:
    logs = built["root"] / "logs"
    lines = [json.loads(line) for f in logs.glob("*.jsonl") for line in f.open()]
    assert lines and all(len(rec["probabilities"]) == 10 for rec in lines)
    out = tmp_path / "report"
    result = cli("monitor", str(logs), "--bundle", str(built["bundle"]), "--out", str(out),
                 "--fail-on-drift")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # the shifted inputs are there
    assert "drift detected" in result.stderr
    assert (out / "drift.png").stat().st_size > 1000
    text = (out / "drift.md").read_text()
    assert "**DRIFT**" in text and "channel 0" in text
    # the in-distribution part of the log alone: no drift
    calm = tmp_path / "calm"
    calm.mkdir()
    val = {tuple(row.reshape(-1).tolist()) for row in _split("val")}
    keep = [rec for rec in lines if tuple(np.ravel(rec["input"]).tolist()) in val]
    assert len(keep) >= WINDOW
    (calm / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep) + "{cut")
    result = cli("monitor", str(calm), "--bundle", str(built["bundle"]), "--fail-on-drift")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((calm / "drift.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_tampered_bundle_refuses_to_start(built, tmp_path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(built["bundle"], copy)
    model = copy / "model-int8.tflite"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    port = str(_free_port())
    cli = subprocess.run([sys.executable, "-m", "toolkit", "serve", str(copy), "--port", port],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert cli.returncode == 2, cli.stderr
    assert cli.stderr.strip().splitlines() == [
        f"error: bundle integrity check failed (model-int8.tflite does not match its sha256): "
        f"{copy} was modified or corrupted; refusing to serve it (re-copy or re-package the "
        "bundle)"
    ]
    alone = subprocess.run([sys.executable, str(copy / "serve.py"), "--port", port],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert alone.returncode == 1 and "integrity check failed" in alone.stderr
    assert "Traceback" not in alone.stderr


@pytest.mark.slow
def test_bundles_ship_the_server_files_their_platform_needs(built) -> None:
    """raspberry-pi: systemd unit; the files are in the manifest (so their sha256 is checked)."""
    bundle = built["bundle"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    for rel in ("serve.py", "drift.py", "requirements-serve.txt", "keras-edge-serve.service"):
        assert rel in manifest["files"], rel
    unit = (bundle / "keras-edge-serve.service").read_text()
    assert "--host 127.0.0.1" in unit and "serve.py" in unit
    assert "fastapi" in (bundle / "requirements-serve.txt").read_text()
    assert "## Serve over HTTP" in (bundle / "README.md").read_text()
    serve_src = (bundle / "serve.py").read_text()
    assert "import toolkit" not in serve_src and "tensorflow" not in serve_src


def test_deploy_files_per_platform() -> None:
    """x86-64 and Jetson get a Dockerfile with a named base image; Android and the Edge TPU
    get no server; the Pi's unit binds loopback only."""
    from toolkit.core.targets import load_target
    from toolkit.package.bundle.deploy import deploy_for, dockerfile, systemd_unit

    assert deploy_for(load_target("raspberry-pi")).how == "systemd"
    assert deploy_for(load_target("android")) is None
    assert deploy_for(load_target("coral-edgetpu")) is None
    x86, jetson = deploy_for(load_target("linux-x86")), deploy_for(load_target("jetson"))
    assert x86.how == jetson.how == "docker"
    text = dockerfile("m", x86.platform)
    assert "FROM python:3.11-slim-bookworm" in text and "run.py --selftest" in text
    assert "USER serve" in text and "-p 127.0.0.1:8000:8000" in text
    assert "FROM nvcr.io/nvidia/l4t-jetpack" in dockerfile("m", jetson.platform)
    assert "--runtime nvidia" in dockerfile("m", jetson.platform)
    assert "--host 127.0.0.1" in systemd_unit("m")


@pytest.mark.slow
def test_bundle_serve_py_answers_the_same_under_an_emulated_pi(built, servers, tmp_path) -> None:
    """serve.py under qemu-aarch64 (the `make pi-test` sysroot) plus the serving stack's aarch64
    wheels unpacked in $PI_SERVE_SITE: the same answers as keras-edge serve on x86-64."""
    import httpx

    sysroot = Path(os.environ.get("PI_SYSROOT", Path.home() / ".cache/keras-edge/pi-sysroot"))
    site = os.environ.get("PI_SERVE_SITE")
    if not (sysroot / "qemu-aarch64").is_file() or not site or not Path(site, "fastapi").is_dir():
        pytest.skip("needs the pi sysroot (make pi-test) and PI_SERVE_SITE (aarch64 fastapi stack)")
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{sysroot / 'site'}:{site}"}  # fmt: skip
    cmd = [str(sysroot / "qemu-aarch64"), "-L", str(sysroot / "root"),
           str(sysroot / "root/usr/bin/python3.11"), str(built["bundle"] / "serve.py"),
           "--port", str(port)]  # fmt: skip
    log = tmp_path / "pi.log"
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        x = np.load(built["bundle"] / "selftest" / "inputs.npy")
        pi = httpx.post(f"{url}/v1/predict?top_k=10", json={"inputs": x.tolist()}, timeout=60)
        ours = servers["bundle"].post("/v1/predict?top_k=10", json={"inputs": x.tolist()})
        assert pi.json()["predictions"] == ours.json()["predictions"]
        bad = httpx.post(f"{url}/v1/predict", content=b"{", timeout=30,
                         headers={"content-type": "application/json"})  # fmt: skip
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    finally:
        proc.terminate()
        proc.wait(20)


def test_batcher_groups_concurrent_requests_and_keeps_each_answer() -> None:
    import asyncio

    from toolkit.serve.batching import Inference

    sizes: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise RuntimeError("runtime failed")
        time.sleep(0.005)
        return x.reshape(len(x), -1).sum(1, keepdims=True) * 2

    async def scenario() -> tuple[list[np.ndarray], list[np.ndarray]]:
        batcher = Inference(
            predict, max_batch=8, max_wait_ms=20, observe=lambda n, s: sizes.append(n)
        )
        await batcher.start()
        xs = [np.full((1 + i % 3, 2), float(i)) for i in range(30)]
        outs = await asyncio.gather(*(batcher.run(x) for x in xs))
        big = await batcher.run(np.ones((9, 2)))  # over max_batch: runs alone
        failed = await asyncio.gather(batcher.run(-np.ones((1, 2))), batcher.run(np.ones((1, 2))),
                                      return_exceptions=True)  # fmt: skip
        await batcher.stop()
        return [*outs, big], xs, failed

    outs, xs, failed = asyncio.run(scenario())
    for out, x in zip(outs, xs, strict=False):
        np.testing.assert_array_equal(out, x.sum(1, keepdims=True) * 2)
    assert outs[-1].shape == (9, 1) and 9 in sizes
    assert (
        max(sizes) == 9 and any(1 < n <= 8 for n in sizes) and sum(sizes) == 60 + 9
    )  # the failed call is not timed
    assert all(isinstance(f, RuntimeError) for f in failed)  # one batch: both hear the failure
