#!/usr/bin/env python
"""Full-size MERU HAC unlearning step: images/s, step time, achieved TFLOP/s and MFU (issue 13, item 6).

One step = what `hac.train` does per unlearning step: the trainable MERU encodes retain + forget images and the
retain, concept, forget and alternative captions (bf16 autocast on CUDA; the Lorentz lift, distances and losses
run in float32 inside the package), the frozen copy encodes the same inputs without grad (HAC's norm and
calibration terms), `hac.losses.HAC` (the loop's recipe, `hac.train.make_objective`), backward, gradient
clipping, AdamW, `clamp_params_`. The model is a randomly initialized MERU in the released layout
(`hac.models.full_config`); the batch is synthetic (uniform pixels, captions over the Animal-MNIST taxonomy,
forgetting "dog").

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode on one eager step (matmuls, convolutions and
attention; elementwise work is not counted, as usual for MFU); MFU = achieved FLOP/s / the bf16 (fp32 on CPU)
matmul rate measured in this run on a large square matmul. Images/s counts retain + forget images of the
trainable model per second.

Usage:
  python benchmarks/gpu_step.py                                   # cuda if visible: ViT-B, batch 256, bf16
  python benchmarks/gpu_step.py --compile --fused-adamw           # adds a torch.compile row (ratio vs eager)
  python benchmarks/gpu_step.py --device cpu --batch 2 --steps 1  # CPU smoke (fp32: bf16 is emulated on most CPUs)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

MERU_MODELS = ("meru_vit_s", "meru_vit_b", "meru_vit_l")
FORGET = "dog"
_WORDS = ("my", "new", "little", "old", "friend", "today", "after", "walk", "the", "park", "sunny", "morning", "at",
          "home", "with", "family", "look", "this", "beautiful", "found", "near", "lake", "first", "time", "snow")


# ---------------------------------------------------------------- measuring
def sync(device: torch.device):
    if device.type == "cuda": torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    "Measured dense matmul rate (TFLOP/s) of an (n x n) @ (n x n) product in `dtype` on `device` (best of reps)."
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(3): a @ b
    sync(device)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e12


def _register_cpu_sdpa_flops():
    """FlopCounterMode counts the CUDA attention kernels but not CPU's fused SDPA kernel: give it the same formula,
    so that CPU and GPU counts agree (without it, CPU MFU would leave attention out)."""
    import torch.utils.flop_counter as fc
    aten = torch.ops.aten
    same_as = {"_scaled_dot_product_flash_attention_for_cpu": aten._scaled_dot_product_flash_attention,
               "_scaled_dot_product_flash_attention_for_cpu_backward": aten._scaled_dot_product_flash_attention_backward}
    for name, ref in same_as.items():
        op = getattr(aten, name, None)
        if op is not None and op not in fc.flop_registry: fc.flop_registry[op] = fc.flop_registry[ref]


def count_flops(fn) -> tuple[float, dict]:
    "(total FLOPs, {op name: FLOPs}) of one call of `fn` (eager)."
    from torch.utils.flop_counter import FlopCounterMode
    _register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as fcm:
        fn()
    per_op = {str(op).replace("aten.", ""): v for op, v in fcm.get_flop_counts().get("Global", {}).items()}
    return float(fcm.get_total_flops()), per_op


# ---------------------------------------------------------------- synthetic batch
class Tables:
    "Taxonomy tables of one forget set, as `hac.pairs.AnimalMNISTBatches` builds them (truth, parents, leaves, anchors)."
    def __init__(self, forget: str = FORGET):
        from hac.data import load_taxonomy
        tx = self.tx = load_taxonomy()
        self.classes, self.concepts = list(tx.classes), list(tx.concepts)
        self.truth = torch.tensor([[c in tx.path(k) for c in self.concepts] for k in self.classes])   # (C, K)
        self.parent = torch.tensor([tx.index(tx.parent(c)) if tx.parent(c) else -1 for c in self.concepts])
        self.leaf = torch.tensor([tx.index(k) for k in self.classes])
        fc = torch.tensor([k in tx.leaves_under(forget) or k == forget for k in self.classes])
        if not fc.any(): raise ValueError(f"forget concept {forget!r} names no class of {self.classes}")
        self.forget_classes = torch.nonzero(fc).flatten()
        self.retain_classes = torch.nonzero(~fc).flatten()
        self.forget_concepts = torch.nonzero((self.truth.T & ~fc).sum(1) == 0).flatten()
        gone = set(self.forget_concepts.tolist())
        self.anchor = torch.tensor([next((tx.index(a) for a in tx.ancestors(k) if tx.index(a) not in gone), -1)
                                    for k in self.classes])
        keep = torch.ones(len(self.concepts), dtype=torch.bool); keep[self.forget_concepts] = False
        self.retain_concepts = torch.nonzero(keep).flatten()
        pos = {k: i for i, k in enumerate(self.retain_concepts.tolist())}
        self.parent_r = torch.tensor([pos.get(int(self.parent[k]), -1) for k in self.retain_concepts.tolist()])


def _caption(concept: str, rng: random.Random, words: int) -> str:
    "A RedCaps-like caption: `words` words on average, the concept at a random place."
    n = max(1, int(rng.uniform(0.4, 1.6) * words))
    ws = [rng.choice(_WORDS) for _ in range(n)]
    ws.insert(rng.randrange(n + 1), concept)
    return " ".join(ws)


def synthetic_batch(t: Tables, n_r: int, n_f: int, device: torch.device, seed: int = 0, words: int = 12) -> dict:
    "Images (on `device`), caption strings and index tensors of one unlearning step."
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    cls_r = t.retain_classes[torch.randint(len(t.retain_classes), (n_r,), generator=g)]
    cls_f = t.forget_classes[torch.randint(len(t.forget_classes), (n_f,), generator=g)]
    def pick(cls, forbid):    # the class itself or a true ancestor that is allowed
        out = []
        for c in cls.tolist():
            ok = [k for k in torch.nonzero(t.truth[c]).flatten().tolist() if forbid(k)]
            out.append(rng.choice(ok))
        return torch.tensor(out)
    gone = set(t.forget_concepts.tolist())
    con_r = pick(cls_r, lambda k: k not in gone)
    con_f = pick(cls_f, lambda k: k in gone)
    alt_cls = t.retain_classes[torch.randint(len(t.retain_classes), (n_f,), generator=g)]
    con_alt = t.leaf[alt_cls]
    name = lambda ks: [_caption(t.concepts[k], rng, words) for k in ks.tolist()]
    gen = torch.Generator(device=device).manual_seed(seed)
    return dict(images=torch.rand(n_r + n_f, 3, 224, 224, device=device, generator=gen),
                cap_r=name(con_r), concept_caps=[f"a photo of a {c}." for c in t.concepts], cap_f=name(con_f),
                cap_alt=name(con_alt), cls_r=cls_r, con_r=con_r, cls_f=cls_f, con_f=con_f, con_alt=con_alt,
                anc_f=t.anchor[cls_f], leaf_f=t.leaf[cls_f], n_r=n_r, n_f=n_f)


# ---------------------------------------------------------------- the step
class Step:
    "One HAC unlearning step of `model` (trainable) against `frozen`, as hac.train runs it."
    def __init__(self, model, frozen, objective, opt, params, tables: Tables, sb: dict, device, amp_dtype,
                 grad_clip: float):
        self.model, self.frozen, self.objective, self.opt, self.params = model, frozen, objective, opt, params
        self.t, self.sb, self.device, self.grad_clip = tables, sb, device, grad_clip
        self.amp_dtype = amp_dtype
        self.texts = sb["cap_r"] + sb["concept_caps"] + sb["cap_f"] + sb["cap_alt"]
        on = lambda x: x.to(device)
        self.const = dict(cls_r=on(sb["cls_r"]), con_r=on(sb["con_r"]), parent=on(tables.parent),
                          truth=on(tables.truth), cls_f=on(sb["cls_f"]), con_f=on(sb["con_f"]),
                          con_alt=on(sb["con_alt"]), anc_f=on(sb["anc_f"]), leaf_f=on(sb["leaf_f"]),
                          parent_r=on(tables.parent_r))
        self.retain_concepts = on(tables.retain_concepts)
        self.last_loss = None

    def _amp(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()

    def __call__(self):
        m, sb = self.model, self.sb
        nr, nf, nk = sb["n_r"], sb["n_f"], len(sb["concept_caps"])
        with self._amp(): e = m(sb["images"], self.texts)
        img, txt = e["image"].float(), e["text"].float()
        with torch.no_grad(), self._amp(): e0 = self.frozen(sb["images"], self.texts)
        img0, txt0 = e0["image"].float(), e0["text"].float()
        o = nr + nk
        b = dict(self.const, img_r=img[:nr], txt_r=txt[:nr], concept_txt=txt[nr:o], img_f=img[nr:],
                 txt_f=txt[o:o + nf], txt_alt=txt[o + nf:o + 2 * nf], scale=m.logit_scale, curv=m.curv,
                 img_r0=img0[:nr], txt_r0=txt0[:nr], concept_txt0=txt0[nr:o], img_f0=img0[nr:],
                 curv0=self.frozen.curv.detach())
        b["concept_txt_r"] = b["concept_txt"][self.retain_concepts]
        parts = self.objective(b)
        self.opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if self.grad_clip: torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        m.clamp_params_()
        self.last_loss = parts["loss"].detach()
        return parts


def time_steps(step: Step, steps: int, warmup: int, device) -> dict:
    "Mean seconds per step over `steps` back-to-back steps (after `warmup`; one synchronization at the end)."
    for _ in range(warmup): step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps): step()
    sync(device)
    total = time.perf_counter() - t0
    loss = float(step.last_loss)
    if not math.isfinite(loss): raise RuntimeError(f"the HAC loss is {loss}: the benchmark step is broken")
    return dict(mean_s=total / steps, loss=loss)


def tokenize_ms(texts: list[str], context_length: int = 77) -> float:
    "Host time (ms) to tokenize `texts` with a cold cache (real training sees new captions every step)."
    from hac.models import CLIPTokenizer
    tok = CLIPTokenizer(context_length, cache_size=0)
    t0 = time.perf_counter(); tok(texts)
    return (time.perf_counter() - t0) * 1e3


def attention_report(model) -> dict:
    "Which attention implementation each tower uses."
    from torch import nn
    vis = [b.attn for b in model.visual.blocks]
    out = {"vision": f"timm Attention, fused_attn={all(getattr(a, 'fused_attn', False) for a in vis)} "
                     "(F.scaled_dot_product_attention, no mask)"}
    txt = getattr(model.textual, "resblocks", None)
    if txt is not None and isinstance(txt[0].attn, nn.MultiheadAttention):
        out["text"] = ("nn.MultiheadAttention(need_weights=False, is_causal=True) -> F.scaled_dot_product_attention "
                       "with the causal hint (the flash kernel applies on CUDA)")
    return out


# ---------------------------------------------------------------- main
def build(args, device):
    from hac.config import unlearn_config
    from hac.models import build_model, full_config
    from hac.train import make_objective, select_parameters
    torch.manual_seed(args.seed)
    model = build_model(full_config(args.model)).to(device)
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    model.check_inputs = frozen.check_inputs = False      # as hac.train: no per-batch pixel checks (they sync)
    model.train()
    cfg = unlearn_config("hac", "<synthetic>", [FORGET])
    objective = make_objective(cfg, model.geometry)
    groups = select_parameters(model, cfg.train_params, cfg.learn_curv, cfg.weight_decay)
    kw = dict(fused=True) if args.fused_adamw else {}
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **kw)
    params = [p for g in groups for p in g["params"]]
    return model, frozen, objective, opt, params, cfg


def compile_towers(model, mode: str | None):
    "torch.compile each tower in place (the string tokenizer stays eager); state-dict names do not change."
    model.visual.compile(mode=mode)
    tt = model.textual
    tt.forward_tokens = torch.compile(tt.forward_tokens, mode=mode)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda when visible), cpu, cuda, cuda:N (default: %(default)s)")
    p.add_argument("--model", default="meru_vit_b", choices=MERU_MODELS, help="released architecture (default: %(default)s)")
    p.add_argument("--batch", type=int, default=None, help="retain pairs per step (default: 256 on cuda, 2 on cpu)")
    p.add_argument("--forget-batch", type=int, default=None,
                   help="forget pairs per step (default: batch // 2, the ratio of hac.config.UNLEARN_RECIPE)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on cuda, 1 on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on cuda, 1 on cpu)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="autocast dtype of the encoders: auto = bf16 on cuda, fp32 on cpu (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="also time the step with torch.compile'd towers")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune (default: None)")
    p.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) (default: torch's default, foreach)")
    p.add_argument("--matmul-n", type=int, default=None, help="side of the peak-rate matmul (default: 8192 cuda, 1024 cpu)")
    p.add_argument("--cold-tokenizer", action="store_true",
                   help="no tokenizer cache: every step tokenizes its captions on the host, as with real data")
    p.add_argument("--caption-words", type=int, default=12, help="mean words per synthetic caption (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    if args.threads: torch.set_num_threads(args.threads)
    dev = args.device
    if dev == "auto": dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda":
        if not torch.cuda.is_available(): p.error("--device cuda but no GPU is visible: use --device cpu")
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)   # TF32 stays as torch leaves it (off for matmuls): Lorentz distances need fp32
    elif device.type != "cpu":
        p.error(f"--device must be auto, cpu or cuda[:N], got {args.device!r}")
    on_gpu = device.type == "cuda"
    batch = args.batch or (256 if on_gpu else 2)
    n_f = args.forget_batch if args.forget_batch is not None else max(1, batch // 2)
    steps = args.steps or (10 if on_gpu else 1)
    warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    if batch < 2 or n_f < 1 or steps < 1 or warmup < 0:
        p.error("need --batch >= 2 (the contrastive loss needs negatives), --forget-batch >= 1, --steps >= 1, --warmup >= 0")
    precision = args.precision if args.precision != "auto" else ("bf16" if on_gpu else "fp32")
    amp_dtype = torch.bfloat16 if precision == "bf16" else None
    mm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    mm_n = args.matmul_n or (8192 if on_gpu else 1024)

    dev_name = torch.cuda.get_device_name(device) if on_gpu else f"{platform.processor() or platform.machine()} CPU"
    print(f"# HAC step, {args.model}, {dev_name}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads", flush=True)
    peak = matmul_tflops(device, mm_dtype, mm_n)
    print(f"measured {str(mm_dtype).replace('torch.', '')} matmul {mm_n}^3: {peak:.2f} TFLOP/s", flush=True)

    t = Tables(FORGET)
    model, frozen, objective, opt, params, cfg = build(args, device)
    if args.cold_tokenizer: model.textual.tokenizer.cache_size = frozen.textual.tokenizer.cache_size = 0
    n_params = sum(p.numel() for p in model.parameters())
    sb = synthetic_batch(t, batch, n_f, device, seed=args.seed, words=args.caption_words)
    step = Step(model, frozen, objective, opt, params, t, sb, device, amp_dtype, cfg.grad_clip)
    texts = step.texts
    tok_ms = tokenize_ms(texts)
    lens = [len(model.textual.tokenizer.ids(s)) for s in texts]

    # FLOPs of one eager step (after one warm step, so that lazy initializations are not counted)
    step(); sync(device)
    flops, per_op = count_flops(step)
    if on_gpu: torch.cuda.reset_peak_memory_stats(device)
    rows = []
    r = time_steps(step, steps, warmup, device)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else float("nan")
    rows.append(dict(variant="eager" + (" + fused AdamW" if args.fused_adamw else ""), **r, peak_mem_gib=mem))
    if args.compile:
        compile_towers(model, args.compile_mode); compile_towers(frozen, args.compile_mode)
        t0 = time.perf_counter(); step(); sync(device); first = time.perf_counter() - t0
        if on_gpu: torch.cuda.reset_peak_memory_stats(device)
        r = time_steps(step, steps, warmup, device)
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else float("nan")
        rows.append(dict(variant="torch.compile towers" + (" + fused AdamW" if args.fused_adamw else ""),
                         **r, peak_mem_gib=mem, compile_s=first))
    base = rows[0]["mean_s"]
    imgs = batch + n_f
    for row in rows:
        row.update(images_per_s=imgs / row["mean_s"], tflops=flops / row["mean_s"] / 1e12,
                   mfu=flops / row["mean_s"] / 1e12 / peak, time_vs_eager=row["mean_s"] / base)

    print(f"\nstep: {batch} retain + {n_f} forget images (224 px), {len(texts)} captions (tokens per caption: "
          f"mean {sum(lens) / len(lens):.1f}, max {max(lens)}), trainable + frozen MERU, {n_params / 1e6:.1f} M "
          f"parameters each; precision {precision}; {flops / 1e12:.3f} TFLOP per step (FlopCounterMode)")
    print("\n| variant | step ms | images/s | TFLOP/s | MFU | time vs eager | peak GiB | final loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['mean_s'] * 1e3:.1f} | {row['images_per_s']:.1f} | {row['tflops']:.3f} | "
              f"{100 * row['mfu']:.1f} % | {row['time_vs_eager']:.2f}x | {row['peak_mem_gib']:.1f} | {row['loss']:.4f} |")
    top = sorted(per_op.items(), key=lambda kv: -kv[1])
    print("\nFLOPs by op: " + ", ".join(f"{k} {100 * v / flops:.1f} %" for k, v in top))
    attn_ops = [k for k in per_op if "attention" in k]
    print("attention kernels seen: " + (", ".join(attn_ops) or "none (math path: counted as bmm)"))
    for k, v in attention_report(model).items(): print(f"attention, {k} tower: {v}")
    print(f"host tokenization of the step's {len(texts)} captions, cold cache: {tok_ms:.1f} ms, twice per step "
          "(trainable and frozen model) " + ("included in the timed steps (--cold-tokenizer)" if args.cold_tokenizer
          else "hidden by the tokenizer cache in the timed steps (one batch is reused; see --cold-tokenizer)"))
    if args.compile: print(f"first compiled step (compilation): {rows[-1]['compile_s']:.1f} s")

    if args.json:
        out = dict(device=dev_name, torch=torch.__version__, model=args.model, batch=batch, forget_batch=n_f,
                   precision=precision, peak_matmul_tflops=peak, matmul_n=mm_n, flops_per_step=flops,
                   flops_by_op=per_op, tokenize_ms=tok_ms, n_params=n_params, rows=rows,
                   attention=attention_report(model), argv=sys.argv[1:])
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    return rows


if __name__ == "__main__":
    main()
