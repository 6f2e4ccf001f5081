"""Grouping exact and near-duplicate images, so that a group never straddles train / validation / test.

Exact duplicates share a content hash (byte-identical files). Near duplicates (a resized, re-encoded or
lightly edited copy) have their pHash within ``threshold`` bits (Hamming distance, out of 64) and their
pHash + dHash distances within ``2 * threshold``: pHash is the robust one, dHash (noisier on flat
backgrounds) vetoes unrelated pictures that happen to share a pHash, such as people on plain white
stock-photo backgrounds. On har15 the default (8) finds only true copies; 10-12 already pairs strangers.
Groups are the connected components of a union-find.

The search is multi-index hashing (Norouzi, Punjani and Fleet, *Fast search in Hamming space with
multi-index hashing*, 2012) rather than a comparison of all pairs: the 64 pHash bits are cut into ``m``
bands, band ``b`` gets a radius ``r_b`` with ``sum(r_b + 1) = threshold + 1``, so by the pigeonhole
principle two hashes within ``threshold`` bits are within ``r_b`` bits on at least one band. Each band is
an index (hashes sorted by band value); a hash probes it with every flip of at most ``r_b`` bits and the
few candidates found are checked on the full pHash + dHash condition, so the pairs are exactly those of
the exhaustive search. ``m = threshold + 1`` bands of radius 0 is the plain "share one band exactly"
scheme; fewer, wider bands with a small radius trade more probes for far fewer chance candidates, and
:func:`band_plan` picks the cheaper for the number of images.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np

from har_model.errors import HarError

DEFAULT_NEAR_DUP_THRESHOLD = 8  # pHash bits out of 64 (and 2x for pHash + dHash); negative disables the search
MAX_NEAR_DUP_THRESHOLD = 32  # half the bits: beyond it unrelated pictures match (random pairs differ in ~32)
_MAX_BAND_BITS = 22  # a band's bucket table has 2**bits entries (16 MB at 22)
_CHUNK = 1 << 22  # candidate pairs checked per numpy step (bounds memory)
# relative costs, measured: one probe of one hash (xor, two table reads), one candidate pair (expand, gather,
# two popcounts) and one bucket-table entry
_PROBE_COST, _CANDIDATE_COST, _TABLE_COST = 1.0, 4.0, 0.2


class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller index becomes the root, so group ids do not depend on the order of unions
            self.parent[max(ra, rb)] = min(ra, rb)


def band_plan(n: int, threshold: int, bands: int | None = None) -> list[tuple[int, int, int]]:
    """Bands ``(shift, bits, radius)`` covering the 64 bits, with the least estimated cost for ``n`` hashes."""
    best, best_cost = [], float("inf")
    fewest = -(-64 // _MAX_BAND_BITS)
    for m in [bands] if bands else range(fewest, max(fewest, threshold + 1) + 1):
        widths = [64 // m + (b < 64 % m) for b in range(m)]  # the wider bands first ...
        extra = max(0, threshold + 1 - m)
        radii = [extra // m + (b < extra % m) for b in range(m)]  # ... get the larger radii
        if widths[0] > _MAX_BAND_BITS or any(r > w for r, w in zip(radii, widths)):
            continue
        probes = [sum(comb(w, k) for k in range(r + 1)) for w, r in zip(widths, radii)]
        # uniform hashes: one probe of one hash meets n / 2**bits others; each unordered pair is met once
        cost = sum(
            p * n * (_PROBE_COST + _CANDIDATE_COST * n / 2 ** (w + 1)) + _TABLE_COST * 2**w for p, w in zip(probes, widths)
        )
        if cost < best_cost:
            shifts = np.cumsum([0, *widths[:-1]]).tolist()
            best, best_cost = list(zip(shifts, widths, radii)), cost
    if not best:
        raise ValueError(f"{bands} bands cannot cover threshold {threshold} (3 to 64 bands of at most {_MAX_BAND_BITS} bits)")
    return best


def near_duplicate_pairs(
    phashes: Sequence[int], dhashes: Sequence[int], threshold: int, *, bands: int | None = None
) -> list[tuple[int, int]]:
    """All pairs (i, j), i < j, with pHash within ``threshold`` bits and pHash + dHash within twice that.

    Sorted; exactly the pairs an all-pairs comparison finds (see the module docstring for how). ``bands``
    forces the number of bands (any from 3 to ``threshold + 1`` gives the same pairs); default: the cheapest.
    """
    if threshold < 0 or len(phashes) < 2:
        return []
    if threshold > MAX_NEAR_DUP_THRESHOLD:
        raise HarError(
            f"--near-dup-threshold {threshold}: at most {MAX_NEAR_DUP_THRESHOLD} bits of 64 "
            f"(unrelated pictures already differ in about 32); the default is {DEFAULT_NEAR_DUP_THRESHOLD}"
        )
    p = np.asarray(phashes, dtype=np.uint64)
    d = np.asarray(dhashes, dtype=np.uint64)
    found = [np.empty(0, dtype=np.int64)]
    for shift, bits, radius in band_plan(len(p), threshold, bands):
        found += _band_pairs(p, d, threshold, shift, bits, radius)
    n = len(p)
    codes = np.unique(np.concatenate(found))  # a pair close on several bands is found on each of them
    return list(zip((codes // n).tolist(), (codes % n).tolist()))


def _band_pairs(p, d, threshold, shift, bits, radius) -> list[np.ndarray]:
    """Verified pairs (as ``i * n + j``, i < j) whose pHashes are within ``radius`` bits on this band."""
    n = len(p)
    key = ((p >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
    order = np.argsort(key, kind="stable")
    starts = np.zeros((1 << bits) + 1, dtype=np.int64)
    np.cumsum(np.bincount(key, minlength=1 << bits), out=starts[1:])  # bucket v is order[starts[v]:starts[v + 1]]
    out = []
    for k in range(radius + 1):
        for flipped in combinations(range(bits), k):
            flip = sum(1 << b for b in flipped)
            # bucket pairs {v, v ^ flip} are visited once, from the side whose top flipped bit is 0
            queries = np.flatnonzero((key & (1 << max(flipped))) == 0) if flipped else np.arange(n)
            target = key[queries] ^ flip
            out += _verified(p, d, threshold, queries, starts[target], starts[target + 1], order, same_bucket=not flipped)
    return out


def _verified(p, d, threshold, queries, lo, hi, order, *, same_bucket) -> list[np.ndarray]:
    """Expand each query's bucket range ``order[lo:hi]`` into pairs, in bounded chunks; keep the true ones."""
    n = len(p)
    counts = hi - lo
    ends = np.cumsum(counts)
    out = []
    first = 0
    while first < len(queries):
        last = max(first + 1, int(np.searchsorted(ends, (ends[first - 1] if first else 0) + _CHUNK, side="right")))
        c = counts[first:last]
        i = np.repeat(queries[first:last], c)
        offsets = np.arange(len(i)) - np.repeat(np.cumsum(c) - c, c)
        j = order[np.repeat(lo[first:last], c) + offsets]
        if same_bucket:
            i, j = i[i < j], j[i < j]
        dp = np.bitwise_count(p[i] ^ p[j])
        ok = (dp <= threshold) & (dp.astype(np.int64) + np.bitwise_count(d[i] ^ d[j]) <= 2 * threshold)
        i, j = i[ok], j[ok]
        out.append(np.minimum(i, j) * n + np.maximum(i, j))
        first = last
    return out


def group_images(
    content_hashes: Sequence[str], phashes: Sequence[int], dhashes: Sequence[int], threshold: int
) -> tuple[list[int], list[bool]]:
    """Group ids (the smallest member index) and whether each image is an exact copy of an earlier one.

    Returns ``(group, exact_copy)``: ``group[i]`` is shared by all images linked to ``i`` through exact or
    near duplication; ``exact_copy[i]`` is True when an earlier index has the same content hash.
    """
    n = len(content_hashes)
    uf = UnionFind(n)
    first: dict[str, int] = {}
    exact_copy = [False] * n
    for i, h in enumerate(content_hashes):
        if h in first:
            uf.union(first[h], i)
            exact_copy[i] = True
        else:
            first[h] = i
    # near-duplicate search over distinct pictures only
    distinct = [i for i in range(n) if not exact_copy[i]]
    for a, b in near_duplicate_pairs([phashes[i] for i in distinct], [dhashes[i] for i in distinct], threshold):
        uf.union(distinct[a], distinct[b])
    return [uf.find(i) for i in range(n)], exact_copy
