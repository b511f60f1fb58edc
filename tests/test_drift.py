"""Sweeps for hac.drift: invariances of the per-anchor drifts on random point clouds (seeds x widths x curvatures,
float64 and float32), brute-force oracles, the groups on every forget class of the taxonomy, and drift tables of
small MERU / CLIP models with known answers (identity, rotation, alpha scaling, CLIP's scale blindness)."""
import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from hac import drift as dr
from hac.data import load_taxonomy
from hac.evaluate import evaluate_zero_shot
from hac.lorentz import dist0, pairwise_dist
from hac.models import build_model, tiny_config


def _drift_table(*args):
    "The per-group drift table of two models (what the experiment notebooks compute)."
    return dr.drift_summary(dr.drift_anchors(*args))

torch.set_num_threads(1)
TAX = load_taxonomy()
CLASSES = list(TAX.classes)
DOG = CLASSES.index("dog")
TPL = ["a photo of a {}.", "a drawing of a {}."]


def _cloud(seed, n, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype), g


def _rotation(d, g):
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]


# ---------------------------------------------------------------- plain tensors: invariances and oracles
@pytest.mark.parametrize("seed,d,curv", list(itertools.product(range(3), (2, 5, 16), (0.3, 1.0, 4.0))))
def test_rotation_gives_zero_drift(seed, d, curv):
    X, g = _cloud(seed, 12, d)
    T = torch.randn(6, d, generator=g, dtype=torch.float64)
    Q = _rotation(d, g)
    y = torch.randint(0, 6, (12,), generator=g)
    mask = torch.rand(12, 6, generator=g) < 0.5
    mask[:, 0] = True
    for c in (curv, None):
        kw = dict(curv_before=c, curv_after=c)
        for v in (dr.angular_drift(X, X @ Q), dr.cross_modal_drift(X, T, X @ Q, T @ Q),
                  dr.paired_drift(X, T[y], X @ Q, T[y] @ Q, **kw), dr.toward_ancestors(X, T, X @ Q, T @ Q, mask, **kw)):
            assert v.dtype == torch.float64 and v.shape[0] in (12,)
            assert v.abs().max() < 1e-9
        if c is not None:
            assert dr.radial_drift(X, X @ Q, **kw).abs().max() < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_float32_inputs_match_float64(seed):
    X, g = _cloud(seed, 10, 8)
    X2 = X + 0.3 * torch.randn(10, 8, generator=g, dtype=torch.float64)
    T, T2 = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    for f in (lambda a, b, s, t: dr.angular_drift(a, b), lambda a, b, s, t: dr.cross_modal_drift(a, s, b, t),
              lambda a, b, s, t: dr.radial_drift(a, b, curv_before=0.8, curv_after=1.2),
              lambda a, b, s, t: dr.paired_drift(a, s[:1].expand(10, -1), b, t[:1].expand(10, -1), curv_before=1.0, curv_after=1.0)):
        ref, low = f(X, X2, T, T2), f(X.float(), X2.float(), T.float(), T2.float())
        assert low.dtype == torch.float64
        torch.testing.assert_close(low, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed,curv", list(itertools.product(range(3), (0.5, 2.0))))
def test_scaling_one_anchor(seed, curv):
    X, g = _cloud(seed, 9, 6)
    T = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (9,), generator=g)
    Xs = X.clone(); Xs[3] *= 2.5
    kw = dict(curv_before=curv, curv_after=curv)
    rd = dr.radial_drift(X, Xs, **kw)
    assert rd[3] > 0 and torch.cat([rd[:3], rd[4:]]).abs().max() < 1e-12
    torch.testing.assert_close(rd[3], (dist0(Xs[3:4], curv=curv) - dist0(X[3:4], curv=curv)).abs()[0], atol=1e-12, rtol=0)
    assert dr.angular_drift(X, Xs).abs().max() < 1e-12
    assert dr.cross_modal_drift(X, T, Xs, T).abs().max() < 1e-12
    pdm = dr.paired_drift(X, T[y], Xs, T[y], **kw)
    assert pdm[3] > 0 and torch.cat([pdm[:3], pdm[4:]]).abs().max() < 1e-12
    assert dr.paired_drift(X, T[y], Xs, T[y]).abs().max() < 1e-12      # CLIP: the cosine ignores the scale
    assert dr.radial_drift(X, Xs).isnan().all()                          # CLIP: no radius


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_oracles(seed):
    X, g = _cloud(seed, 7, 4)
    X2 = torch.randn(7, 4, generator=g, dtype=torch.float64)
    T, T2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    ang = dr.angular_drift(X, X2)
    for i in range(7):
        ref = np.mean([abs(cos(X2[i], X2[j]) - cos(X[i], X[j])) for j in range(7) if j != i])
        assert math.isclose(ang[i].item(), ref, abs_tol=1e-12)
    assert ((ang >= 0) & (ang <= 2)).all()
    torch.testing.assert_close(dr.angular_drift(X2, X), ang, atol=1e-12, rtol=0)   # symmetric
    cm = dr.cross_modal_drift(X, T, X2, T2)
    for i in range(7):
        ref = np.mean([abs(cos(X2[i], T2[j]) - cos(X[i], T[j])) for j in range(5)])
        assert math.isclose(cm[i].item(), ref, abs_tol=1e-12)
    mask = torch.rand(7, 5, generator=g) < 0.6
    mask[:, 2] = True
    for curv in (None, 0.7):
        ta = dr.toward_ancestors(X, T, X2, T2, mask, curv_before=curv, curv_after=curv)
        D0 = 1 - dr.cosine_gram(X, T) if curv is None else pairwise_dist(X, T, curv=curv)
        D1 = 1 - dr.cosine_gram(X2, T2) if curv is None else pairwise_dist(X2, T2, curv=curv)
        for i in range(7):
            js = mask[i].nonzero().flatten()
            assert math.isclose(ta[i].item(), (D1[i, js] - D0[i, js]).mean().item(), abs_tol=1e-10)
    torch.testing.assert_close(dr.pair_distance(X, X2, curv=1.3), pairwise_dist(X, X2, curv=1.3).diag(), atol=1e-9, rtol=0)
    torch.testing.assert_close(dr.pair_distance(X, X2), 1 - dr.cosine_gram(X, X2).diag(), atol=1e-12, rtol=0)


def test_plain_errors():
    X = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same anchors"):
        dr.angular_drift(X, X[:3])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        dr.angular_drift(X[0], X[0])
    with pytest.raises(ValueError, match="NaN/inf"):
        dr.radial_drift(X, torch.full((4, 3), math.nan), curv_before=1.0, curv_after=1.0)
    with pytest.raises(ValueError, match="share a geometry"):
        dr.paired_drift(X, X, X, X, curv_after=1.0)
    with pytest.raises(ValueError, match="mask must be"):
        dr.toward_ancestors(X, X, X, X, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="different widths"):
        dr.cosine_gram(X, torch.randn(2, 5))


# ---------------------------------------------------------------- taxonomy: groups and tree error
def test_tree_error_matches_taxonomy():
    C = len(CLASSES)
    yt, yp = torch.arange(C).repeat_interleave(C), torch.arange(C).repeat(C)
    tie, lca = dr.tree_error(yt, yp, taxonomy=TAX, classes=CLASSES)
    assert tie.dtype == lca.dtype == torch.int64
    for t, p, e, l in zip(yt.tolist(), yp.tolist(), tie.tolist(), lca.tolist()):
        a, b = CLASSES[t], CLASSES[p]
        assert l == TAX.level(TAX.lca(a, b)) <= min(TAX.level(a), TAX.level(b))
        assert e == TAX.level(a) + TAX.level(b) - 2 * l == TAX.tree_distance(a, b)
        assert (e == 0) == (t == p)
    with pytest.raises(ValueError, match="outside"):
        dr.tree_error([0], [C], taxonomy=TAX, classes=CLASSES)


@pytest.mark.parametrize("forget", [[c] for c in CLASSES] + [["dog", "cat"], ["horse", "cow", "bird"], ["carnivore"]])
def test_groups_partition(forget):
    fc = dr.forget_class_ids(forget, TAX, CLASSES)
    groups = dr.class_groups(TAX, CLASSES, forget)
    assert [i for i, g in enumerate(groups) if g == "forget"] == fc
    sib = {CLASSES[i] for i, g in enumerate(groups) if g == "sibling"}
    assert sib and not sib & {CLASSES[i] for i in fc}
    # every sibling shares with some forget class the nearest ancestor that keeps a retained class
    for s in sib:
        assert any(next(a for a in TAX.ancestors(CLASSES[f]) if any(CLASSES.index(l) not in fc for l in TAX.leaves_under(a)))
                   in TAX.ancestors(s) for f in fc)
    cg = dr.concept_groups(TAX, CLASSES, forget)
    gone = {c for c, g in cg.items() if g == "forget"}
    anc = {a for f in fc for a in TAX.ancestors(CLASSES[f])} - gone
    assert {c for c, g in cg.items() if g == "ancestor"} == anc
    mask = dr.ancestor_mask(TAX, CLASSES, cg)
    concepts = dr.anchor_concepts(TAX, CLASSES)
    for i, c in enumerate(CLASSES):
        assert {concepts[j] for j in mask[i].nonzero().flatten()} == set(TAX.ancestors(c)) - gone


# ---------------------------------------------------------------- models
def _micro(kind):
    cfg = dict(text_encoder="transformer", text_width=64, text_layers=2, text_heads=2, embed_dim=32)
    torch.manual_seed(0)
    return build_model(tiny_config(kind, **cfg)).eval()


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(len(CLASSES)).repeat_interleave(6)
    images = torch.rand(len(labels), 1, 28, 28, generator=g)
    return dict(meru=_micro("meru"), clip=_micro("clip"), images=images, labels=labels)


def _table(before, after, w, forget=(DOG,)):
    return _drift_table(before, after, w["images"], w["labels"], TAX, CLASSES, TPL, list(forget))


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_identity_update_is_zero(world, kind):
    m = world[kind]
    t = _table(m, copy.deepcopy(m), world)
    assert t.group.tolist() == list(dr.GROUPS) and list(t.columns[:9]) == ["group", *dr.TABLE_COLUMNS]
    assert t.n.tolist() == [6, 12, 42] and t.n.dtype == np.int64
    cols = [c for c in t.columns if c.endswith("drift") or c == "toward_ancestor"]
    vals = t[cols].to_numpy()
    assert (vals[~np.isnan(vals)] == 0).all()
    assert t.tie.tolist() == t.tie_before.tolist()
    assert all(t[c].dtype == np.float64 for c in dr.TABLE_COLUMNS[:-1])
    if kind == "clip":
        assert t.radial_drift.isna().all() and t.text_radial_drift.isna().all()
    else:
        assert np.isfinite(t.drop(columns="group").to_numpy(np.float64)).all()


@pytest.mark.parametrize("kind", ["meru", "clip"])
def test_rotating_both_towers_is_zero(world, kind):
    m = world[kind]
    r = copy.deepcopy(m)
    Q = _rotation(m.embed_dim, torch.Generator().manual_seed(3)).float()
    with torch.no_grad():
        r.visual_proj.weight.copy_(Q @ m.visual_proj.weight)
        r.textual_proj.weight.copy_(Q @ m.textual_proj.weight)
    t = _table(m, r, world)
    cols = [*dr.DRIFTS, "toward_ancestor", "text_angular_drift", "text_cross_modal_drift"] + (["text_radial_drift"] if kind == "meru" else [])
    cols = [c for c in cols if not (kind == "clip" and c == "radial_drift")]
    assert np.abs(t[cols].to_numpy()).max() < 1e-4


def test_meru_alpha_scaling_is_purely_radial(world):
    m = world["meru"]
    s = copy.deepcopy(m)
    with torch.no_grad(): s.log_visual_alpha.add_(math.log(1.5))
    an = dr.drift_anchors(m, s, world["images"], world["labels"], TAX, CLASSES, TPL, [DOG])
    img, txt = an[an.modality == "image"], an[an.modality == "text"]
    assert (img.radial_drift > 1e-3).all() and (img.paired_drift > 0).any()
    assert img.angular_drift.max() < 1e-5 and img.cross_modal_drift.max() < 1e-5
    assert txt[["radial_drift", "angular_drift", "cross_modal_drift"]].abs().max().max() < 1e-5
    assert txt[list(dr._IMAGE_ONLY)].isna().all().all() and len(txt) == len(dr.anchor_concepts(TAX, CLASSES))


def test_clip_feature_scale_is_invisible(world):
    m = world["clip"]
    s = copy.deepcopy(m)
    with torch.no_grad(): s.visual_proj.weight.mul_(3.0)
    t = _table(m, s, world)
    assert t.radial_drift.isna().all()
    assert np.abs(t[[*dr.DRIFTS[1:], "toward_ancestor"]].to_numpy()).max() < 1e-5


def test_perturbed_model_table_and_tests(world):
    m = world["meru"]
    p = copy.deepcopy(m)
    with torch.no_grad(): p.visual_proj.weight.add_(0.5 * torch.randn(p.visual_proj.weight.shape, generator=torch.Generator().manual_seed(1)))
    a = dr.drift_anchors(m, p, world["images"], world["labels"], TAX, CLASSES, TPL, [DOG])
    t = dr.drift_summary(a)
    assert np.isfinite(t.drop(columns="group").to_numpy(np.float64)).all() and (t[list(dr.DRIFTS)] > 0).all().all()
    assert ((t.tie >= 0) & (t.lca_depth >= 0)).all()
    b = dr.drift_anchors(m, copy.deepcopy(m), world["images"], world["labels"], TAX, CLASSES, TPL, [DOG])
    tt = dr.drift_tests(a, b)
    assert len(tt) == 3 * 5 and set(tt.family) == {"drift", "ancestor"}
    d = tt[tt.family == "drift"]
    assert (d.m == 4).all() and np.allclose(d.p_bonferroni, np.minimum(1, 4 * d.p))
    assert (tt[tt.drift == "radial_drift"].rank_biserial == 1).all()      # b never drifts: a is larger on every anchor
    # pooling seeds: (seed, anchor) pairs
    pooled = dr.drift_tests(pd.concat([a.assign(seed=0), a.assign(seed=1)]), pd.concat([b.assign(seed=0), b.assign(seed=1)]),
                            on=("seed", "anchor", "modality"))
    assert (pooled.n == 2 * tt.n).all()
    with pytest.raises(ValueError, match="different image anchors"):
        dr.drift_tests(a, b[b.anchor > 0])
    tx = dr.drift_tests(a, b, modality="text")
    assert set(tx.drift) == set(dr.DRIFTS)


def test_embed_anchors_matches_zero_shot(world):
    m = world["meru"]
    m.train()
    e = dr.embed_anchors(m, world["images"], TAX, CLASSES, TPL)
    assert m.training   # mode restored
    m.eval()
    rep = evaluate_zero_shot(m, world["images"], world["labels"], CLASSES, TPL, forget=[DOG])
    assert torch.equal(e["pred"], rep["logits"].argmax(1))
    assert e["images"].dtype == e["texts"].dtype == torch.float64 and e["curv"] == pytest.approx(float(m.curv.detach()))
    assert e["concepts"] == dr.anchor_concepts(TAX, CLASSES) and e["texts"].shape == (len(e["concepts"]), m.embed_dim)


def test_model_errors(world):
    m, c, x, y = world["meru"], world["clip"], world["images"], world["labels"]
    with pytest.raises(ValueError, match="share a geometry"):
        _drift_table(m, c, x, y, TAX, CLASSES, TPL, [DOG])
    with pytest.raises(ValueError, match="labels has"):
        _drift_table(m, m, x, y[:-1], TAX, CLASSES, TPL, [DOG])
    keep = torch.isin(y, torch.tensor([CLASSES.index(k) for k in ("dog", "bird", "cow")]))
    with pytest.raises(ValueError, match=r"empty group\(s\) \['sibling'\]"):
        _drift_table(m, m, x[keep], y[keep], TAX, CLASSES, TPL, [DOG])
    with pytest.raises(ValueError, match="forget set is empty"):
        _drift_table(m, m, x, y, TAX, CLASSES, TPL, [])
    e = dr.embed_anchors(m, x, TAX, CLASSES, TPL)
    with pytest.raises(ValueError, match="outside"):
        dr.anchor_drifts(e, e, torch.full_like(y, 10), taxonomy=TAX, classes=CLASSES, forget=[DOG])
    with pytest.raises(ValueError, match="concepts differ"):
        dr.anchor_drifts(e, dict(e, concepts=e["concepts"][::-1]), y, taxonomy=TAX, classes=CLASSES, forget=[DOG])
