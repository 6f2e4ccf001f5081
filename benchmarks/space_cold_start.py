"""Installed size and cold start of the Space's runtime against the full requirements, in fresh virtual environments.

    python benchmarks/space_cold_start.py [--model DIR] [--work outputs/space_bench] [--rounds 3] [--rebuild]

1. ``python train.py publish-space --dry-run`` assembles the Space folder for --model (default ``outputs/har15``,
   else an untrained EfficientNet-Lite0 saved at 320x320, the default model's architecture and input: cold start
   does not depend on the weights).
2. Two fresh virtual environments (no system site-packages): the Space's own ``requirements.txt`` only, and the
   repository's full ``requirements.txt`` (what a Space built from this repository installed before publish-space).
   Installed size: ``du -sk`` (what ``du -sh`` shows) of each environment. They are reused on later runs unless --rebuild.
3. Cold start: from starting ``python app.py`` to the first ``/classify_image`` answer through gradio_client, the
   median of --rounds. The Space: its folder in its environment, no HAR_MODEL. The baseline: the repository's
   app.py in the full environment with HAR_MODEL = the same model folder (the same ONNX file).

Prints both, and the ratios (full / Space).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAR15 = ROOT.parent / "shared" / "data" / "har15"


def default_model(work: Path) -> Path:
    trained = ROOT / "outputs" / "har15"
    if (trained / "config.json").is_file():
        return trained
    out = work / "lite0_untrained"
    if not (out / "config.json").is_file():
        sys.path.insert(0, str(ROOT))
        from har_model.train.backbones import load_backbone

        labels = sorted(p.name for p in HAR15.iterdir() if p.is_dir()) if HAR15.is_dir() else [f"action_{i}" for i in range(15)]
        model, processor = load_backbone("efficientnet-lite0", labels)
        processor.size = {"height": 320, "width": 320}  # the default model's evaluation size
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def build_venv(venv: Path, requirements: Path, rebuild: bool) -> float | None:
    """A fresh venv with ``requirements`` installed; returns the install seconds (None when reused)."""
    if rebuild and venv.exists():
        shutil.rmtree(venv)
    if (venv / "bin" / "python").is_file() and (venv / ".installed").is_file():
        return None
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-r", str(requirements)], check=True)
    (venv / ".installed").write_text("")
    return time.perf_counter() - t0


def du_bytes(path: Path) -> int:
    """Disk usage, as `du -sh` reports it."""
    return 1024 * int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(python: Path, cwd: Path, image: Path, har_model: Path | None) -> float:
    """Seconds from process start to the first classified image."""
    from gradio_client import Client, handle_file

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HAR_MODEL", "PYTHONPATH")}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    if har_model is not None:
        env["HAR_MODEL"] = str(har_model)
    t0 = time.perf_counter()
    app = subprocess.Popen([str(python), "app.py"], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if app.poll() is not None:
                raise SystemExit(f"{python} app.py in {cwd} exited with {app.returncode}")
            if time.perf_counter() - t0 > 300:
                raise SystemExit("no answer within 300 s")
            try:
                # the first return value is the label; the endpoint returns more (headline, the decision as data)
                label = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
                    handle_file(str(image)), api_name="/classify_image")[0]
                break
            except Exception:  # not up yet
                time.sleep(0.05)
        assert label["label"], label
        return time.perf_counter() - t0
    finally:
        app.terminate()
        app.wait(timeout=30)


def imports_torch(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "space_bench")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rebuild", action="store_true", help="build both environments afresh")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = (args.model or default_model(work)).resolve()
    space = work / "space"
    subprocess.run([sys.executable, str(ROOT / "train.py"), "publish-space", "--model", str(model), "--space",
                    "bench/har-space", "--dir", str(space), "--dry-run"], check=True)
    envs = {"space": (work / "venv-space", space / "requirements.txt"), "full": (work / "venv-full", ROOT / "requirements.txt")}
    installed = {name: build_venv(venv, req, args.rebuild) for name, (venv, req) in envs.items()}

    sys.path.insert(0, str(ROOT / "tests"))
    import helpers

    image = work / "probe.jpg"
    helpers.synthetic_image(1, 3, size=(275, 183)).save(image)
    runs = {"space": [], "full": []}
    for _ in range(args.rounds):  # interleaved, so that a change in machine load hits both
        runs["space"].append(cold_start(envs["space"][0] / "bin" / "python", space, image, None))
        runs["full"].append(cold_start(envs["full"][0] / "bin" / "python", ROOT, image, space / "model"))

    size = {name: du_bytes(venv) for name, (venv, _) in envs.items()}
    start = {name: statistics.median(t) for name, t in runs.items()}
    print(f"\nmodel: {model} (served through {space / 'model' / 'onnx' / 'model.onnx'})")
    print(f"{'environment':<44} {'installed':>10} {'torch':>6} {'cold start (median)':>20}  rounds")
    for name, label in (("space", "Space: its requirements.txt, its folder"), ("full", "full requirements.txt, repository app.py")):
        venv = envs[name][0]
        took = f" (pip install {installed[name]:.0f} s)" if installed[name] is not None else ""
        print(f"{label:<44} {size[name] / 2**20:>8.0f} MB {'yes' if imports_torch(venv / 'bin' / 'python') else 'no':>6} "
              f"{start[name]:>18.2f} s  {', '.join(f'{t:.2f}' for t in runs[name])}{took}")
    print(f"ratio full / Space: installed size {size['full'] / size['space']:.2f}x, cold start {start['full'] / start['space']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
