"""Hyperbolic t-SNE / CO-SNE under the current ATEN_CPU_CAPABILITY: the 06a notebook's quality table (5 optimizer seeds) and one
sha256 over 24 synthetic maps, to compare kernel settings and machines (`for c in avx512 avx2 default; do ATEN_CPU_CAPABILITY=$c python benchmarks/maps_kernels.py; done`)."""
import hashlib, os
import pandas as pd, torch
torch.set_num_threads(1)
import hac.hyptsne as H
cap = os.environ.get("ATEN_CPU_CAPABILITY", "native")
xs, ys, _ = H.synthetic_hyperbolic_clusters(4, 30, 6)
rows = []
for s in range(5):
    for name, Y, disk in [("hyperbolic t-SNE", H.hyperbolic_tsne(xs, curv=1.0, perplexity=10, n_iter=300, early_iter=100, seed=s), True),
                          ("CO-SNE", H.cosne(xs, curv=1.0, perplexity=10, n_iter=300, early_iter=100, seed=s), True),
                          ("t-SNE (tangent)", H.tsne(H.tangent_features(xs, curv=1.0), perplexity=10, n_iter=300, seed=s), False)]:
        rows.append(dict(method=name, seed=s, **H.map_quality(xs, Y, curv=1.0, k=10, disk=disk, labels=ys)))
q = pd.DataFrame(rows).drop(columns="seed").groupby("method", sort=False).mean()
h = hashlib.sha256()
for seed in range(12):
    x, _, _ = H.synthetic_hyperbolic_clusters(4 + seed % 3, 30, 6, seed=seed)
    for f in (H.hyperbolic_tsne, H.cosne):
        h.update(f(x, curv=1.0, perplexity=10, n_iter=300, early_iter=100).numpy().tobytes())
print(f"== {cap} (torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()})")
print(q.round(4).to_string())
print(f"sha256 of the 24 synthetic maps: {h.hexdigest()[:16]}")
q.assign(capability=cap).to_csv(os.path.join(os.environ.get("OUT", "/tmp"), f"maps_{cap}.csv"))
