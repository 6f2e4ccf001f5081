"""Load test of the served app: N concurrent image requests through gradio_client, on localhost only.

    python benchmarks/app_load.py [--model DIR] [--requests 32] [--concurrency 32]

Starts ``python app.py`` on 127.0.0.1 (a free port) with HAR_MODEL = --model, else ``outputs/har15`` when it
exists, else the tests' tiny model saved to /tmp. Baseline in the same run: the same image sent one request at a
time; then all requests at once from a thread pool sharing one client. Prints the error count (must be 0),
p50 / p95 latency of each, throughput, and the ratios. Bounded: a fixed number of requests, a timeout for each,
and the server is always stopped.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HAR15 = ROOT.parent / "shared" / "data" / "har15"


def default_model() -> Path:
    trained = ROOT / "outputs" / "har15"
    if (trained / "config.json").is_file() and any(trained.glob("*.safetensors")):
        return trained
    sys.path.insert(0, str(ROOT / "tests"))
    import helpers

    out = Path(tempfile.gettempdir()) / "har_bench_tiny"
    if not (out / "config.json").is_file():
        helpers.make_tiny_model(out)
    return out


def test_image(tmp: Path) -> Path:
    photos = sorted(HAR15.rglob("*.jpg")) if HAR15.is_dir() else []
    if photos:
        return photos[len(photos) // 2]  # a real photo, read in place (not copied anywhere)
    sys.path.insert(0, str(ROOT / "tests"))
    import helpers

    path = tmp / "load.jpg"
    helpers.synthetic_image(1, 3, size=(320, 240)).save(path, quality=90)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app did not start within {timeout:.0f} s")


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=8, help="baseline: requests sent one at a time")
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed for each request")
    args = ap.parse_args()
    if not 1 <= args.requests <= 1000 or not 1 <= args.concurrency <= 64:
        raise SystemExit("keep it bounded: 1..1000 requests, 1..64 concurrent")
    from gradio_client import Client, handle_file

    model = args.model or default_model()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, HAR_MODEL=str(model), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        image = test_image(Path(tmp))
        log = open(Path(tmp) / "server.log", "w")
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            t0 = time.time()
            wait_ready(url, proc)
            print(f"app up in {time.time() - t0:.1f} s; model {model}; image {image.name}")
            client = Client(url, verbose=False)

            def one(_):
                t = time.perf_counter()
                try:
                    job = client.submit(handle_file(str(image)), api_name="/classify_image")
                    label, _latency = job.result(timeout=args.timeout)
                    ok = bool(label and label.get("label"))
                    return time.perf_counter() - t, None if ok else f"empty result {label!r}"
                except Exception as exc:  # counted, reported below
                    return time.perf_counter() - t, f"{type(exc).__name__}: {exc}"

            one(0)  # warm up the connection
            seq = [one(i) for i in range(args.sequential)]
            t = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                conc = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - t
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    errors = [e for _, e in seq + conc if e]
    s_lat, c_lat = [d for d, _ in seq], [d for d, _ in conc]
    print(f"\n{'run':<34} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7}")
    print(f"{'baseline: one at a time':<34} {len(seq):4d} {pct(s_lat, 50):8.0f} {pct(s_lat, 95):8.0f} {len(seq) / sum(s_lat):7.1f}")
    print(f"{f'{args.requests} requests, {args.concurrency} concurrent':<34} {len(conc):4d} {pct(c_lat, 50):8.0f} {pct(c_lat, 95):8.0f} {len(conc) / wall:7.1f}")
    print(f"\nthroughput ratio concurrent / sequential: {(len(conc) / wall) / (len(seq) / sum(s_lat)):.2f}x")
    print(f"p95 latency under load / sequential p50:  {pct(c_lat, 95) / pct(s_lat, 50):.1f}x")
    print(f"errors: {len(errors)}" + ("" if not errors else "  first: " + errors[0]))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
