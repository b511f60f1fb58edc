"""Refactor guard: a few short runs of every training path, fingerprinted, to compare two commits bit for bit.

    PYTHONPATH=<checkout A> python scripts/refactor_guard.py --out a.json
    PYTHONPATH=<checkout B> python scripts/refactor_guard.py --out b.json
    python scripts/refactor_guard.py --compare a.json b.json     # exit 1 on any difference

Each run (tiny CLIP and MERU pretraining, then every unlearning method on each) records its metrics.json and
history.json with the timing fields dropped, and a hash of the model its model.pt loads into: a refactor that keeps the default
tables bit-identical keeps every one of these equal. One thread, CPU, no caches from the environment.
"""
import argparse, json, os, sys, tempfile
from pathlib import Path

TIMING = {"time_s", "train_time_s"}

def _clean(o):
    if isinstance(o, dict): return {k: _clean(v) for k, v in o.items() if k not in TIMING}
    if isinstance(o, list): return [_clean(v) for v in o]
    return o

def _weights_hash(sd: dict) -> str:
    "sha256 over every tensor's name, dtype, shape and bytes (written here, so any two commits compute it alike)."
    import hashlib, torch
    h = hashlib.sha256()
    for k, v in sd.items():
        if not torch.is_tensor(v): continue
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        v = v.detach().cpu().contiguous().reshape(-1)
        h.update((v.view(torch.int16) if v.dtype == torch.bfloat16 else v).numpy().tobytes())
    return h.hexdigest()

def record(out: Path):
    for v in ("HAC_TEXT_CACHE", "HAC_EVAL_CACHE"): os.environ.pop(v, None)
    import torch
    from hac.config import pretrain_config, unlearn_config
    from hac.train import train
    from hac.checkpoints import load_checkpoint
    torch.set_num_threads(1)
    small = dict(threads=1, test_size=200, probe_size=60, progress=False)
    res, root = {}, Path(tempfile.mkdtemp())
    for kind in ("clip", "meru"):
        pre = root / f"pre_{kind}"
        train(pretrain_config(kind, steps=12, batch_size=32, warmup=2, log_every=6, out_dir=str(pre), **small))
        runs = {f"pretrain_{kind}": pre}
        for m in ("finetune", "neggrad", "ac", "hac", "cliperase", "delete", "diet", "salun", "slug"):
            if m == "hac" and kind == "clip": continue
            d = root / f"{m}_{kind}"
            train(unlearn_config(m, str(pre / "model.pt"), ["dog"], steps=4, batch_size=16, forget_batch=8, warmup=1,
                                 log_every=2, out_dir=str(d), **small))
            runs[f"{m}_{kind}"] = d
        for name, d in runs.items():
            sd = load_checkpoint(d / "model.pt").state_dict()   # the model the file gives, whatever the file stores
            res[name] = {"metrics": _clean(json.loads((d / "metrics.json").read_text())),
                         "history": _clean(json.loads((d / "history.json").read_text())),
                         "weights": _weights_hash(sd)}
            print(f"{name}: weights {res[name]['weights'][:12]}", flush=True)
    out.write_text(json.dumps(res, indent=1, sort_keys=True))
    import shutil; shutil.rmtree(root, ignore_errors=True)   # 19 runs' checkpoints: not kept

def compare(a: Path, b: Path) -> int:
    A, B = json.loads(a.read_text()), json.loads(b.read_text())
    both = sorted(set(A) & set(B))
    for k in sorted(set(A) ^ set(B)): print(f"only in {a if k in A else b}: {k} (a method one of the commits lacks)")
    bad = [k for k in both if A[k] != B[k]]
    for k in bad:
        parts = [p for p in ("metrics", "history", "weights") if A[k].get(p) != B[k].get(p)]
        print(f"DIFFERS {k}: {', '.join(parts)}")
    print(f"{len(both) - len(bad)} of {len(both)} runs in both files bit-identical")
    return 1 if bad else 0

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path); ap.add_argument("--compare", nargs=2, type=Path)
    a = ap.parse_args()
    if a.compare: sys.exit(compare(*a.compare))
    if not a.out: ap.error("--out or --compare")
    record(a.out)
