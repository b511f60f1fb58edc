#!/usr/bin/env python
"""Quality of the three 2-D maps (hyperbolic t-SNE, CO-SNE, t-SNE on tangent features) on a MERU's real embeddings.

Usage: python benchmarks/maps_quality.py CHECKPOINT [--n 300] [--seeds 0 1 2]
Encodes a class-stratified subset of the Animal-MNIST test split plus the 10 class prototypes, maps them
with each method and prints kNN preservation (k=10) and radius Spearman per method, mean +- std over seeds.
Targets (issue 14): kNN preservation of both hyperbolic maps >= t-SNE (tangent); radius Spearman >= 0.9 (CO-SNE)
and >= 0.7 (hyperbolic t-SNE).
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch


def embeddings(checkpoint, n):
    "(x (N+10, D) Lorentz points: images then class prototypes, labels (N+10,), curv)."
    from hac.data import ANIMAL_MNIST_CLASSES, named_templates
    from hac.experiments import eval_images
    from hac.checkpoints import load_checkpoint
    model = load_checkpoint(checkpoint).eval()
    images, labels = eval_images(n)
    with torch.no_grad():
        fi = model.encode_image(images).double()
        ft = model.class_prototypes(list(ANIMAL_MNIST_CLASSES), named_templates("animal_mnist")).double()
    return torch.cat([fi, ft]), torch.cat([labels.long(), torch.arange(len(ft))]), float(model.curv.detach())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = ap.parse_args()
    torch.set_num_threads(1)
    from hac.hyptsne import cosne, hyperbolic_tsne, map_quality, tangent_features, tsne
    x, y, curv = embeddings(a.checkpoint, a.n)
    methods = {"hyperbolic t-SNE": (lambda s: hyperbolic_tsne(x, curv=curv, seed=s), True),
               "CO-SNE": (lambda s: cosne(x, curv=curv, seed=s), True),
               "t-SNE (tangent)": (lambda s: tsne(tangent_features(x, curv=curv), n_iter=500, seed=s), False)}
    rows = []
    for s in a.seeds:
        for name, (fn, disk) in methods.items():
            t0 = time.perf_counter()
            Y = fn(s)
            q = map_quality(x, Y, curv=curv, k=10, disk=disk, labels=y)
            rim = float((Y.norm(dim=1) > 0.99).double().mean()) if disk else float("nan")
            rows.append(dict(method=name, seed=s, **q, rim=rim, seconds=time.perf_counter() - t0))
    df = pd.DataFrame(rows)
    print(f"{len(x)} points ({a.n} images + prototypes), curv {curv:.3f}, seeds {a.seeds}")
    print(df.groupby("method", sort=False).agg(["mean", "std"]).drop(columns="seed").round(3).to_string())


if __name__ == "__main__":
    main()
