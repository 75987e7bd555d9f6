"""A bounded load test for a running server: N concurrent clients for T seconds on loopback.

`python -m toolkit.serve.loadtest URL --inputs X.npy --clients 32 --seconds 60` posts one
sample per request (JSON) from each client in a closed loop and prints requests/s, p50/p99
latency and errors as JSON. `--inproc ARTIFACT` also measures the in-process runner on the
same samples (batch 1, one thread), so the ratio is the server's overhead. Needs httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


async def _client(
    http: Any, url: str, bodies: list[bytes], stop: float, times: list[float], errors: list[str]
) -> None:
    i = 0
    while time.perf_counter() < stop:
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            response = await http.post(
                url, content=body, headers={"content-type": "application/json"}
            )
            if response.status_code != 200:
                errors.append(str(response.status_code))
                continue
        except Exception as err:  # a refused or reset connection counts as an error
            errors.append(type(err).__name__)
            continue
        times.append(time.perf_counter() - start)


async def load(url: str, x: np.ndarray, clients: int, seconds: float) -> dict[str, Any]:
    """Closed-loop load: each client sends its next request when the last one answered."""
    import httpx

    bodies = [json.dumps({"inputs": s.tolist()}).encode() for s in x]
    times: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        warm = await http.post(f"{url}/v1/predict", content=bodies[0],
                               headers={"content-type": "application/json"})  # fmt: skip
        warm.raise_for_status()
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(
            *(_client(http, f"{url}/v1/predict", bodies[c:] + bodies[:c], stop, times, errors)
              for c in range(clients))
        )  # fmt: skip
        wall = time.perf_counter() - start
    ms = np.asarray(times) * 1000 if times else np.zeros(1)
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(times),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "throughput_rps": round(len(times) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def inproc(artifact: Path, x: np.ndarray, seconds: float) -> dict[str, Any]:
    """The same samples through the Runner directly, one at a time: the no-server baseline."""
    from toolkit.runtimes import open_runner

    runner = open_runner(artifact)
    runner.predict(x[:1])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runner.predict(x[done % len(x)][None])
        done += 1
    wall = time.perf_counter() - start
    return {"artifact": artifact.name, "throughput_sps": round(done / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--inputs", required=True, help=".npy of raw samples (N, ...)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--inproc", help="also time this artifact in-process")
    args = parser.parse_args(argv)
    x = np.load(args.inputs, allow_pickle=False).astype(np.float32)
    result = {"server": asyncio.run(load(args.url.rstrip("/"), x, args.clients, args.seconds))}
    if args.inproc:
        result["inproc"] = inproc(Path(args.inproc), x, min(args.seconds, 10.0))
        result["overhead_ratio"] = round(
            result["inproc"]["throughput_sps"] / max(result["server"]["throughput_rps"], 1e-9), 2
        )
    print(json.dumps(result, indent=2))
    return 0 if result["server"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
