"""Where the time of `make reproduce` goes (issue "Train at the hardware's pace", item 1).

Two runs of the default profile's sizes on the tiny models, one torch thread (as `hac.experiments.train_many` runs
them, one job per worker process):

- a pretraining run of the tuned MERU recipe (batch 128, probe every steps // 6 steps, all 2,000 test images after);
- an unlearning run of the claims protocol (MERU + HAC, 30 steps of 64 retain + 32 forget pairs, probe of 300
  images every 3 steps, all test images before and after).

Each run is timed whole, with its phases (setup, training steps, probes, final evaluation, writes) read from wrappers
around `hac.train`'s and `hac.evaluators`' functions. The training step is then split by **component replay**: on
the run's own model and its step-0 batch, each component is timed alone, best of several:
batch drawing (`builder.draw`), image tower forward and backward, text side forward and backward (the frozen MiniLM's
cached features + the trainable projection and lift), the frozen copy's forward (AC/HAC), the objective's forward
and backward on detached embeddings, and the optimizer (grad clip, AdamW, schedule, clamps). What the replays do not
cover (Python glue, autograd bookkeeping across the parts) is the step's measured time minus their sum.
Process and notebook start-up are timed in fresh processes.

    python benchmarks/profile_breakdown.py              # prints the tables and writes them into benchmarks/results.md
    python benchmarks/profile_breakdown.py --quick      # fewer steps (smoke)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import phase_timer, timeit  # noqa: E402  (benchmarks/run.py: one timer and one phase wrapper for both scripts)
BEGIN, END = "<!-- profile_breakdown.py writes from here ... -->", "<!-- ... to here (profile_breakdown.py) -->"


def best(fn, repeat=7, warmup=2):
    "Best wall seconds of `fn()` over `repeat` calls after `warmup` (benchmarks/run.py's timer)."
    return timeit(fn, repeat=repeat, warmup=warmup)


def timed_run(cfg):
    "(wall s, {phase: s}, step times) of hac.train.train(cfg), phases from wrappers."
    import hac.evaluators as EV
    import hac.train as T
    writes = "writes (checkpoint, history)"   # the files themselves: no wrapped function calls another
    stamps, orig = [], T._after_step
    T._after_step = lambda step, state: stamps.append(time.perf_counter())
    try:
        with phase_timer([(T, "_setup", "setup (model, data, text features)"),
                          (EV.AnimalMNISTEval, "full", "final and start evaluation (test split)"),
                          (EV.AnimalMNISTEval, "probe", "probes (validation)"),
                          (T, "atomic_save", writes), (T, "write_history", writes), (T, "save_checkpoint", writes)]) as tm:
            t0 = time.perf_counter(); T.train(cfg); wall = time.perf_counter() - t0
    finally:
        T._after_step = orig
    return wall, tm, stamps


def replay(cfg):
    "{component: best seconds} of one training step's parts, on the run's own model and its step-0 batch."
    import hac.train as T
    run, opt, sched, objective, groups, _ = T._setup(cfg, None, None, None, None)
    m, data = run.model, run.data
    m.train()
    b = data.draw(0, 0, 1)
    out = {"batch drawing (host)": best(lambda: data.draw(0, 0, 1))}
    e, e0, nr, nk, nf = T._embed(run, b)
    imgs = [b["img_r"]] + ([b["img_f"]] if cfg.unlearning else [])
    x = torch.cat(imgs)
    texts = list(b["cap_r"]) + list(b["concept_caps"]) + ((list(b["cap_f"]) + list(b["cap_alt"])) if cfg.unlearning else [])
    gi, gt = torch.randn_like(e["image"]), torch.randn_like(e["text"])
    def img_fb():
        (m.encode_image(x) * gi).sum().backward()
    def txt_fb():
        (m.encode_text(texts) * gt).sum().backward()
    out["image tower forward"] = best(lambda: m.encode_image(x))
    out["image tower backward"] = max(0.0, best(img_fb) - out["image tower forward"])
    out["text side forward (cached MiniLM + projection)"] = best(lambda: m.encode_text(texts))
    out["text side backward"] = max(0.0, best(txt_fb) - out["text side forward (cached MiniLM + projection)"])
    if run.frozen is not None and cfg.unlearning:
        with torch.no_grad():
            out["frozen model forward (no grad)"] = best(lambda: run.frozen(x, texts))
    # the objective on detached embeddings: its own forward and backward, no tower
    batch = T._loss_batch(run, b)
    leaves = {k: v.detach().requires_grad_(v.is_floating_point()) if torch.is_tensor(v) and v.ndim >= 2 and k.startswith(("img", "txt", "concept_txt")) else v
              for k, v in batch.items()}
    def obj_f():   # the model's scale and curvature are recomputed per call, as in a step
        return T._objective(run, objective, {**leaves, "scale": m.logit_scale,
                                             "curv": m.curv if m.geometry == "lorentz" else None})["loss"]
    def obj_fb():
        obj_f().backward()
    out["objective forward (loss: distances, cones)"] = best(obj_f)
    out["objective backward"] = max(0.0, best(obj_fb) - out["objective forward (loss: distances, cones)"])
    loss = T._objective(run, objective, T._loss_batch(run, b))["loss"]
    opt.zero_grad(set_to_none=True); loss.backward()
    params = [p for g in groups for p in g["params"]]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    def opt_step():
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or 1e9)
        opt.step(); m.clamp_params_()
    out["optimizer (clip, AdamW, clamps)"] = best(opt_step)
    m.load_state_dict(state)
    return out


def startup():
    "{what: seconds} of a fresh interpreter importing hac's training stack, and of a papermill notebook start."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    def run(args):
        t = time.perf_counter(); subprocess.run(args, check=True, capture_output=True, env=env); return time.perf_counter() - t
    py = sys.executable
    res = {"python start": min(run([py, "-c", "pass"]) for _ in range(3)),
           "python start + import hac.train, hac.experiments": min(run([py, "-c", "import hac.train, hac.experiments"]) for _ in range(3))}
    with tempfile.TemporaryDirectory() as d:
        nb = Path(d) / "one.ipynb"
        nb.write_text(json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                                             "source": ["import hac.train, hac.experiments"]}],
                                  "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                                  "nbformat": 4, "nbformat_minor": 5}))
        pm = str(Path(py).with_name("papermill"))
        res["papermill notebook (kernel start + the same import)"] = min(run([pm, str(nb), str(Path(d) / "out.ipynb"), "--log-level", "ERROR"]) for _ in range(2))
    return res


def table(title, rows, total):
    lines = [f"**{title}**", "", "| part | s | share |", "|---|---:|---:|"]
    for k, v in rows:
        lines.append(f"| {k} | {v:.3f} | {v / total:.0%} |")
    return "\n".join(lines)


def breakdown(cfg, label, quick):
    wall, tm, stamps = timed_run(cfg)
    gaps = sorted(b - a for a, b in zip(stamps[:-1], stamps[1:]))
    # a step's gap includes the probe on logging steps: the median is a plain step
    step = gaps[len(gaps) // 2]
    phases = {k: v for k, v in tm.items()}
    in_phases = sum(phases.values())
    steps_s = max(0.0, wall - in_phases)
    run_rows = list(phases.items()) + [("training steps (forward, backward, optimizer, batches)", steps_s)]
    parts = replay(cfg)
    covered = sum(parts.values())
    step_rows = list(parts.items()) + [("glue (Python, autograd bookkeeping, what the replays miss)", step - covered)]
    return (table(f"{label}: one run, {cfg.steps} steps, {wall:.1f} s wall", run_rows, wall) + "\n\n"
            + table(f"{label}: one training step, median {step * 1e3:.1f} ms (component replay, best of 7)", step_rows, step),
            dict(wall=wall, phases=phases, step=step, parts=parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and test images (smoke)")
    p.add_argument("--out", default=str(HERE / "results.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from hac.checkpoints import save_checkpoint
    from hac.config import pretrain_config, unlearn_config
    from hac.experiments import protocol
    from hac.models import build_model, tiny_config
    steps = 30 if a.quick else 200
    test = 300 if a.quick else 0
    out, raw = [], {}
    with tempfile.TemporaryDirectory() as d:
        cfg = pretrain_config("meru", steps=steps, batch_size=128, log_every=max(1, steps // 6), test_size=test,
                              threads=1, progress=False, out_dir=str(Path(d) / "pre"))
        s, raw["pretrain"] = breakdown(cfg, f"Pretraining (tiny MERU, batch 128, the default profile's {steps} steps)", a.quick)
        out.append(s)
        torch.manual_seed(0)
        mp = Path(d) / "meru.pt"; save_checkpoint(build_model(tiny_config("meru")), mp)
        kw = protocol(steps=6 if a.quick else 30, batch_size=64, forget_batch=32, warmup=5, log_every=3, probe_size=300, test_size=test)
        cfg = unlearn_config("hac", str(mp), ["cat"], seed=0, lr=2e-5, out_dir=str(Path(d) / "unl"), **kw)
        timed_run(cfg)   # warm: data files, first calls; the run folder is then removed for the timed run
        import shutil; shutil.rmtree(cfg.out_dir)
        s, raw["unlearn"] = breakdown(cfg, "Unlearning (MERU + HAC, the protocol's run: 30 steps, 64 + 32 pairs, probe every 3)", a.quick)
        out.append(s)
    st = startup(); raw["startup"] = st
    out.append("**Process and notebook start-up**\n\n| what | s |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.2f} |" for k, v in st.items()))
    load = os.getloadavg()[0]
    head = (f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread, "
            f"load average {load:.1f} at the end{' (--quick)' if a.quick else ''}.")
    text = "\n\n".join([head] + out)
    print(text)
    if a.json: Path(a.json).write_text(json.dumps(raw, indent=1))
    res = Path(a.out)
    old = res.read_text() if res.exists() else ""
    block = f"{BEGIN}\n## Where the time goes: `benchmarks/profile_breakdown.py`\n\n{text}\n{END}"
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S) if BEGIN in old else old.rstrip() + "\n\n" + block + "\n"
    if not a.quick: res.write_text(new)


if __name__ == "__main__":
    main()
