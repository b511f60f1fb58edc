"""Tests for hac.hyptsne (hyperbolic t-SNE, CO-SNE) and hac.viz (figure style and renderers).

The comparison test prints a table (run with `pytest -s`): kNN preservation, kNN label accuracy and
Spearman rank correlation of the distance to the origin, for hyperbolic t-SNE, CO-SNE and plain
t-SNE (openTSNE on the tangent features) on the same synthetic hyperbolic clusters."""
import math
import os

import geoopt
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from hac import hyptsne as H
from hac import viz as V
from hac.lorentz import dist0, pairwise_dist

torch.set_num_threads(1)


# ---------------------------------------------------------------- Poincare-disk geometry
@pytest.mark.parametrize("curv", [0.5, 1.0, 2.0])
def test_poincare_pdist_vs_geoopt(curv):
    g = torch.Generator().manual_seed(0)
    Y = H.poincare_expmap0(torch.randn(30, 2, generator=g, dtype=torch.float64) * 1.2, curv=curv)
    # oracle 1: map to the hyperboloid (hac.lorentz) and take the Lorentz distance, float64
    from hac.lorentz import from_poincare
    x = from_poincare(Y, curv=curv)
    ref_l = pairwise_dist(x, x, curv=curv).fill_diagonal_(0)
    np.testing.assert_allclose(H.poincare_pdist(Y, curv=curv).fill_diagonal_(0).numpy(), ref_l.numpy(), atol=1e-8)
    # oracle 2: geoopt, away from the boundary margin where it projects points inwards; geoopt keeps
    # its curvature as a float32 tensor, so sqrt(c) carries ~1e-7 relative error for c != 1
    ok = math.sqrt(curv) * Y.norm(dim=1) < 0.99
    assert ok.sum() > 20
    Yo = Y[ok]
    ref = geoopt.PoincareBall(c=curv).dist(Yo[:, None], Yo[None])
    np.testing.assert_allclose(H.poincare_pdist(Yo, curv=curv).numpy(), ref.numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(H.poincare_dist0(Yo, curv=curv).numpy(),
                               geoopt.PoincareBall(c=curv).dist0(Yo).numpy(), rtol=1e-5)
    np.testing.assert_allclose(H.poincare_dist0(Y, curv=curv).numpy(), dist0(x, curv=curv).numpy(), rtol=1e-9)


def test_ball_expmap_vs_geoopt_and_geodesic_length():
    g = torch.Generator().manual_seed(1)
    Y = H.poincare_expmap0(torch.randn(200, 2, generator=g, dtype=torch.float64))
    U = 0.1 * torch.randn(200, 2, generator=g, dtype=torch.float64)
    ref = geoopt.PoincareBall(c=1.0).expmap(Y, U)
    inner = ref.norm(dim=1) < 1 - 1e-4
    assert inner.sum() > 150
    np.testing.assert_allclose(H.ball_expmap(Y, U)[inner].numpy(), ref[inner].numpy(), atol=1e-9)
    lam = 2 / (1 - (Y * Y).sum(1))
    np.testing.assert_allclose(H.poincare_pdist(Y, H.ball_expmap(Y, U)).diag().numpy(),
                               (lam * U.norm(dim=1)).numpy(), rtol=1e-8)


def test_pdist_gradients_finite_float32():
    Y = torch.tensor([[0.1, 0.2], [0.1, 0.2], [0.9, 0.0]], requires_grad=True)  # coincident points
    H.poincare_pdist(Y).sum().backward()
    assert torch.isfinite(Y.grad).all()


# ---------------------------------------------------------------- affinities
@pytest.mark.parametrize("perp", [3.0, 10.0, 25.0])
def test_affinities_reach_perplexity(perp):
    g = torch.Generator().manual_seed(2)
    X = torch.randn(100, 4, generator=g, dtype=torch.float64)
    D = torch.cdist(X, X)
    P = H.joint_affinities(D, perplexity=perp)
    assert math.isclose(P.sum().item(), 1.0, abs_tol=1e-12) and torch.allclose(P, P.T)
    assert (P.diag() == 0).all()
    # independent reference: a dense Gaussian row calibrated by bisection to entropy log(perplexity);
    # openTSNE keeps only the 3*perplexity nearest neighbours, so compare the symmetrized P loosely
    D2 = D**2
    cond = torch.zeros_like(D)
    for i in range(len(D)):
        lo, hi = -30.0, 30.0
        for _ in range(80):
            mid = (lo + hi) / 2
            p = torch.softmax(-math.exp(mid) * D2[i].masked_fill(torch.arange(100) == i, math.inf), 0)
            Hh = -(p[p > 0] * p[p > 0].log()).sum().item()
            lo, hi = (mid, hi) if Hh > math.log(perp) else (lo, mid)
        cond[i] = p
    ref = (cond + cond.T) / (2 * len(D))
    # truncation renormalizes each row over its kept neighbours: a few % of the mass moves
    assert (P - ref).abs().sum().item() < 0.1
    assert (P - ref).abs().max().item() < 0.1 * ref.max().item()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="square"):
        H.joint_affinities(torch.ones(3, 4))
    with pytest.raises(ValueError, match="perplexity"):
        H.joint_affinities(torch.ones(10, 10) - torch.eye(10), perplexity=30)
    with pytest.raises(ValueError, match="NaN"):
        H.hyperbolic_tsne(torch.full((10, 3), math.nan), curv=1.0)
    with pytest.raises(ValueError, match="radii"):
        H.embed_poincare(torch.ones(10, 10) - torch.eye(10), perplexity=2, norm_weight=1.0)


# ---------------------------------------------------------------- map quality on synthetic clusters
def _quality_table(seed, n_iter=300):
    x, y, r = H.synthetic_hyperbolic_clusters(5, 40, 8, seed=seed)
    maps = {
        "hyperbolic t-SNE": (H.hyperbolic_tsne(x, curv=1.0, perplexity=15, n_iter=n_iter, early_iter=100, seed=seed), True),
        "CO-SNE": (H.cosne(x, curv=1.0, perplexity=15, n_iter=n_iter, early_iter=100, seed=seed), True),
        "t-SNE (tangent)": (H.tsne(H.tangent_features(x, curv=1.0), perplexity=15, n_iter=n_iter, seed=seed), False),
    }
    rows = {k: H.map_quality(x, Y, curv=1.0, disk=disk, labels=y, k=10) for k, (Y, disk) in maps.items()}
    for k, (Y, disk) in maps.items():
        assert torch.isfinite(Y).all()
        if disk:
            assert (Y.norm(dim=1) < 1).all()
            rows[k]["rim"] = (Y.norm(dim=1) > 0.99).double().mean().item()
    return pd.DataFrame(rows).T


@pytest.fixture(scope="module")
def quality():
    tabs = [_quality_table(s) for s in range(3)]
    mean = sum(tabs) / len(tabs)
    print("\nmap quality on synthetic hyperbolic clusters (5 x 40 points, dim 8, mean of 3 seeds):\n", mean.round(3))
    return tabs, mean


def test_maps_do_not_collapse_to_the_rim(quality):
    tabs, _ = quality
    for t in tabs:  # the first version put ~all points at |y| > 0.99
        assert t.loc["hyperbolic t-SNE", "rim"] < 0.05 and t.loc["CO-SNE", "rim"] < 0.05


def test_clusters_stay_separated(quality):
    tabs, mean = quality
    for t in tabs:
        assert t.loc["hyperbolic t-SNE", "knn_label_accuracy"] >= 0.85
        assert t.loc["CO-SNE", "knn_label_accuracy"] >= 0.5  # chance 0.2; clusters meet near the origin
    assert mean.loc["hyperbolic t-SNE", "knn_preservation"] > 0.4  # random map: k / N = 0.05
    assert mean.loc["hyperbolic t-SNE", "knn_preservation"] >= mean.loc["t-SNE (tangent)", "knn_preservation"] - 0.05


def test_cosne_keeps_distance_to_origin(quality):
    tabs, mean = quality
    for t in tabs:
        assert t.loc["CO-SNE", "radius_spearman"] > 0.9
        assert t.loc["CO-SNE", "radius_spearman"] > t.loc["hyperbolic t-SNE", "radius_spearman"]


def test_map_quality_known_answers():
    from hac.lorentz import from_poincare
    g = torch.Generator().manual_seed(0)
    Y = H.poincare_expmap0(torch.randn(30, 2, generator=g, dtype=torch.float64))
    q = H.map_quality(from_poincare(Y, curv=1.0), Y, curv=1.0, k=5, labels=torch.arange(30) % 3)
    assert q["knn_preservation"] == 1.0 and math.isclose(q["radius_spearman"], 1.0)
    # curvature: the same ball points read with curvature 2 have the same neighbours and radial order
    q2 = H.map_quality(from_poincare(Y / math.sqrt(2), curv=2.0), Y, curv=2.0, k=5)
    assert q2["knn_preservation"] == 1.0 and math.isclose(q2["radius_spearman"], 1.0)
    # a reversed radial order gives rho = -1; a map outside the disk is rejected when disk=True
    assert math.isclose(H.radius_rank_correlation(torch.arange(10.0), -torch.arange(10.0)), -1.0)
    with pytest.raises(ValueError, match="disk"):
        H.map_quality(from_poincare(Y, curv=1.0), 3 * Y / Y.norm(dim=1, keepdim=True), curv=1.0)
    with pytest.raises(ValueError, match="map coordinates"):
        H.map_quality(from_poincare(Y, curv=1.0), Y[:5], curv=1.0)


# ---------------------------------------------------------------- style and figures
def test_class_colours_fixed_and_distinct():
    assert list(V.CLASS_COLORS) == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert len(set(V.CLASS_COLORS.values())) == 10
    # other names: a name-hashed tab20b/c colour, recomputed here independently (same in every process)
    import hashlib
    pal = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab20b").colors + plt.get_cmap("tab20c").colors]
    for name in ["pizza", "bus", "apple"]:
        assert V.class_color(name) == pal[int(hashlib.md5(name.encode()).hexdigest(), 16) % 40]
    assert V.class_color("pizza") != V.class_color("bus")
    assert V.class_color("dog") == "#9467bd" and V.class_color("cat") == "#2ca02c"
    assert V.MARKERS == {"image": "o", "text": "^"}


def test_save_figure_atomic(tmp_path):
    fig, ax = V.paper_figure()
    ax.plot([0, 1])
    paths = V.save_figure(fig, tmp_path / "sub" / "fig_x")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["fig_x.pdf", "fig_x.png"]
    assert paths[1].read_bytes()[:4] == b"%PDF" and paths[0].read_bytes()[:4] == b"\x89PNG"
    w, h = fig.get_size_inches()
    assert math.isclose(w, V.COLUMN_WIDTH)
    with pytest.raises(ValueError, match="without suffix"):
        V.save_figure(fig, tmp_path / "fig.png")
    plt.close(fig)


@pytest.mark.parametrize("disk", [False, True])
def test_embedding_figure_renders(disk, tmp_path):
    "plot_embedding: images as circles, texts as triangles on top, one legend entry per class, the unit circle on a disk."
    g = torch.Generator().manual_seed(0)
    Y = 0.9 * torch.tanh(torch.randn(33, 2, generator=g))          # a map inside the unit disk
    labels, kinds = [k for k in range(3) for _ in range(10)] + [0, 1, 2], ["image"] * 30 + ["text"] * 3
    fig, ax = V.paper_figure()
    V.plot_embedding(ax, Y, labels, kinds, class_names=["dog", "cat", "pizza"], disk=disk, title="map", legend=True)
    assert len(ax.collections) == 2  # images, then texts
    from matplotlib.markers import MarkerStyle
    for coll, m, n in zip(ax.collections, ["o", "^"], [30, 3]):
        ref = MarkerStyle(m).get_path().transformed(MarkerStyle(m).get_transform())
        np.testing.assert_allclose(coll.get_paths()[0].vertices, ref.vertices, atol=1e-12)  # circle / triangle shape
        assert len(coll.get_offsets()) == n
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dog", "cat", "pizza", "images", "texts"]
    assert any(isinstance(p, matplotlib.patches.Circle) for p in ax.patches) == disk  # the unit circle
    V.save_figure(fig, tmp_path / "map")
    plt.close(fig)


def test_plot_embedding_errors():
    fig, ax = V.paper_figure()
    with pytest.raises(ValueError, match="image"):
        V.plot_embedding(ax, torch.zeros(2, 2), [0, 1], ["image", "caption"])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        V.plot_embedding(ax, torch.zeros(2, 3), [0, 1])
    plt.close(fig)


def test_confusion_render(tmp_path):
    cm = torch.diag(torch.full((10,), 50)) + 1
    fig = V.plot_confusion_grid({"before": cm, "after": cm}, V.CLASS_NAMES, forget=[4])
    assert len([a for a in fig.axes if a.get_title()]) == 2
    V.save_figure(fig, tmp_path / "cm"); plt.close(fig)
    fig, ax = V.paper_figure()
    with pytest.raises(ValueError, match="expected"):
        V.plot_confusion(ax, torch.ones(3, 3), V.CLASS_NAMES)
    plt.close(fig)
    assert sorted(os.listdir(tmp_path)) == ["cm.pdf", "cm.png"]


# ---------------------------------------------------------------- figure builders: what each must encode
def _red_rows(ax):
    return [l.get_text() for l in ax.get_yticklabels() if l.get_color() == "#d62728"]


def test_confusion_grid_marks_each_panels_own_forget_set():
    g = torch.Generator().manual_seed(0)
    cms = {t: torch.randint(0, 20, (10, 10), generator=g) + torch.diag(torch.full((10,), 80)) for t in ["1", "4", "none"]}
    fig = V.plot_confusion_grid(cms, V.CLASS_NAMES, forget={"1": ["dog"], "4": ["bird", "cat", "cow", "horse"]})
    axes = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in axes] == ["1", "4", "none"]
    assert [sorted(_red_rows(a)) for a in axes] == [["dog"], ["bird", "cat", "cow", "horse"], []]
    # forget rows first, set apart by a separator line after them
    assert [l.get_text() for l in axes[1].get_yticklabels()][:4] == ["bird", "cat", "cow", "horse"]
    assert [l.get_ydata()[0] for l in axes[1].get_lines()] == [4]
    assert axes[2].get_lines() == []
    # rows normalized (each shown row sums to 100 %) and one colour scale shared by all panels + one colour bar
    for a in axes:
        arr = np.asarray(a.collections[0].get_array()).reshape(10, 10)
        np.testing.assert_allclose(arr.sum(1), 100.0, atol=1e-9)
    assert {a.collections[0].get_clim() for a in axes} == {(0.0, 100.0)}
    assert len(fig.axes) == 4  # three panels + the shared colour bar
    # the row of "dog" moved to the top in panel "1" holds dog's counts
    row = cms["1"][4].double()
    np.testing.assert_allclose(np.asarray(axes[0].collections[0].get_array()).reshape(10, 10)[0],
                               (100 * row / row.sum())[[4, 0, 1, 2, 3, 5, 6, 7, 8, 9]].numpy(), atol=1e-9)
    plt.close(fig)
    with pytest.raises(ValueError, match="panels"):
        V.plot_confusion_grid(cms, V.CLASS_NAMES, forget={"typo": [1]})
    with pytest.raises(ValueError, match="forget class"):
        V.plot_confusion_grid(cms, V.CLASS_NAMES, forget=["pizza"])


def _tree():
    names = ["animal", "mammal", "bird", "canine", "feline", "dog", "cat", "cow"]
    parents = [-1, 0, 0, 1, 1, 3, 4, 1]
    r = torch.tensor([0.2, 0.5, 0.9, 0.8, 0.7, 1.2, 0.6, 1.0])  # cat (0.6) inside feline (0.7): violated
    ang = torch.linspace(0, 5, 8)
    rad = torch.tanh(r / 2)
    return names, parents, r, torch.stack([rad * ang.cos(), rad * ang.sin()], 1)


def test_hierarchy_figure_draws_every_edge_and_images():
    from matplotlib.collections import LineCollection
    names, parents, r, Y = _tree()
    Yi = 0.9 * torch.nn.functional.normalize(torch.randn(40, 2), dim=1)
    fig = V.hierarchy_figure([dict(Y_texts=Y, Y_images=Yi, image_labels=["dog"] * 20 + ["cat"] * 20, title="before"),
                              dict(Y_texts=Y * 0.8, title="after")], names, parents)
    assert len(fig.axes) == 2
    for ax, scale in zip(fig.axes, [1.0, 0.8]):
        lcs = [c for c in ax.collections if isinstance(c, LineCollection)]
        segs = [s for c in lcs for s in c.get_segments()]
        assert len(segs) == 7  # one per child-parent edge
        want = {(c, p) for c, p in enumerate(parents) if p >= 0}
        got = set()
        for s in segs:  # each segment joins a parent's text to its child's text
            i = int(((scale * Y - torch.tensor(s[0])).norm(dim=1)).argmin()); j = int(((scale * Y - torch.tensor(s[1])).norm(dim=1)).argmin())
            got.add((j, i))
        assert got == want
        assert sorted(t.get_text() for t in ax.texts) == sorted(names)
    faint = [c for c in fig.axes[0].collections if not isinstance(c, LineCollection) and len(c.get_offsets()) == 40]
    assert len(faint) == 1 and faint[0].get_alpha() < 0.5
    plt.close(fig)
    with pytest.raises(ValueError, match="parent"):
        V.hierarchy_figure([dict(Y_texts=Y)], names, parents[:-1])


def test_edge_radii_figure_marks_violated_edges():
    names, parents, r, _ = _tree()
    fig = V.edge_radii_figure([dict(radii=r, title="before"), dict(radii=torch.linspace(0.1, 1.0, 8), title="after")],
                              names, parents)
    a0, a1 = fig.axes
    assert len(a0.get_lines()) == 7 and len(a1.get_lines()) == 7
    bad = [l for l in a0.get_lines() if l.get_gid() == "violated"]
    assert len(bad) == 1 and tuple(bad[0].get_ydata()) == pytest.approx((0.7, 0.6))
    assert bad[0].get_color() == "#d62728"
    assert "6 of 7 edges ordered" in a0.get_title() and "7 of 7 edges ordered" in a1.get_title()
    assert [l.get_gid() for l in a1.get_lines()].count("violated") == 0
    plt.close(fig)


def test_frontier_has_error_bars_and_retrain_point(tmp_path):
    from matplotlib.container import ErrorbarContainer
    df = pd.DataFrame(dict(method=["CLIP + AC"] * 2 + ["MERU + HAC"] * 2, lr=[1e-4, 1e-4, 2e-4, 1e-4], steps=[50, 100, 50, 50],
                           forget_acc_mean=[0.3, 0.1, 0.0, 0.2], forget_acc_std=[0.02, 0.03, 0.0, 0.01],
                           retain_acc_mean=[0.6, 0.58, 0.45, 0.5], retain_acc_std=[0.01, 0.02, 0.03, 0.01]))
    rt = pd.DataFrame(dict(method=["retrain"], forget_acc_mean=[0.01], forget_acc_std=[0.005],
                           retain_acc_mean=[0.59], retain_acc_std=[0.01]))
    fig = V.plot_frontier(df, rt)
    ax = fig.axes[0]
    ebs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert [e.get_label() for e in ebs] == ["CLIP + AC", "MERU + HAC", "retrain"]
    assert all(e.has_xerr and e.has_yerr for e in ebs)
    # MERU's line is ordered by (lr, steps): (1e-4, 50) first, then (2e-4, 50); values in %
    np.testing.assert_allclose(ebs[1].lines[0].get_xydata(), [[20.0, 50.0], [0.0, 45.0]])
    np.testing.assert_allclose(ebs[2].lines[0].get_xydata(), [[1.0, 59.0]])
    # the error bar of the retrain point spans mean +- std in x
    xs = np.concatenate([seg[:, 0] for seg in ebs[2].lines[2][0].get_segments()])
    np.testing.assert_allclose([xs.min(), xs.max()], [0.5, 1.5])
    assert math.isclose(fig.get_size_inches()[0], V.COLUMN_WIDTH)
    V.save_figure(fig, tmp_path / "frontier"); plt.close(fig)
    with pytest.raises(ValueError, match="retain_acc_std"):
        V.plot_frontier(df.drop(columns="retain_acc_std"))


def test_save_figure_is_byte_identical_across_calls(tmp_path):
    "paper_figures/ diffs stay clean: the same figure saved twice gives the same PNG and PDF bytes (no creation date)."
    import matplotlib.pyplot as plt
    from hac.viz import save_figure
    digests = []
    for i in range(2):
        fig, ax = plt.subplots(); ax.plot([1, 2, 3]); ax.set_title("same")
        paths = save_figure(fig, tmp_path / f"fig{i}"); plt.close(fig)
        digests.append([p.read_bytes() for p in paths])
    assert digests[0] == digests[1]
    assert b"CreationDate" not in digests[0][1]
