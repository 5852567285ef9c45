"""Which codecs can code a matrix in their transform-coefficient domain (coefdomain.py)?

A Gaussian coefficient matrix is placed in n x n blocks through the blockwise inverse of a transform
(HEVC/VVC's integer DCT for 32x32, the orthonormal DCT, or H.264's 8x8 integer transform with its
rows normalized), the blocks on the even squares of a mid-grey checkerboard, and coded at a QP. After
decoding, the blockwise forward transform should give back the coefficients on one lattice (the
quantizer's levels) with an error of at most about a step per coefficient: a flat error, kurtosis
near 1.8 (rounding's) instead of a Gaussian-like 3 (error spread over a block). Writes TRANSFORMS.md
and transforms.csv next to this script.

    .venv/bin/python benchmarks/codecs/transforms.py
"""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmcodec.codecs.base import Profile
from llmcodec.codecs.registry import get_codec
from llmcodec.coefdomain import core_matrix, gather, spread
from llmcodec.frames import from_frames, to_frames
from llmcodec.quant import _lattice_step
from llmcodec.sysinfo import describe

OUT = Path(__file__).resolve().parent
SEEDS = (0, 1)
SVT_SEEDS = (0, 1, 2, 3)  # nothing forces SVT-AV1's transform: more draws


def ortho_dct(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    m = np.sqrt(2 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m


def h264_8x8() -> np.ndarray:
    """H.264's 8x8 integer transform, rows scaled to unit norm (they are orthogonal)."""
    a = np.array([[8, 8, 8, 8, 8, 8, 8, 8], [12, 10, 6, 3, -3, -6, -10, -12], [8, 4, -4, -8, -8, -4, 4, 8],
                  [10, -3, -12, -6, 6, 12, 3, -10], [8, -8, -8, 8, 8, -8, -8, 8], [6, -12, 3, 10, -10, -3, 12, -6],
                  [4, -8, 8, -4, -4, 8, -8, 4], [3, -6, 10, -12, 12, -10, 6, -3]], float)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _blocks(a: np.ndarray, n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    r, c = a.shape
    b = a.reshape(r // n, n, c // n, n).transpose(0, 2, 1, 3)
    return (left @ b @ right).transpose(0, 2, 1, 3).reshape(r, c)


# libaom with everything that could move a block off one 32x32 DCT turned off
AOM_FORCED = tuple(tuple(kv.split("=")) for kv in (
    "min-partition-size=32:max-partition-size=32:enable-tx64=0:enable-rect-tx=0:enable-flip-idtx=0:"
    "use-intra-dct-only=1:enable-filter-intra=0:enable-cfl-intra=0:enable-intrabc=0:enable-palette=0:"
    "enable-cdef=0:enable-restoration=0:enable-smooth-intra=0:enable-paeth-intra=0:enable-angle-delta=0:"
    "enable-intra-edge-filter=0:enable-qm=0").split(":"))
X264_8X8 = (("x264-params", "partitions=i8x8:8x8dct=1:no-deblock=1"),)


def cases() -> list[tuple[str, Profile, int, str, np.ndarray, tuple[int, ...], tuple[int, ...]]]:
    """(codec, profile, block size, transform name, transform, QPs, seeds)."""
    hevc = core_matrix(32)
    x265, kvz, svt, aom, vp9, x264 = (get_codec(c) for c in ("x265", "kvazaar", "svtav1", "aom", "vp9", "x264"))
    return [
        ("x265", x265.profile("default"), 32, "HEVC integer DCT", hevc, (22, 32), SEEDS),
        ("kvazaar", kvz.profile("default"), 32, "HEVC integer DCT", hevc, (22, 32), SEEDS),
        ("svtav1", svt.profile("ai-p8-coef"), 32, "HEVC integer DCT", hevc, (24, 32, 40, 44, 48), SVT_SEEDS),
        ("svtav1", svt.profile("ai-p8"), 32, "orthonormal DCT", ortho_dct(32), (24, 32, 40, 48), SEEDS),
        ("aom", aom.profile("ai-cpu8"), 32, "orthonormal DCT", ortho_dct(32), (20, 32), SEEDS),
        ("aom", Profile("ai-cpu8-forced32", preset="cpu8", pix_fmt="gray10le", options=AOM_FORCED), 32,
         "orthonormal DCT", ortho_dct(32), (20, 32), SEEDS),
        ("vp9", vp9.profile("ai-cpu4"), 32, "orthonormal DCT", ortho_dct(32), (20, 32), SEEDS),
        ("x264", x264.profile("ai-medium"), 8, "H.264 8x8", h264_8x8(), (20, 32), SEEDS),
        ("x264", replace(x264.profile("ai-medium"), name="ai-medium-i8x8", options=X264_8X8), 8, "H.264 8x8",
         h264_8x8(), (20, 32), SEEDS),
    ]


def measure(codec_name: str, profile: Profile, n: int, t: np.ndarray, qp: int, seed: int) -> dict:
    codec = get_codec(codec_name)
    mid = 1 << (codec.sample_bits(profile) - 1)
    inv = np.linalg.inv(t)
    c = np.random.default_rng(seed).standard_normal((256, 256))
    s = _blocks(c, n, inv, inv.T)
    q = np.clip(np.rint(s * (0.7 * mid / np.abs(s).max()) + mid), 0, 2 * mid - 1).astype(np.uint16)
    coded = _blocks(q.astype(float) - mid, n, t, t.T)  # the coefficients of what was coded
    prof = replace(profile, coef_block=n)
    samples = spread(q, n, mid)
    lay = codec.plan(*samples.shape, prof)
    t0 = time.perf_counter()
    stream = codec.encode(to_frames(samples, lay), qp, prof)
    dec = from_frames(codec.decode(stream, lay, prof), lay)
    u = _blocks(gather(dec, n).astype(float) - mid, n, t, t.T)
    err = u - coded
    step = _lattice_step(np.abs(u).ravel())
    if step is None:
        off = 1.0
    else:
        frac = u / step - np.rint(u / step)
        per_block = np.sqrt(np.square(frac).reshape(256 // n, n, 256 // n, n).mean(axis=(1, 3)))
        off = float((per_block > 0.1).mean())
    return {
        "codec": codec_name, "profile": profile.name, "block": n, "transform": "", "qp": qp, "seed": seed,
        "bits_per_coef": 8 * len(stream) / c.size,
        "rel_error": float(np.linalg.norm(err) / np.linalg.norm(coded)),
        "lattice_step": "" if step is None else f"{step:.3f}",
        "off_lattice_blocks": off,
        "error_kurtosis": float((err**4).mean() / (err**2).mean() ** 2),
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    info = describe()
    print("\n".join(f"{k}: {v}" for k, v in info.items()))
    print(f"load average: {os.getloadavg()}")
    rows = []
    for codec, profile, n, tname, t, qps, seeds in cases():
        for qp in qps:
            for seed in seeds:
                r = measure(codec, profile, n, t, qp, seed)
                r["transform"] = tname
                rows.append(r)
                print(f"{codec}:{profile.name} {tname} QP {qp} seed {seed}: {r['bits_per_coef']:.2f} bits, "
                      f"off-lattice blocks {r['off_lattice_blocks']:.2f}, kurtosis {r['error_kurtosis']:.2f}",
                      flush=True)
    with open(OUT / "transforms.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Coefficient domain: which codecs give back each coefficient", "",
        f"Regenerate: `.venv/bin/python benchmarks/codecs/transforms.py` (machine: {info.get('machine')}; "
        f"ffmpeg: {info.get('ffmpeg', '')[:40]}).", "",
        "A 256x256 Gaussian coefficient matrix, placed through the blockwise inverse of the transform named, "
        "on the checkerboard of mid-grey blocks; two seeds per QP (four for SVT-AV1 with HEVC's DCT). "
        "*bits + log2(error)*: bits per coefficient at equal error, lower is better (a bit per halving). "
        "*Encodes on the lattice*: encodes whose "
        "decoded coefficients all sit on one quantizer lattice, every block (off-lattice share under 0.1). "
        "*Kurtosis* of the coefficient error: about 1.8-2.2 when each coefficient is rounded on its own, "
        "about 3 when the codec's error is spread over blocks (sample domain).", "",
        "| codec:profile | transform | QPs | encodes on the lattice | error kurtosis | bits per coefficient "
        "| bits + log2(error) |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["profile"], r["transform"]), []).append(r)
    for (codec, prof, tname), rs in groups.items():
        on = sum(1 for r in rs if r["off_lattice_blocks"] == 0.0)
        qps = sorted({r["qp"] for r in rs})
        k = [r["error_kurtosis"] for r in rs]
        b = [r["bits_per_coef"] for r in rs]
        e = [r["bits_per_coef"] + float(np.log2(r["rel_error"])) for r in rs]
        lines.append(f"| {codec}:{prof} | {tname} | {', '.join(map(str, qps))} | {on} of {len(rs)} | "
                     f"{min(k):.2f}-{max(k):.2f} | {min(b):.2f}-{max(b):.2f} | {min(e):.2f}-{max(e):.2f} |")
    (OUT / "TRANSFORMS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
