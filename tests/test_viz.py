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
    # recompute the conditional of row 0 with the same bisection: entropy = log(perplexity)
    D2 = D**2 / (D**2)[D > 0].median()
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        p = torch.softmax(torch.cat([torch.tensor([-math.inf], dtype=torch.float64), -math.exp(mid) * D2[0, 1:]]), 0)
        Hh = -(p[1:] * p[1:].log()).sum().item()
        lo, hi = (mid, hi) if Hh > math.log(perp) else (lo, mid)
    assert math.isclose(Hh, math.log(perp), abs_tol=1e-6)


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
def _quality_table(seed, n_iter=250):
    x, y, r = H.synthetic_hyperbolic_clusters(5, 40, 8, seed=seed)
    D = pairwise_dist(x, x, curv=1.0).fill_diagonal_(0)
    maps = {
        "hyperbolic t-SNE": (H.hyperbolic_tsne(x, curv=1.0, perplexity=15, n_iter=n_iter, early_iter=75, seed=seed), True),
        "CO-SNE": (H.cosne(x, curv=1.0, perplexity=15, n_iter=n_iter, early_iter=75, seed=seed), True),
        "t-SNE (tangent)": (H.tsne(H.tangent_features(x, curv=1.0), perplexity=15, n_iter=n_iter, seed=seed), False),
    }
    rows = {k: H.map_quality(D, r, Y, y, hyperbolic=hyp, k=10) for k, (Y, hyp) in maps.items()}
    for k, (Y, hyp) in maps.items():
        assert torch.isfinite(Y).all()
        if hyp:
            assert (Y.norm(dim=1) < 1).all()
    return pd.DataFrame(rows).T


@pytest.fixture(scope="module")
def quality():
    tabs = [_quality_table(s) for s in range(3)]
    mean = sum(tabs) / len(tabs)
    print("\nmap quality on synthetic hyperbolic clusters (5 x 40 points, dim 8, mean of 3 seeds):\n", mean.round(3))
    return tabs, mean


def test_clusters_stay_separated(quality):
    tabs, mean = quality
    for t in tabs:
        assert t.loc["hyperbolic t-SNE", "knn_label_accuracy"] >= 0.9
        assert t.loc["CO-SNE", "knn_label_accuracy"] >= 0.9
    # far better than a random map (k / N = 10 / 200 = 0.05)
    assert mean.loc["hyperbolic t-SNE", "knn_preservation"] > 0.4
    assert mean.loc["CO-SNE", "knn_preservation"] > 0.4
    # hyperbolic t-SNE keeps more true neighbours than t-SNE on the tangent features
    assert mean.loc["hyperbolic t-SNE", "knn_preservation"] > mean.loc["t-SNE (tangent)", "knn_preservation"]


def test_cosne_keeps_distance_to_origin(quality):
    tabs, mean = quality
    for t in tabs:
        assert t.loc["CO-SNE", "radius_spearman"] > 0.9
        assert t.loc["CO-SNE", "radius_spearman"] > t.loc["t-SNE (tangent)", "radius_spearman"] + 0.2
        assert t.loc["CO-SNE", "radius_spearman"] > t.loc["hyperbolic t-SNE", "radius_spearman"]


def test_map_quality_known_answers():
    x, y, r = H.synthetic_hyperbolic_clusters(3, 10, 4, seed=0)
    Y = H.poincare_expmap0(torch.randn(30, 2, dtype=torch.float64))
    q = H.map_quality(H.poincare_pdist(Y), H.poincare_dist0(Y), Y, y, hyperbolic=True, k=5)
    assert q["knn_preservation"] == 1.0 and math.isclose(q["radius_spearman"], 1.0)
    # a reversed radial order gives rho = -1
    assert math.isclose(H.radius_rank_correlation(torch.arange(10.0), -torch.arange(10.0)), -1.0)
    np.testing.assert_allclose(dist0(x, curv=1.0).numpy(), r.numpy(), atol=1e-9)


# ---------------------------------------------------------------- style and figures
def test_class_colours_fixed_and_distinct():
    assert list(V.CLASS_COLORS) == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    assert len(set(V.CLASS_COLORS.values())) == 10
    assert V.class_color("pizza") == V.class_color("pizza") and V.class_color("pizza") != V.class_color("bus")
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


def _small_embedding():
    x, y, _ = H.synthetic_hyperbolic_clusters(3, 10, 4, seed=0)
    xt = x[[0, 10, 20]] * 0.2
    return x, y, xt


@pytest.mark.parametrize("method,disk", [("tsne", False), ("htsne", True), ("cosne", True)])
def test_embedding_figures_render(method, disk, tmp_path):
    x, y, xt = _small_embedding()
    kw = {} if method == "tsne" else dict(early_iter=20)
    Yi, Yt = V.joint_embedding(x, xt, method=method, curv=1.0, n_iter=60, **kw)
    assert Yi.shape == (30, 2) and Yt.shape == (3, 2)
    fig = V.plot_embedding_panels([dict(Y_images=Yi, Y_texts=Yt, title=method, disk=disk)], y, torch.arange(3),
                                  class_names=["dog", "cat", "pizza"])
    ax = fig.axes[0]
    markers = [c.get_paths()[0] for c in ax.collections]
    assert len(ax.collections) == 2  # images (circles) and texts (triangles)
    assert len(markers) == 2
    V.save_figure(fig, tmp_path / method)
    plt.close(fig)


def test_clip_joint_embedding_and_errors():
    g = torch.Generator().manual_seed(0)
    Yi, Yt = V.joint_embedding(torch.nn.functional.normalize(torch.randn(30, 5, generator=g), dim=1),
                               torch.nn.functional.normalize(torch.randn(3, 5, generator=g), dim=1), n_iter=50)
    assert Yi.shape == (30, 2)
    with pytest.raises(ValueError, match="Lorentz"):
        V.joint_embedding(torch.randn(30, 5), torch.randn(3, 5), method="cosne")
    fig, ax = V.paper_figure()
    with pytest.raises(ValueError, match="image"):
        V.plot_embedding(ax, torch.zeros(2, 2), [0, 1], ["image", "caption"])
    plt.close(fig)


def test_confusion_radius_tradeoff_render(tmp_path):
    cm = torch.diag(torch.full((10,), 50)) + 1
    fig = V.plot_confusion_grid({"before": cm, "after": cm}, V.CLASS_NAMES, forget=[4])
    assert len([a for a in fig.axes if a.get_title()]) == 2
    V.save_figure(fig, tmp_path / "cm"); plt.close(fig)
    fig, ax = V.paper_figure()
    with pytest.raises(ValueError, match="expected"):
        V.plot_confusion(ax, torch.ones(3, 3), V.CLASS_NAMES)
    V.plot_radius_hist(ax, {"image": torch.rand(50) + 2, "text": torch.rand(10)},
                       {"image": torch.rand(50) + 1.5, "text": torch.rand(10)})
    with pytest.raises(ValueError, match="finite"):
        V.plot_radius_hist(ax, {"image": torch.tensor([math.nan])})
    plt.close(fig)
    fig, ax = V.paper_figure()
    df = pd.DataFrame(dict(method=["CLIP + AC"] * 2 + ["MERU + HAC"] * 2, param=[1, 2, 1, 2],
                           forget_top1=[0.3, 0.1, 0.2, 0.0], retain_top1=[0.6, 0.58, 0.5, 0.48]))
    V.plot_tradeoff(ax, df)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CLIP + AC", "MERU + HAC"]
    V.save_figure(fig, tmp_path / "tradeoff"); plt.close(fig)
    assert len(os.listdir(tmp_path)) == 4
