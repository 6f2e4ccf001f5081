"""Benchmark: the banded near-duplicate search against the all-pairs one it replaced, in the same run.

    python benchmarks/near_duplicates.py [--sizes 10000 80000 800000] [--all-pairs-up-to 80000] [--data-dir ../shared/data/har15]

Random 64-bit pHash / dHash values with 5% planted near duplicates (distances 0 to 2x the threshold).
For each size: time and peak memory of the banded search and, up to ``--all-pairs-up-to`` images, of the
all-pairs block search (the previous implementation, kept here as the baseline), the ratio, and whether
both return the same pairs. With ``--data-dir``, the same check on the real hashes of that folder.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from har_model.data.dedup import DEFAULT_NEAR_DUP_THRESHOLD, band_plan, near_duplicate_pairs  # noqa: E402


def all_pairs(p: np.ndarray, d: np.ndarray, threshold: int, block: int = 512) -> list[tuple[int, int]]:
    """The previous implementation: every pair compared, in blocks of rows."""
    n, pairs = len(p), []
    for start in range(0, n, block):
        stop = min(start + block, n)
        close = np.bitwise_count(p[start:stop, None] ^ p[None, start:]) <= threshold
        close &= np.triu(np.ones((stop - start, n - start), dtype=bool), k=1)
        ii, jj = np.nonzero(close)
        ii, jj = ii + start, jj + start
        dist = np.bitwise_count(p[ii] ^ p[jj]).astype(np.int64) + np.bitwise_count(d[ii] ^ d[jj])
        keep = dist <= 2 * threshold
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist()))
    return pairs


def planted(n: int, threshold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    d = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    copies = n // 20
    src = rng.integers(0, n - copies, size=copies)
    for k, s in enumerate(src):
        dist = int(rng.integers(0, 2 * threshold + 1))
        bits = rng.choice(64, size=dist, replace=False)
        p[n - 1 - k] = p[s] ^ np.uint64(sum(1 << int(b) for b in bits[: min(dist, threshold)]))
        d[n - 1 - k] = d[s] ^ np.uint64(sum(1 << int(b) for b in bits))
    return p, d


def measure(fn, *args) -> tuple[list, float, float]:
    """Result, seconds (best of two untraced runs: the first pays numpy's warm-up) and peak traced MiB."""
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = fn(*args)
        seconds.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, min(seconds), peak


def folder_hashes(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from har_model.data.scan import analyse_file, list_candidates

    candidates, _, _ = list_candidates(data_dir)
    found = [analyse_file((str(data_dir / c.path), 1, 10**9)) for c in candidates]
    ok = [r for r in found if r["ok"]]
    return np.array([r["phash"] for r in ok], dtype=np.uint64), np.array([r["dhash"] for r in ok], dtype=np.uint64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 80_000, 800_000])
    ap.add_argument("--all-pairs-up-to", type=int, default=80_000)
    ap.add_argument("--threshold", type=int, default=DEFAULT_NEAR_DUP_THRESHOLD)
    ap.add_argument("--data-dir", type=Path, help="also check the real hashes of this image folder")
    args = ap.parse_args()
    t = args.threshold
    print(f"{'images':>8} {'bands (bits/radius)':>26} {'banded s':>9} {'MiB':>6} {'all-pairs s':>11} {'MiB':>6} {'speed-up':>8} same")
    runs = [(f"{n}", *planted(n, t)) for n in args.sizes]
    if args.data_dir:
        runs.append((args.data_dir.name, *folder_hashes(args.data_dir)))
    for name, p, d in runs:
        plan = " ".join(f"{bits}/{radius}" for _, bits, radius in band_plan(len(p), t))
        fast, fast_s, fast_mb = measure(near_duplicate_pairs, p, d, t)
        if len(p) <= args.all_pairs_up_to or not name.isdigit():
            slow, slow_s, slow_mb = measure(all_pairs, p, d, t)
            print(f"{name:>8} {plan:>26} {fast_s:9.2f} {fast_mb:6.0f} {slow_s:11.2f} {slow_mb:6.0f} {slow_s / fast_s:7.1f}x {fast == slow} ({len(fast)} pairs)")
        else:
            print(f"{name:>8} {plan:>26} {fast_s:9.2f} {fast_mb:6.0f} {'-':>11} {'-':>6} {'-':>8} - ({len(fast)} pairs)")


if __name__ == "__main__":
    main()
