"""Duplicate grouping: the banded (multi-index) near-duplicate search against an all-pairs oracle."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import helpers
from har_model.data.dedup import MAX_NEAR_DUP_THRESHOLD, group_images, near_duplicate_pairs
from har_model.data.scan import perceptual_hashes
from har_model.errors import HarError


def _all_pairs(p, d, threshold):
    """The oracle: every pair compared (the search this module used before banding)."""
    p, d = np.asarray(p, dtype=np.uint64), np.asarray(d, dtype=np.uint64)
    dp = np.bitwise_count(p[:, None] ^ p[None, :]).astype(np.int64)
    close = (dp <= threshold) & (dp + np.bitwise_count(d[:, None] ^ d[None, :]) <= 2 * threshold)
    i, j = np.nonzero(np.triu(close, k=1))
    return list(zip(i.tolist(), j.tolist()))


def _flip(value, bits):
    return value ^ np.uint64(sum(1 << int(b) for b in bits))


def _planted(threshold, seed, n_random=300):
    """Random hashes plus, for every pHash distance 0..threshold + 1, copies whose flipped bits are spread
    evenly, packed into one band, or random; their dHash distances sit on both sides of the 2x limit."""
    rng = np.random.default_rng(seed)
    p = list(rng.integers(0, 2**64, size=n_random, dtype=np.uint64))
    d = list(rng.integers(0, 2**64, size=n_random, dtype=np.uint64))
    for dist in range(threshold + 2):
        for layout in ("spread", "packed", "random"):
            for dd in {0, max(0, 2 * threshold - dist), 2 * threshold - dist + 1}:
                src = int(rng.integers(n_random))
                if layout == "spread":
                    bits = [k * 64 // max(dist, 1) for k in range(dist)]
                elif layout == "packed":
                    start = int(rng.integers(64))
                    bits = [(start + k) % 64 for k in range(dist)]
                else:
                    bits = rng.choice(64, size=dist, replace=False)
                p.append(_flip(p[src], bits))
                d.append(_flip(d[src], rng.choice(64, size=min(dd, 64), replace=False)))
    return p, d


@pytest.mark.parametrize("threshold", [0, 1, 3, 8, 12])
def test_banded_search_finds_exactly_the_all_pairs_result_with_any_number_of_bands(threshold):
    p, d = _planted(threshold, seed=threshold)
    want = _all_pairs(p, d, threshold)
    assert len(want) > threshold  # planted pairs at every distance up to the threshold are found
    for bands in range(3, max(3, threshold + 1) + 2):
        assert near_duplicate_pairs(p, d, threshold, bands=bands) == want, f"{bands} bands"
    assert near_duplicate_pairs(p, d, threshold) == want  # the chosen plan


def test_banded_search_with_clusters_and_many_bucket_collisions():
    # 2,000 hashes from 60 bases: whole clusters within the threshold, and shared bands between strangers
    rng = np.random.default_rng(7)
    bases = rng.integers(0, 2**64, size=60, dtype=np.uint64)
    p = [_flip(bases[i % 60], rng.choice(64, size=int(rng.integers(0, 6)), replace=False)) for i in range(2000)]
    d = [_flip(bases[i % 60], rng.choice(64, size=int(rng.integers(0, 12)), replace=False)) for i in range(2000)]
    want = _all_pairs(p, d, 8)
    assert len(want) > 10_000
    assert near_duplicate_pairs(p, d, 8) == want
    assert near_duplicate_pairs(p, d, 8, bands=9) == want  # every band exact: the plain pigeonhole scheme


def _variants(img: Image.Image, seed: int) -> list[Image.Image]:
    """What near duplicates look like in real folders: resized, re-encoded, brightened, slightly cropped."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=50 + seed % 40)
    w, h = img.size
    return [
        img.resize((w // 2, h // 2)),
        Image.open(buf).convert("RGB"),
        ImageEnhance.Brightness(img).enhance(1.15),
        img.crop((2, 2, w - 2, h - 2)),
    ]


def test_banded_search_matches_all_pairs_on_generated_images():
    pictures = [helpers.synthetic_image(label, seed, (120, 90)) for label in range(4) for seed in range(15)]
    images = pictures + [v for k, img in enumerate(pictures[:20]) for v in _variants(img, k)]
    hashes = [perceptual_hashes(im) for im in images]
    p, d = [h[0] for h in hashes], [h[1] for h in hashes]
    for threshold in (4, 8, 12):
        want = _all_pairs(p, d, threshold)
        assert near_duplicate_pairs(p, d, threshold) == want
    assert len(_all_pairs(p, d, 8)) >= 40  # most copies of the first 20 pictures are found


def test_group_images_exact_and_near():
    base = helpers.synthetic_image(1, 3, (120, 90))
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=60)
    variants = [base, base.resize((60, 45)), Image.open(buf).convert("RGB"), helpers.synthetic_image(1, 4, (120, 90))]
    hashes = [perceptual_hashes(v) for v in variants]
    content = ["x", "y", "z", "w", "x"]  # the last is a byte copy of the first
    hashes.append(hashes[0])
    groups, exact = group_images(content, [h[0] for h in hashes], [h[1] for h in hashes], 8)
    assert groups == [0, 0, 0, 3, 0]
    assert exact == [False, False, False, False, True]
    assert near_duplicate_pairs([h[0] for h in hashes], [h[1] for h in hashes], -1) == []


def test_threshold_above_half_the_bits_is_a_clear_error():
    with pytest.raises(HarError, match=f"--near-dup-threshold 40: at most {MAX_NEAR_DUP_THRESHOLD} bits"):
        near_duplicate_pairs([1, 2], [1, 2], 40)
