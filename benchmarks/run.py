#!/usr/bin/env python
"""hac benchmarks: each row is a ratio against a baseline measured in the same run.

Usage: python benchmarks/run.py [--only NAME ...] [--quick]
Prints a markdown table and writes benchmarks/results.md (atomically).
"""
from __future__ import annotations

import argparse
import contextlib
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
        rows.append((f"pairwise_dist {n}x{n}x{d} f32", t_pd * 1e3, "x @ y.T", t_mm * 1e3, t_pd / t_mm, "<= 1.1"))
        rows.append((f"pairwise_dist {n}x{n}x{d} f32", t_pd * 1e3, "MERU formula, plain", t_plain * 1e3, t_pd / t_plain, "<= 1.0"))
        m = 65536
        a, b = torch.randn(m, d, generator=g) * 0.05, torch.randn(m, d, generator=g) * 0.05
        t_rd = timeit(lambda: rowwise_dist(a, b, curv=1.0))
        t_ang = timeit(lambda: (oxy_angle(a, b, curv=1.0), half_aperture(a, curv=1.0)))
        rows.append((f"ext angle + aperture, {m} pairs", t_ang * 1e3, "rowwise_dist", t_rd * 1e3, t_ang / t_rd, "info"))
        # points clustered at the origin at a small curvature: every pair is near and refined by rowwise_dist
        k = 256 if quick else 1024
        xc, yc = torch.randn(k, d, generator=g) * 0.01, torch.randn(k, d, generator=g) * 0.01
        t_near = timeit(lambda: pairwise_dist(xc, yc, curv=0.37), repeat=2)
        t_far = timeit(lambda: pairwise_dist(xc * 30, yc * 30, curv=0.37), repeat=2)
        rows.append((f"pairwise_dist {k}x{k}x{d}, every pair refined (cluster at the origin, c 0.37)", t_near * 1e3,
                     "same points x 30 (none refined)", t_far * 1e3, t_near / t_far, "info (bounded memory: 1 MiB chunks)"))
    # the same kernel in a fresh process whose glibc malloc keeps large blocks in its heap: the GEMM output and the
    # temporaries are then not page-faulted in on every call (bit-identical: the allocator never changes the math)
    r = _malloc_tuned_pairwise(n, d)
    rows.append((f"pairwise_dist {n}x{n}x{d} f32, malloc keeps large blocks (GLIBC_TUNABLES: notes; fresh process)", r["pd"] * 1e3,
                 "default malloc (the first row)", t_pd * 1e3, r["pd"] / t_pd, "info (bit-identical; opt-in)"))
    rows.append((f"pairwise_dist {n}x{n}x{d} f32, malloc keeps large blocks", r["pd"] * 1e3, "x @ y.T, same process",
                 r["mm"] * 1e3, r["pd"] / r["mm"], "<= 1.1"))
    return rows


# glibc malloc serves blocks over its mmap threshold (128 KiB, raised dynamically) with fresh pages and gives the top of
# its heap back beyond the trim threshold: every large tensor is then page-faulted in anew. Both raised, large blocks
# are reused from the heap (the process keeps its peak memory mapped until it exits).
MALLOC_TUNED = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def _malloc_tuned_pairwise(n, d):
    "{'pd': s, 'mm': s}: best times of `pairwise_dist` and the bare matmul of `bench_lorentz` in a process run under MALLOC_TUNED."
    import json, subprocess, sys
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import torch; from run import timeit; "
            "from hac.lorentz import pairwise_dist; torch.manual_seed(0); g = torch.Generator().manual_seed(0); "
            f"x = torch.randn({n}, {d}, generator=g) * 0.05; y = torch.randn({n}, {d}, generator=g) * 0.05; "
            "mm = timeit(lambda: x @ y.T); pd = timeit(lambda: pairwise_dist(x, y, curv=1.0)); "
            "print(json.dumps({'pd': pd, 'mm': min(mm, timeit(lambda: x @ y.T))}))")
    env = {**os.environ, **dict([MALLOC_TUNED.split("=", 1)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tiny_checkpoint(kind, path):
    from hac.models import build_model, tiny_config
    from hac.checkpoints import save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(build_model(tiny_config(kind)), path)
    return path


def _step_times(cfg):
    "Median seconds per optimizer step of hac.train.train(cfg) (from the per-step hook)."
    import hac.train as T
    stamps = []
    orig = T._after_step
    T._after_step = lambda step, state: stamps.append(time.perf_counter())
    try:
        T.train(cfg)
    finally:
        T._after_step = orig
    gaps = sorted(b - a for a, b in zip(stamps[:-1], stamps[1:]))
    return gaps[len(gaps) // 2]


def bench_steps(quick=False):
    "One unlearning step of HAC vs AC on the same tiny MERU and batch, and CLIP + AC."
    from hac.config import unlearn_config
    steps = 8 if quick else 25
    rows = []
    with tempfile.TemporaryDirectory() as d:
        meru, clip = _tiny_checkpoint("meru", Path(d) / "meru.pt"), _tiny_checkpoint("clip", Path(d) / "clip.pt")
        kw = dict(steps=steps, log_every=10**6, test_size=50, probe_size=50, progress=False, warmup=1)
        t_hac = _step_times(unlearn_config("hac", str(meru), ["dog"], **kw))
        t_ac_meru = _step_times(unlearn_config("ac", str(meru), ["dog"], **kw))
        t_ac_clip = _step_times(unlearn_config("ac", str(clip), ["dog"], **kw))
    rows.append(("HAC step, tiny MERU (batch 128 + 64 forget)", t_hac * 1e3, "AC step, same MERU and batch", t_ac_meru * 1e3, t_hac / t_ac_meru, "<= 1.2"))
    rows.append(("HAC step, tiny MERU", t_hac * 1e3, "AC step, tiny CLIP", t_ac_clip * 1e3, t_hac / t_ac_clip, "info"))
    return rows


def bench_fullsize(quick=False):
    "Full-size MERU ViT-S training step on CPU, images per second, fp32 vs bf16 autocast."
    from hac.losses import PretrainLoss
    from hac.models import build_model, full_config
    torch.manual_seed(0)
    model = build_model(full_config("meru_vit_s"))
    loss = PretrainLoss("lorentz", entail_weight=0.2, parent_weight=0.0, mask_true=False)
    bs = 4 if quick else 16
    imgs = torch.rand(bs, 3, 224, 224)
    texts = [f"a photo of a thing number {i}" for i in range(bs)]
    cls = torch.arange(bs)
    def step(bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            e = model(imgs, texts)
        parts = loss(e["image"].float(), e["text"].float(), scale=model.logit_scale, curv=model.curv,
                     img_cls=cls, txt_con=cls, truth=torch.eye(bs, dtype=torch.bool))
        parts["loss"].backward()
        model.zero_grad(set_to_none=True)
    t32 = timeit(lambda: step(False), repeat=2)
    t16 = timeit(lambda: step(True), repeat=2)
    return [(f"MERU ViT-S train step, batch {bs}, bf16 autocast (img/s {bs / t16:.1f})", t16 * 1e3,
             f"fp32 (img/s {bs / t32:.1f})", t32 * 1e3, t16 / t32, "info")]


def bench_eval(quick=False):
    "Zero-shot evaluation throughput on the default test split (2,000 images)."
    from hac.data import ANIMAL_MNIST_CLASSES, AnimalMNIST, named_templates
    from hac.evaluate import evaluate_zero_shot
    from hac.models import build_model, tiny_config
    ds = AnimalMNIST("test")
    x, y = ds.image_tensor(), ds.labels
    if quick:
        x, y = x[:400], y[:400]
    rows = []
    res = {}
    for kind in ("meru", "clip"):
        torch.manual_seed(0)
        m = build_model(tiny_config(kind))
        m.class_prototypes(list(ANIMAL_MNIST_CLASSES), named_templates("animal_mnist"))  # warm the text cache
        res[kind] = timeit(lambda: evaluate_zero_shot(m, x, y, list(ANIMAL_MNIST_CLASSES), named_templates("animal_mnist"), forget=[4]), repeat=2)
    rows.append((f"zero-shot eval MERU, {len(y)} images ({len(y) / res['meru']:.0f} img/s)", res["meru"] * 1e3,
                 f"CLIP ({len(y) / res['clip']:.0f} img/s)", res["clip"] * 1e3, res["meru"] / res["clip"], "info"))
    return rows


_MEM_SNIPPET = r"""
import resource, sys, tempfile, torch
from pathlib import Path
from hac.models import build_model, tiny_config
from hac.checkpoints import save_checkpoint
what, steps = sys.argv[1], int(sys.argv[2])
d = Path(tempfile.mkdtemp())
if what == "eval":
    from hac.data import ANIMAL_MNIST_CLASSES, AnimalMNIST, named_templates
    from hac.evaluate import evaluate_zero_shot
    ds = AnimalMNIST("test"); m = build_model(tiny_config("meru"))
    evaluate_zero_shot(m, ds.image_tensor(), ds.labels, list(ANIMAL_MNIST_CLASSES), named_templates("animal_mnist"), forget=[4])
else:
    from hac.config import pretrain_config, unlearn_config
    from hac.train import train
    kw = dict(steps=steps, log_every=10**6, test_size=100, probe_size=100, progress=False)
    if what == "pretrain":
        train(pretrain_config("meru", **kw))
    else:
        p = d / "m.pt"; save_checkpoint(build_model(tiny_config("meru")), p)
        train(unlearn_config("hac", str(p), ["dog"], **kw))
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024)   # this image's peak (ru_maxrss keeps the forking parent's)
"""


def bench_memory(quick=False):
    "Peak resident memory (MiB) of pretraining, unlearning and evaluation, each in a fresh process."
    import subprocess, sys
    rows = []
    for what in ("pretrain", "unlearn", "eval"):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, what, "3" if quick else "10"], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"memory benchmark {what} failed:\n{out.stderr[-2000:]}")
        rows.append((f"peak RSS, {what} (tiny MERU), MiB", float(out.stdout.strip().splitlines()[-1]), "wall time, ms",
                     (time.perf_counter() - t0) * 1e3, float("nan"), "info"))
    return rows


def bench_reproduce(quick=False):
    "Where `make reproduce` time goes (read from the last default-profile run)."
    import json
    p = HERE.parent / "runs" / "_reproduce_default.json"
    if not p.exists():
        return [("make reproduce (no default run found in runs/)", float("nan"), "-", float("nan"), float("nan"), "<= 30 min")]
    s = json.loads(p.read_text())
    rows = [(f"reproduce: {k}", v * 1e3, "total", s["total_seconds"] * 1e3, v / s["total_seconds"], "share") for k, v in s["seconds"].items()]
    rows.append(("make reproduce, default profile, total (s)", s["total_seconds"], "budget 30 min (s)", 1800.0, s["total_seconds"] / 1800, "<= 1.0"))
    return rows


def _gemm_rate(n=1024, repeat=7):
    "FLOP/s of one fp32 n^3 matmul in this process (the denominator of the step's GEMM-rate ratio)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / timeit(lambda: a @ b, repeat=repeat, warmup=2)


def _step_config(quick=False):
    "The pretraining config of the step rows (step_flops, gemm_ceiling, levers): tiny MERU, batch 128, 1 thread."
    from hac.config import pretrain_config
    return pretrain_config("meru", steps=12 if quick else 40, batch_size=128, log_every=10**6, test_size=50, probe_size=50,
                           threads=1, progress=False)


def _pretrain_step(quick=False):
    """The `_step_config` and a function that runs one forward + backward of its first batch (the model set up by
    hac.train as `train` would)."""
    import hac.train as T
    cfg = _step_config(quick)
    run, opt, sched, objective, groups, _ = T._setup(cfg, None, None, None, None)
    run.model.train()
    b = run.data.draw(0, 0, 1)
    return cfg, lambda: T._objective(run, objective, T._loss_batch(run, b))["loss"].backward()


def bench_step_flops(quick=False):
    """A pretraining step of the default profile (tiny MERU, batch 128), 1 thread: its forward + backward FLOPs
    (`FlopCounterMode`) per second of a loop step (median of `hac.train.train`'s steps, optimizer and batch drawing
    included), over a 1-thread fp32 1024^3 GEMM timed in the same process."""
    from torch.utils.flop_counter import FlopCounterMode
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        cfg, fwd_bwd = _pretrain_step(quick)
        with FlopCounterMode(display=False) as fc:
            fwd_bwd()
        flops = fc.get_total_flops()
        gemm = _gemm_rate()
        step = _step_times(cfg)
        gemm = max(gemm, _gemm_rate())   # best of both sides of the step timing (load drifts)
    finally:
        torch.set_num_threads(threads)
    rate = flops / step
    return [(f"pretrain step, tiny MERU batch 128, 1 thread: {flops / 1e9:.2f} GFLOP fwd+bwd at {rate / 1e9:.0f} GFLOP/s (ms per step)",
             step * 1e3, f"fp32 GEMM 1024^3, 1 thread, {gemm / 1e9:.0f} GFLOP/s (ms per GEMM)", 2 * 1024 ** 3 / gemm * 1e3,
             rate / gemm, ">= 0.6 (FLOP-rate ratio)")]


def bench_gemm_ceiling(quick=False):
    """The ceiling of the `step_flops` ratio. Every FLOP-counted op of one forward + backward of that step (the matrix
    products and the patch convolution that `FlopCounterMode` counts) is recorded with copies of its operands (same
    shapes and strides), then replayed alone at 1 thread, best of several. Their FLOPs over their summed replay time is
    the rate the step would reach if everything else (LayerNorm, GELU, softmax, attention, the loss, the optimizer,
    batch drawing) cost nothing. Over the 1024^3 GEMM of `step_flops`, timed in the same process, it bounds that row's
    ratio from above. The second row: the replayed ops' share of a measured step."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    def copy(a): return a.detach().clone() if isinstance(a, torch.Tensor) else a   # clone keeps dense strides (transposes)

    class Record(TorchDispatchMode):
        "Every op of the FLOP counter's registry that runs inside, with copies of its operands."
        def __init__(self):
            super().__init__()
            self.calls = []
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func.overloadpacket in flop_registry:
                self.calls.append((func, tuple(copy(a) for a in args), {k: copy(v) for k, v in kwargs.items()}))
            return func(*args, **kwargs)

    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        cfg, fwd_bwd = _pretrain_step(quick)
        rec = Record()
        with rec:
            fwd_bwd()
        flops, secs, kinds = 0, 0.0, {}
        for func, args, kwargs in rec.calls:
            with FlopCounterMode(display=False) as fc:
                func(*args, **kwargs)
            f = fc.get_total_flops()
            t = timeit(lambda: func(*args, **kwargs), repeat=3 if quick else 7)
            flops, secs = flops + f, secs + t
            name = func.overloadpacket.__name__
            kinds[name] = kinds.get(name, 0) + 1
        gemm = _gemm_rate()
        step = _step_times(cfg)
        gemm = max(gemm, _gemm_rate())   # best of both sides of the timings (load drifts)
    finally:
        torch.set_num_threads(threads)
    ops = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    rate = flops / secs
    return [(f"the step's FLOP-counted ops replayed alone ({ops}): {flops / 1e9:.2f} GFLOP at {rate / 1e9:.0f} GFLOP/s (ms)",
             secs * 1e3, f"fp32 GEMM 1024^3, 1 thread, {gemm / 1e9:.0f} GFLOP/s (ms per GEMM)", 2 * 1024 ** 3 / gemm * 1e3,
             rate / gemm, "info: ceiling of the step_flops ratio"),
            ("  their share of one pretraining step (ms of the replayed ops)", secs * 1e3, "median step of the same config (ms)",
             step * 1e3, secs / step, "info")]


@contextlib.contextmanager
def _lever(name):
    "While the block runs, hac.train builds its optimizer or model with the speed lever `name` ('' for none)."
    import functools
    import hac.train as T
    adamw, build = torch.optim.AdamW, T._build
    if name in ("fused AdamW", "foreach AdamW"):
        torch.optim.AdamW = functools.partial(adamw, **({"fused": True} if name == "fused AdamW" else {"foreach": True}))
    elif name == "compiled image tower":
        def compiled(cfg, device, model=None):
            model, frozen = build(cfg, device, model)
            model.visual.compile()   # in place: the state_dict keeps its keys
            return model, frozen
        T._build = compiled
    elif name == "unfused attention":
        def unfused(cfg, device, model=None):
            model, frozen = build(cfg, device, model)
            for net in (model, frozen):   # timm's Attention: q @ k^T, softmax, @ v (bmm) instead of SDPA's CPU flash kernel
                for m in (net.visual.modules() if net is not None else ()):
                    if hasattr(m, "fused_attn"): m.fused_attn = False
            return model, frozen
        T._build = unfused
    elif name: raise ValueError(f"unknown lever {name!r}")
    try:
        yield
    finally:
        torch.optim.AdamW, T._build = adamw, build


LEVERS = ("foreach AdamW", "fused AdamW", "compiled image tower", "unfused attention")


def bench_levers(quick=False):
    """The levers of the step's FLOP rate, each alone on the `step_flops` pretraining step (tiny MERU, batch 128, 1
    thread): median step time against the eager step of the same run length, and whether the weights after the run
    are bit-identical to the eager run's (a lever that changes them needs every cached run retrained before it can be
    kept). torch.compile's first steps (compilation) are outside the median; the first step's seconds (from the call of
    train, so setup included) are in the row's label."""
    import hac.train as T
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        cfg = _step_config(quick)
        def run(name):
            stamps, orig = [], T._after_step
            T._after_step = lambda step, state: stamps.append(time.perf_counter())
            t0 = time.perf_counter()
            try:
                with _lever(name): model = T.train(cfg)["model"]
            finally:
                T._after_step = orig
            gaps = sorted(b - a for a, b in zip(stamps[:-1], stamps[1:]))
            return gaps[len(gaps) // 2], stamps[0] - t0, {k: v.detach().clone() for k, v in model.state_dict().items()}
        run("")   # the first run in a process encodes the vocabulary (setup seconds): not a fair baseline
        base = run("")
        rows = []
        for name in LEVERS:
            try:
                r = run(name)
            except Exception as e:   # a lever this torch build or CPU lacks is a finding, not a crash of the table
                rows.append((f"pretrain step + {name}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})", float("nan"),
                             "eager step", base[0] * 1e3, float("nan"), "info"))
                continue
            diff = max(float((r[2][k].float() - base[2][k].float()).abs().max()) for k in base[2] if base[2][k].is_floating_point())
            same = "bit-identical" if diff == 0 else f"weights differ after {cfg.steps} steps (max |dw| {diff:.1e})"
            rows.append((f"pretrain step + {name} ({same}; first step {r[1]:.1f} s vs {base[1]:.1f} s)", r[0] * 1e3,
                         "eager step, same run", base[0] * 1e3, r[0] / base[0], "info (kept only if bit-identical or retrained)"))
    finally:
        torch.set_num_threads(threads)
    return rows


BENCH_METHODS = ("finetune", "neggrad", "ac", "hac", "salun", "cliperase", "delete", "diet", "slug")


def bench_memory_methods(quick=False):
    """Peak resident memory and wall time of one unlearning run per (model, method) at the benchmark's size
    (configs/default.yaml `benchmark`: 30 steps of 64 retain + 32 forget pairs, probe every 3 steps on 300 images, all
    2,000 test images before and after, MIA on 500), each in a fresh process (VmHWM of /proc/self/status: the peak of the process
    image since its exec; ru_maxrss would carry over the forking parent's peak, and the shared worker processes of
    `make reproduce` cannot give a peak per run). Random-init tiny models: memory and time do
    not depend on the weights. Baseline: fine-tuning on the same model."""
    from hac.config import unlearn_config
    from hac.experiments import peak_memory
    kw = dict(steps=6 if quick else 30, batch_size=64, forget_batch=32, warmup=5, log_every=3, probe_size=300,
              test_size=300 if quick else 0, mia_size=0 if quick else 500, min_lr_ratio=1.0, lr=2e-5, threads=1, progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for kind in ("clip", "meru"):
            ckpt = _tiny_checkpoint(kind, Path(d) / f"{kind}.pt")
            res = {}
            for m in BENCH_METHODS:
                if m == "hac" and kind == "clip": continue
                res[m] = peak_memory(unlearn_config(m, str(ckpt), ["dog"], **kw))   # alone in a fresh process (VmHWM)
            base = res["finetune"]
            for m, r in res.items():
                rows.append((f"peak RSS, {kind.upper()} + {m}, one benchmark run, MiB (wall {r['wall_s']:.1f} s)", r["peak_mib"],
                             f"{kind.upper()} + finetune, MiB (wall {base['wall_s']:.1f} s)", base["peak_mib"],
                             r["peak_mib"] / base["peak_mib"], "info (memory ratio)"))
    return rows


@contextlib.contextmanager
def phase_meter(targets, measure):
    """While the block runs, every call of each (object, attribute, phase) in `targets` runs inside `measure()`, a
    context manager whose `__exit__` returns nothing and whose `.value()` after the call is added to the phase:
    yields {phase: total}."""
    tot, saved = {}, []
    def metered(f, key):
        def g(*a, **k):
            with measure() as m: r = f(*a, **k)
            tot[key] = tot.get(key, 0) + m.value()
            return r
        return g
    for obj, name, key in targets:
        f = getattr(obj, name); saved.append((obj, name, f)); setattr(obj, name, metered(f, key))
    try:
        yield tot
    finally:
        for obj, name, f in reversed(saved): setattr(obj, name, f)


class _Clock:
    "Wall seconds of the block, for `phase_meter`."
    def __enter__(self): self.t = time.perf_counter(); return self
    def __exit__(self, *exc): self.s = time.perf_counter() - self.t
    def value(self): return self.s


def phase_timer(targets):
    "While the block runs, time every call of each (object, attribute, phase) in `targets`: yields {phase: seconds}."
    return phase_meter(targets, _Clock)


def _timed_unlearning_run(cfg):
    "(wall s, {phase: s}, history, state dict) of one unlearning run, with setup / evaluation / probe phases timed."
    import hac.evaluators as EV
    import hac.train as T
    with phase_timer([(T, "_setup", "setup"), (EV.AnimalMNISTEval, "full", "eval"), (EV.AnimalMNISTEval, "probe", "probe")]) as tm:
        t0 = time.perf_counter(); out = T.train(cfg); wall = time.perf_counter() - t0
    return wall, tm, out["history"], {k: v.clone() for k, v in out["model"].state_dict().items()}


def _unlearning_flops(cfg):
    """(whole run, evaluation) FLOPs of one unlearning run of `cfg` (`FlopCounterMode`: matrix products, convolutions,
    attention): every op of `hac.train.train`, and those inside the evaluator's `full` and `probe` calls. With the
    stores warm, the start model's evaluation and step-0 probe are read from the store and count nothing, as in the run
    that `bench_unlearn_run` times."""
    from torch.utils.flop_counter import FlopCounterMode
    import hac.evaluators as EV
    import hac.train as T
    class Flops(FlopCounterMode):   # nested inside `whole`: the whole run's counter sees these ops too
        def __init__(self): super().__init__(display=False)
        def value(self): return self.get_total_flops()
    ev = [(EV.AnimalMNISTEval, "full", "eval"), (EV.AnimalMNISTEval, "probe", "eval")]
    with phase_meter(ev, Flops) as inner, FlopCounterMode(display=False) as whole:
        T.train(cfg)
    total, evals = whole.get_total_flops(), inner.get("eval", 0)
    if not 0 < evals < total: raise AssertionError(f"evaluation FLOPs {evals} not inside the run's {total}")
    return total, evals


def bench_unlearn_run(quick=False):
    """One unlearning run of the claims protocol's size (MERU + HAC, 30 steps of 64 + 32 pairs, probe every 3 steps,
    all 2,000 test images before and after), 1 thread: without and with the stores of the frozen text tower's features
    (hac.models.pooled_chunk) and of the starting model's evaluation (hac.evaluators.stored_eval), in one process; the
    results must be bit-identical. Also the evaluation share."""
    import hac.evaluators as EV
    import hac.models as M
    from hac.experiments import protocol
    from hac.config import unlearn_config
    kw = protocol(steps=6 if quick else 30, batch_size=64, forget_batch=32, warmup=5, log_every=3, probe_size=300,
                  test_size=300 if quick else 0)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    env = {k: os.environ.pop(k, None) for k in ("HAC_TEXT_CACHE", "HAC_EVAL_CACHE")}
    try:
        with tempfile.TemporaryDirectory() as d:
            meru = _tiny_checkpoint("meru", Path(d) / "meru.pt")
            cfg = unlearn_config("hac", str(meru), ["cat"], seed=0, lr=2e-5, **kw)
            _timed_unlearning_run(cfg)                      # warm-up: imports, data files, first-call costs
            cold = []
            for _ in range(2):
                M._TEXT_STORE.clear(); EV._EVAL_STORE.clear(); cold.append(_timed_unlearning_run(cfg))
            warm = [_timed_unlearning_run(cfg) for _ in range(2)]   # the stores now hold every chunk and the start's eval
            flops, eval_flops = _unlearning_flops(cfg)
            gemm = _gemm_rate()
    finally:
        torch.set_num_threads(threads)
        os.environ.update({k: v for k, v in env.items() if v is not None})
    c, w = min(cold, key=lambda r: r[0]), min(warm, key=lambda r: r[0])
    strip = lambda h: [{k: v for k, v in row.items() if k != "time_s"} for row in h]   # wall time is not a result
    same = strip(c[2]) == strip(w[2]) and all(torch.equal(c[3][k], w[3][k]) for k in c[3])
    if not same: raise AssertionError("the stores changed the run's results: history or weights differ")
    ev = lambda r: r[1].get("eval", 0.0) + r[1].get("probe", 0.0)
    return [("unlearning run, protocol size, text features and start eval from the stores (bit-identical)", w[0] * 1e3,
             "computed anew (no stores)", c[0] * 1e3, w[0] / c[0], "< 1.0"),
            (f"  of which setup (model, data, text features): {w[1]['setup']:.1f} s", w[1]["setup"] * 1e3,
             f"no store: {c[1]['setup']:.1f} s", c[1]["setup"] * 1e3, w[1]["setup"] / c[1]["setup"], "info"),
            (f"  evaluation (before/after test + probes) share of the run (with store)", ev(w) * 1e3,
             "whole run", w[0] * 1e3, ev(w) / w[0], "<= 0.2"),
            # the protocol fixes what is evaluated (probes x probe_size images, the whole test split): its FLOPs are a
            # share of the run's that no speed-up of the same work changes
            ("  evaluation's FLOPs (GFLOP; matmul, conv, attention: FlopCounterMode)", eval_flops / 1e9,
             "the run's FLOPs (GFLOP)", flops / 1e9, eval_flops / flops, "info: the work the protocol asks for"),
            # the lowest time share any speed-up of the evaluation alone can reach: its FLOPs at the GEMM rate
            (f"  evaluation at the 1-thread GEMM rate ({gemm / 1e9:.0f} GFLOP/s; ms)", eval_flops / gemm * 1e3,
             "+ the rest of the run as measured (ms)", eval_flops / gemm * 1e3 + (w[0] - ev(w)) * 1e3,
             (eval_flops / gemm) / (eval_flops / gemm + w[0] - ev(w)), "info: floor of the share above")]


BENCHES = {"lorentz": bench_lorentz, "steps": bench_steps, "fullsize": bench_fullsize, "eval": bench_eval,
           "memory": bench_memory, "reproduce": bench_reproduce, "step_flops": bench_step_flops, "memory_methods": bench_memory_methods,
           "unlearn_run": bench_unlearn_run, "levers": bench_levers, "gemm_ceiling": bench_gemm_ceiling}


SEED_PREFIXES = {"pairwise_dist": "lorentz", "ext angle": "lorentz", "HAC step": "steps", "zero-shot eval": "eval",
                 "peak RSS": "memory", "MERU ViT-S train step": "fullsize"}
# (the old "reproduce" rows timed a 30-minute default profile that no longer exists: not carried over)


def _load_rows(json_path, md_path):
    "{bench: {'rows': [...], 'when': str}}: from results.json, or (first time) parsed from the table in results.md."
    import json
    if json_path.exists(): return json.loads(json_path.read_text())
    out = {}
    if not md_path.exists(): return out
    for line in md_path.read_text().split("<!-- ... to here", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[1].replace(".", "", 1).replace("nan", "0").isdigit(): continue
        bench = next((b for pre, b in SEED_PREFIXES.items() if cells[0].startswith(pre)), None)
        if bench is None: continue
        row = [cells[0], float(cells[1]), cells[2], float(cells[3]), float(cells[4].rstrip("x")), cells[5]]
        out.setdefault(bench, {"rows": [], "when": "before 2026-12-05 (from the previous table)"})["rows"].append(row)
    return out


def main(argv=None):
    import json
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these benchmarks (the others keep their last rows)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke): printed, not written")
    p.add_argument("--out", default=str(HERE / "results.md"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    store_path = out.with_suffix(".json")
    store = _load_rows(store_path, out)
    for name in args.only or BENCHES:
        load = os.getloadavg()[0]
        rows = [list(r) for r in BENCHES[name](quick=args.quick)]
        for r in rows:
            print(f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.1f} | {r[4]:.2f}x | {r[5]} |", flush=True)
        store[name] = {"rows": rows, "when": f"{time.strftime('%Y-%m-%d')}, load {load:.1f}"}
    if args.quick: return
    header = (f"# hac benchmarks\n\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads. Best of several wall times. Each benchmark's rows keep the date and "
              "load average of their last run (`--only` reruns some and keeps the others).\n\n"
              "| measured | ms | baseline | ms | ratio | target | run |\n|---|---:|---|---:|---:|---|---|\n")
    lines = [f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.1f} | {r[4]:.2f}x | {r[5]} | {store[b]['when']} |"
             for b in BENCHES if b in store for r in store[b]["rows"]]
    text = header + "\n".join(lines) + "\n"
    print(text)
    # keep the hand-written notes and sections (e.g. the GPU measurements of gpu_step.py) after the end marker
    begin, end = "<!-- benchmarks/run.py writes from here ... -->", "<!-- ... to here; the notes below are kept -->"
    old = out.read_text() if out.exists() else ""
    text = f"{begin}\n{text.rstrip()}\n{end}\n" + (old.split(end, 1)[1].lstrip("\n") if end in old else "")
    for path, body in ((store_path, json.dumps(store, indent=1)), (out, text)):
        fd, tmp = tempfile.mkstemp(dir=str(path.parent), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
