#!/usr/bin/env python
"""hac benchmarks: each row is a ratio against a baseline measured in the same run.

Usage: python benchmarks/run.py [--only NAME ...] [--quick]
Prints a markdown table and writes benchmarks/results.md (atomically).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def timeit(fn, *, repeat=5, warmup=1):
    "Best-of-`repeat` wall time in seconds (after `warmup` calls)."
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def meru_pairwise_plain(x, y, curv):
    "MERU's published formula written plainly (the 'never slower than' baseline)."
    xt = torch.sqrt(1 / curv + torch.sum(x**2, dim=-1, keepdim=True))
    yt = torch.sqrt(1 / curv + torch.sum(y**2, dim=-1, keepdim=True))
    inner = x @ y.T - xt @ yt.T
    return torch.acosh(torch.clamp(-curv * inner, min=1 + 1e-8)) / curv**0.5


def bench_lorentz(quick=False):
    from hac.lorentz import pairwise_dist, oxy_angle, half_aperture, rowwise_dist
    n, d = (1024, 512) if quick else (4096, 512)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g) * 0.05
    y = torch.randn(n, d, generator=g) * 0.05
    rows = []
    with torch.no_grad():
        t_mm = timeit(lambda: x @ y.T)
        t_pd = timeit(lambda: pairwise_dist(x, y, curv=1.0))
        t_plain = timeit(lambda: meru_pairwise_plain(x, y, 1.0))
        t_mm2 = timeit(lambda: x @ y.T)  # re-measure: the baseline is the faster of two runs
        t_mm = min(t_mm, t_mm2)
        rows.append((f"pairwise_dist {n}x{n}x{d} f32", t_pd * 1e3, "x @ y.T", t_mm * 1e3, t_pd / t_mm, "<= 1.3"))
        rows.append((f"pairwise_dist {n}x{n}x{d} f32", t_pd * 1e3, "MERU formula, plain", t_plain * 1e3, t_pd / t_plain, "<= 1.0"))
        m = 65536
        a, b = torch.randn(m, d, generator=g) * 0.05, torch.randn(m, d, generator=g) * 0.05
        t_rd = timeit(lambda: rowwise_dist(a, b, curv=1.0))
        t_ang = timeit(lambda: (oxy_angle(a, b, curv=1.0), half_aperture(a, curv=1.0)))
        rows.append((f"ext angle + aperture, {m} pairs", t_ang * 1e3, "rowwise_dist", t_rd * 1e3, t_ang / t_rd, "info"))
    return rows


BENCHES = {"lorentz": bench_lorentz}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks")
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke)")
    p.add_argument("--out", default=str(HERE / "results.md"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    header = (f"# hac benchmarks\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads. Best of 5 wall times.\n\n"
              "| measured | ms | baseline | ms | ratio | target |\n|---|---:|---|---:|---:|---|\n")
    lines = []
    for name in args.only or BENCHES:
        for r in BENCHES[name](quick=args.quick):
            line = f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.1f} | {r[4]:.2f}x | {r[5]} |"
            print(line, flush=True)
            lines.append(line)
    text = header + "\n".join(lines) + "\n"
    print(text)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
