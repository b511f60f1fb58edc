"""Property tests of hac.losses: each unlearning term does what it claims after one gradient step."""
import inspect
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from hac import lorentz as L
from hac.lorentz import cone_gap
from hac.losses import (AC, entailment, ENT_MODES, HAC, NORM_MODES, NegGrad, Finetune, PretrainLoss, contrastive_loss,
                        entailment_calibration, entailment_exclusion, entailment_reanchor, entailment_swap,
                        generalization_target, masked_cross_entropy, negative_calibration, norm_generalization,
                        norm_preservation, norm_regularization, positive_calibration, rowwise_similarity, similarity,
                        toy_batch, truth_mask)

GEOMS = [("euclidean", None), ("lorentz", 1.0), ("lorentz", 0.3)]


def _params(*shape, seed=0, scale=0.7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter((scale * torch.randn(*shape, generator=g)).to(dtype))


def _step(loss, params, lr):
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            assert torch.isfinite(g).all()
            p -= lr * g


@pytest.mark.parametrize("geometry,curv", GEOMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pos_step_lowers_forget_similarity(geometry, curv, seed):
    img, txt = _params(16, 8, seed=seed), _params(16, 8, seed=seed + 100)
    with torch.no_grad():   # start close: the pairs are aligned, as after pretraining
        img.copy_(txt + 0.2 * img)
    before = rowwise_similarity(img, txt, geometry=geometry, curv=curv).mean()
    _step(positive_calibration(img, txt, geometry=geometry, curv=curv), [img, txt], lr=1.0)
    after = rowwise_similarity(img, txt, geometry=geometry, curv=curv).mean()
    assert after < before - 1e-4


@pytest.mark.parametrize("curv", [1.0, 0.3])
def test_pos_lorentz_is_bounded_and_radially_invariant(curv):
    """In [-1, 1] for any input; pushing images outward (the degenerate way to grow -d) does not lower it."""
    g = torch.Generator().manual_seed(0)
    for scale in (0.01, 1.0, 30.0):
        x, y = scale * torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
        v = positive_calibration(x, y, geometry="lorentz", curv=curv)
        assert -1.0 <= float(v) <= 1.0
    txt = _params(16, 8, seed=1).detach()
    img = txt + 0.3 * _params(16, 8, seed=2).detach()
    near = positive_calibration(img, txt, geometry="lorentz", curv=curv)
    far = positive_calibration(8 * img, txt, geometry="lorentz", curv=curv)
    d_near = L.rowwise_dist(img, txt, curv=curv).mean()
    d_far = L.rowwise_dist(8 * img, txt, curv=curv).mean()
    assert d_far > d_near + 1.0              # -d alone would call this "forgotten" ...
    assert float(far) > float(near) - 0.15   # ... the bounded term does not
    # the caption's radius is a constant normalizer: no gradient pushes captions outward through it
    t = torch.nn.Parameter(txt.clone())
    gt, = torch.autograd.grad(positive_calibration(img, t, geometry="lorentz", curv=curv), [t])
    assert torch.isfinite(gt).all()


def test_neg_keeps_forget_captions_as_negatives():
    b = toy_batch(seed=6)
    con_cand = torch.cat([b["con_alt"], b["con_r"], b["con_f"]])
    from hac.losses import neg_ignore_mask
    ign = neg_ignore_mask(b["cls_f"], b["con_alt"], con_cand, b["truth"], forget_concepts=b["con_f"])
    nf, nr = len(b["con_alt"]), len(b["con_r"])
    assert not ign[:, nf + nr:].any()                        # forget captions: negatives
    shared = (con_cand == 2) | (con_cand == 3)               # pet / animal: true of the dog image, retained
    assert ign[:, shared].all()
    assert not torch.cat([ign[i, :nf][b["con_alt"] != b["con_alt"][i]] for i in range(nf)]).any()


@pytest.mark.parametrize("curv", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_ent_step_raises_exterior_minus_aperture(curv, seed):
    txt = _params(16, 8, seed=seed, scale=0.5)
    img = torch.nn.Parameter(2.0 * txt.detach() + 0.01 * _params(16, 8, seed=seed + 7).detach())  # inside the cones
    gap = lambda: (L.oxy_angle(txt, img, curv=curv) - L.half_aperture(txt, curv=curv)).mean()
    before = gap()
    assert entailment_calibration(img, txt, curv=curv, margin=0.1) > 0
    _step(entailment_calibration(img, txt, curv=curv, margin=0.1), [img, txt], lr=0.1)
    assert gap() > before + 1e-4


def test_ent_finite_gradient_at_coincident_and_origin_points():
    txt = _params(6, 8, scale=0.5)
    img = torch.nn.Parameter(txt.detach().clone())
    loss = entailment_calibration(img, txt, curv=1.0)
    gi, gt = torch.autograd.grad(loss, [img, txt])
    assert torch.isfinite(loss) and torch.isfinite(gi).all() and torch.isfinite(gt).all()
    z = torch.nn.Parameter(torch.zeros(3, 8))
    loss = entailment_calibration(_params(3, 8), z, curv=1.0)
    assert torch.isfinite(loss) and torch.isfinite(torch.autograd.grad(loss, [z])[0]).all()


@pytest.mark.parametrize("curv", [1.0, 0.2])
def test_norm_zero_at_frozen_and_pulls_back(curv):
    x0 = _params(32, 8).detach()
    assert float(norm_regularization(x0, x0, curv=curv)) == 0.0
    g = torch.Generator().manual_seed(3)
    x = torch.nn.Parameter(x0 * (1 + 0.5 * torch.rand(32, 1, generator=g)))  # pushed outward
    r0 = L.dist0(x0, curv=curv)
    gap_before = (L.dist0(x, curv=curv) - r0).abs()
    loss = norm_regularization(x, x0, curv=curv)
    gx, = torch.autograd.grad(loss, [x])
    assert ((gx * x).sum(-1) > 0).all()   # gradient points outward, so descent moves inward
    with torch.no_grad():
        x -= 0.1 * gx
    gap_after = (L.dist0(x, curv=curv) - r0).abs()
    assert (gap_after < gap_before).all()
    # only the current model receives gradient, never the frozen reference
    x0p = torch.nn.Parameter(x0.clone())
    assert torch.autograd.grad(norm_regularization(x, x0p, curv=curv), [x0p], allow_unused=True)[0] is None


@pytest.mark.parametrize("geometry,curv", GEOMS)
def test_neg_step_moves_forget_toward_drawn_caption(geometry, curv):
    img, cand = _params(6, 8, seed=4), _params(10, 8, seed=5)
    before = rowwise_similarity(img, cand[:6], geometry=geometry, curv=curv) - \
        similarity(img, cand[6:], geometry=geometry, curv=curv).mean(1)
    _step(negative_calibration(img, cand, scale=5.0, geometry=geometry, curv=curv), [img], lr=0.1)
    after = rowwise_similarity(img, cand[:6], geometry=geometry, curv=curv) - \
        similarity(img, cand[6:], geometry=geometry, curv=curv).mean(1)
    assert after.mean() > before.mean()


def test_masked_captions_get_no_gradient():
    """A caption true of an image is neither positive nor negative in that image's row."""
    truth = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    img, txt = _params(3, 8, seed=1), _params(3, 8, seed=2)
    cls_, con = torch.tensor([0, 1, 0]), torch.tensor([0, 1, 3])
    ign = truth_mask(cls_, con, truth)
    lg = 10 * similarity(img, txt, geometry="euclidean")
    loss = masked_cross_entropy(lg[:1], torch.tensor([0]), ign[:1])   # row 0: dog image, caption 2 = animal is true
    g, = torch.autograd.grad(loss, [txt])
    assert g[2].abs().max() == 0 and g[1].abs().max() > 0


@pytest.mark.parametrize("geometry,cls", [("euclidean", AC), ("lorentz", AC), ("lorentz", HAC)])
def test_retain_term_equals_pretraining_loss(geometry, cls):
    b = toy_batch(seed=3)
    pre = PretrainLoss(geometry, parent_weight=1.0 if geometry == "lorentz" else 0.0)
    out = cls(pre)(b)
    ref = pre(b["img_r"], b["txt_r"], scale=b["scale"], curv=b["curv"], img_cls=b["cls_r"], txt_con=b["con_r"],
              truth=b["truth"], concept_txt=b["concept_txt_r"], parent=b["parent_r"])["loss"]
    torch.testing.assert_close(out["retain_loss"], ref)
    torch.testing.assert_close(Finetune(pre)(b)["loss"], ref)
    # without the retain subset the retain loss falls back to all concepts
    b_all = {k: v for k, v in b.items() if k not in ("concept_txt_r", "parent_r")}
    ref_all = pre(b["img_r"], b["txt_r"], scale=b["scale"], curv=b["curv"], img_cls=b["cls_r"], txt_con=b["con_r"],
                  truth=b["truth"], concept_txt=b["concept_txt"], parent=b["parent"])["loss"]
    torch.testing.assert_close(Finetune(pre)(b_all)["loss"], ref_all)


def test_objective_parts_sum_and_switches():
    b = toy_batch(seed=4)
    out = HAC(PretrainLoss("lorentz"), alpha=0.5, beta=2.0, ent=3.0, norm=4.0)(b)
    assert set(k for k in out if k.endswith("_loss")) == {"retain_loss", "neg_loss", "pos_loss", "ec_excl_loss",
                                                          "ec_anc_loss", "nr_keep_loss", "nr_gen_loss"}
    torch.testing.assert_close(out["loss"], sum(v for k, v in out.items() if k.endswith("_loss")))
    torch.testing.assert_close(out["pos_loss"], 2.0 * out["pos"])
    torch.testing.assert_close(out["ec_excl_loss"], 3.0 * out["ec_excl"])
    torch.testing.assert_close(out["nr_gen_loss"], 4.0 * out["nr_gen"])
    torch.testing.assert_close(out["ec"], out["ec_excl"] + out["ec_anc"])
    torch.testing.assert_close(out["nr"], out["nr_keep"] + out["nr_gen"])
    off = HAC(PretrainLoss("lorentz"), alpha=0, beta=0, ent=0, norm=0)(b)
    assert set(k for k in off if k.endswith("_loss")) == {"retain_loss"}
    # no forget samples in the batch: only the retain-side terms
    b0 = dict(b, img_f=b["img_f"][:0], txt_f=b["txt_f"][:0])
    assert set(k for k in HAC(PretrainLoss("lorentz"))(b0) if k.endswith("_loss")) == {"retain_loss", "nr_keep_loss"}


def test_neggrad_ascends_forget_and_is_capped():
    b = toy_batch(seed=5)
    out = NegGrad(PretrainLoss("euclidean"), max_ascent=0.5)(b)
    assert float(out["ascent_loss"]) == pytest.approx(-0.5)
    out = NegGrad(PretrainLoss("euclidean"), max_ascent=1e9)(b)
    assert float(out["ascent_loss"]) == pytest.approx(-float(out["forget"]))


def test_float64_kept_and_bf16_upcast():
    x, y = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    assert similarity(x, y, geometry="lorentz", curv=1.0).dtype == torch.float64
    assert similarity(x.bfloat16(), y.bfloat16(), geometry="lorentz", curv=1.0).dtype == torch.float32
    l = contrastive_loss(x.bfloat16(), y.bfloat16(), scale=10.0, geometry="lorentz", curv=1.0)
    assert l.dtype == torch.float32 and torch.isfinite(l)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="paired"):
        contrastive_loss(x, x[:3], scale=1.0, geometry="euclidean")
    with pytest.raises(ValueError, match="curv"):
        positive_calibration(x, x, geometry="lorentz")
    with pytest.raises(ValueError, match="out of range"):
        truth_mask(torch.tensor([5]), torch.tensor([0]), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="frozen"):
        HAC(PretrainLoss("lorentz"))({k: v for k, v in toy_batch().items() if k != "img_r0"})



# ---------------------------------------------------------------- HAC readings (issue 12): each one acts
def _terms(seed, **kw):
    b = toy_batch(n_f=8, seed=seed, realistic=True, requires_grad=True, **kw)
    T, I, leaf, anc = b["concept_txt"], b["img_f"], b["leaf_f"], b["anc_f"]
    gap0 = cone_gap(b["concept_txt0"][leaf], b["img_f0"], curv=1.0)
    delta0 = gap0 - cone_gap(b["concept_txt0"][anc], b["img_f0"], curv=1.0)
    return b, T, I, leaf, anc, gap0, delta0


def _ext(T, I, k):
    return L.oxy_angle(T[k], I, curv=1.0).mean().item()


@pytest.mark.parametrize("seed", range(5))
def test_exclusion_acts_where_the_absolute_hinge_is_inert(seed):
    b, T, I, leaf, anc, gap0, _ = _terms(seed)
    assert float(entailment_calibration(I, T[leaf], curv=1.0).detach()) == 0.0   # today's term: nothing to do
    loss = lambda: entailment_exclusion(I, T[leaf], curv=1.0, gap0=gap0, margin=0.1)
    assert float(loss()) > 0.05
    e0 = _ext(T, I, leaf)
    _step(loss(), [I, T], lr=0.1)
    assert _ext(T, I, leaf) > e0 + 1e-3
    # the images alone also leave the cone (the term does not rely on moving the text)
    b, T, I, leaf, anc, gap0, _ = _terms(seed)
    e0 = _ext(T, I, leaf)
    _step(entailment_exclusion(I, T[leaf], curv=1.0, gap0=gap0), [I], lr=1.0)
    assert _ext(T, I, leaf) > e0 + 1e-4


def test_exclusion_switches_off_after_the_margin():
    b, T, I, leaf, anc, gap0, _ = _terms(0, drift=0.0)
    torch.testing.assert_close(entailment_exclusion(I, T[leaf], curv=1.0, gap0=gap0, margin=0.3),
                               torch.tensor(0.3), atol=1e-5, rtol=0)
    assert float(entailment_exclusion(I, T[leaf], curv=1.0, gap0=gap0 - 0.5, margin=0.3)) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_reanchor_pulls_images_into_the_ancestor_cone(seed):
    b, T, I, leaf, anc, _, _ = _terms(seed)
    loss = lambda: entailment_reanchor(I, T[anc], curv=1.0)
    assert float(loss()) > 0.02
    assert torch.autograd.grad(loss(), [T], allow_unused=True)[0] is None   # the ancestor is an anchor
    e0 = _ext(T, I, anc)
    _step(loss(), [I], lr=1.0)
    assert _ext(T, I, anc) < e0 - 1e-4
    torch.testing.assert_close(loss(), entailment(T[anc].detach(), I.detach(), curv=1.0))   # MERU's loss


@pytest.mark.parametrize("seed", range(5))
def test_swap_moves_the_ordering_of_the_cones(seed):
    b, T, I, leaf, anc, _, delta0 = _terms(seed)
    loss = lambda: entailment_swap(I, T[leaf], T[anc], curv=1.0, delta0=delta0)
    assert float(loss()) > 0.05
    d = lambda: (cone_gap(T[leaf], I, curv=1.0) - cone_gap(T[anc], I, curv=1.0)).mean().item()
    d0 = d()
    _step(loss(), [I, T], lr=0.1)
    assert d() > d0 + 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_preserve_acts_on_drift_and_pulls_radii_back(seed):
    b, *_ = _terms(seed, drift=0.1)
    xs, x0s = [b["img_r"], b["txt_r"], b["concept_txt"]], [b["img_r0"], b["txt_r0"], b["concept_txt0"]]
    loss = lambda: norm_preservation(list(zip(xs, x0s)), curv=1.0)
    dev = lambda: [(L.dist0(x, curv=1.0) - L.dist0(x0, curv=1.0)).abs().mean().item() for x, x0 in zip(xs, x0s)]
    assert float(loss()) > 1e-5
    before = dev()
    _step(loss(), xs, lr=1.0)
    after = dev()
    assert all(a < b_ for a, b_ in zip(after, before)), (before, after)   # every group, concept texts included
    # groups count equally, whatever their size
    g1 = [(b["img_r"], b["img_r0"])]
    torch.testing.assert_close(norm_preservation(g1 + g1 + g1, curv=1.0), norm_regularization(b["img_r"], b["img_r0"], curv=1.0))


@pytest.mark.parametrize("seed", range(5))
def test_generalize_moves_forget_images_toward_the_inner_target(seed):
    b, T, I, leaf, anc, _, _ = _terms(seed)
    T0 = b["concept_txt0"]
    r_star = generalization_target(b["img_f0"], T0[leaf], T0[anc], curv0=1.0)
    r0 = L.dist0(b["img_f0"], curv=1.0)
    torch.testing.assert_close(r0 - r_star, (L.dist0(T0[leaf], curv=1.0) - L.dist0(T0[anc], curv=1.0)))
    loss = lambda: norm_generalization(I, r_star, curv=1.0)
    assert float(loss()) > 0.005
    gap = lambda: (L.dist0(I, curv=1.0) - r_star)
    g0 = gap()
    _step(loss(), [I], lr=1.0)
    assert (gap().abs() < g0.abs()).all() and (gap() >= -1e-4).all()     # toward the target, not past it
    # at or inside the target: nothing to do
    assert float(norm_generalization(I.detach(), L.dist0(I.detach(), curv=1.0) + 0.1, curv=1.0)) == 0.0


def _degenerate():
    z = torch.zeros(3, 8)
    x = 0.5 * torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    return {"zeros": (z, z.clone()), "identical": (x, x.clone()), "huge": (1e4 * x, 1e4 * x.flip(0)),
            "zero apex": (z, x), "huge apex": (1e4 * x, x)}


@pytest.mark.parametrize("case", list(_degenerate()))
def test_hac_terms_finite_on_degenerate_inputs(case):
    a, c_ = _degenerate()[case]
    a, c_ = torch.nn.Parameter(a.clone()), torch.nn.Parameter(c_.clone())
    ref = torch.zeros(3)
    fns = {"exclusion": lambda: entailment_exclusion(c_, a, curv=1.0, gap0=ref),
           "exclusion_abs": lambda: entailment_exclusion(c_, a, curv=1.0),
           "reanchor": lambda: entailment_reanchor(c_, a, curv=1.0) + 0 * a.sum(),
           "swap": lambda: entailment_swap(c_, a, c_.flip(0), curv=1.0, delta0=ref),
           "keep": lambda: norm_preservation([(a, c_.detach()), (c_, a.detach())], curv=1.0),
           "gen": lambda: norm_generalization(c_, generalization_target(a, a, c_, curv0=1.0), curv=1.0) + 0 * a.sum()}
    for name, fn in fns.items():
        v = fn()
        ga, gc = torch.autograd.grad(v, [a, c_], allow_unused=True)
        assert torch.isfinite(v), (case, name, v)
        for g in (ga, gc):
            assert g is None or torch.isfinite(g).all(), (case, name)


def test_hac_with_weights_off_is_ac_and_every_mode_differs():
    b = toy_batch(seed=1, realistic=True)
    for pl in (PretrainLoss("lorentz"), PretrainLoss("lorentz", parent_weight=1.0)):
        ac = AC(pl, alpha=0.7, beta=1.3)(b)
        off = HAC(pl, alpha=0.7, beta=1.3, ent=0, norm=0)(b)
        assert set(off) == set(ac)
        for k in ac: assert torch.equal(off[k], ac[k]), k
        for em in ENT_MODES:
            out = HAC(pl, alpha=0.7, beta=1.3, norm=0, ent_mode=em)(b)
            assert float(out["loss"]) != float(ac["loss"]) and float(out["ec"]) > 0, em
        for nm in NORM_MODES:
            out = HAC(pl, alpha=0.7, beta=1.3, ent=0, norm_mode=nm)(b)
            assert float(out["loss"]) != float(ac["loss"]) and float(out["nr"]) > 0, nm
    keys = lambda **kw: set(k for k in HAC(PretrainLoss("lorentz"), **kw)(b) if k.endswith("_loss"))
    assert keys(ent_mode="swap", norm_mode="generalize") >= {"ec_swap_loss", "nr_gen_loss"}
    assert not keys(ent_mode="swap", norm_mode="generalize") & {"ec_excl_loss", "ec_anc_loss", "nr_keep_loss"}


def test_rows_without_retained_ancestor_are_skipped():
    b = toy_batch(seed=2, realistic=True)
    pl = PretrainLoss("lorentz")
    half = dict(b, anc_f=torch.tensor([2, -1, 2, -1]))
    sub = {k: (v[[0, 2]] if k in ("img_f", "img_f0", "txt_f", "txt_alt", "cls_f", "con_f", "con_alt", "leaf_f", "anc_f")
               else v) for k, v in half.items()}
    a = HAC(pl, alpha=0, beta=0, ent_mode="reanchor", norm_mode="generalize")(half)
    s = HAC(pl, alpha=0, beta=0, ent_mode="reanchor", norm_mode="generalize")(sub)
    torch.testing.assert_close(a["ec_anc"], s["ec_anc"]); torch.testing.assert_close(a["nr_gen"], s["nr_gen"])
    none = HAC(pl, alpha=0, beta=0, ent_mode="reanchor", norm_mode="generalize")(dict(b, anc_f=torch.full((4,), -1)))
    assert float(none["ec_anc"]) == 0.0 and float(none["nr_gen"]) == 0.0 and torch.isfinite(none["loss"])


def test_hac_modes_and_keys_fail_clearly():
    pl = PretrainLoss("lorentz")
    with pytest.raises(ValueError, match="exclusion.*reanchor.*swap.*both"):
        HAC(pl, ent_mode="cones")
    with pytest.raises(ValueError, match="preserve.*generalize.*both"):
        HAC(pl, norm_mode="radius")
    b = toy_batch(realistic=True)
    for key in ("img_f0", "concept_txt0", "anc_f", "leaf_f"):
        with pytest.raises(ValueError, match=f"{key}.*hac.train"):
            HAC(pl)({k: v for k, v in b.items() if k != key})
    with pytest.raises(ValueError, match="concept_txt_r"):
        HAC(pl)(dict(b, concept_txt=b["concept_txt"][1:]))


def test_hac_gradients_reach_the_current_model_only():
    b = toy_batch(seed=3, realistic=True, requires_grad=True)
    frozen = {k: torch.nn.Parameter(b[k].clone()) for k in ("img_f0", "concept_txt0", "img_r0", "txt_r0")}
    out = HAC(PretrainLoss("lorentz"), alpha=0, beta=0, retain_weight=0)(dict(b, **frozen))
    grads = torch.autograd.grad(out["loss"], list(frozen.values()) + [b["img_f"], b["concept_txt"]], allow_unused=True)
    assert all(g is None for g in grads[:4])
    assert grads[4].abs().sum() > 0 and grads[5].abs().sum() > 0


def test_loss_values_unchanged_on_fixed_toy_batches():
    """Golden values, computed before the notebook was split into lessons and the weights renamed (issue 14, 15)."""
    b0, b1 = toy_batch(seed=0), toy_batch(realistic=True, seed=1)
    pl = PretrainLoss("lorentz", parent_weight=1.0)
    got = {
        "pretrain": pl(b1["img_r"], b1["txt_r"], scale=b1["scale"], curv=b1["curv"], img_cls=b1["cls_r"],
                       txt_con=b1["con_r"], truth=b1["truth"], concept_txt=b1["concept_txt"], parent=b1["parent"])["loss"],
        "finetune": Finetune(pl)(b1)["loss"],
        "neggrad": NegGrad(PretrainLoss("lorentz"), ascent_weight=0.7, max_ascent=3.0)(b0)["loss"],
        "ac_clip": AC(PretrainLoss("euclidean"), alpha=0.5, beta=2.0, retain_weight=0.3)(b0)["loss"],
        "ac_meru": AC(pl, alpha=0.5, beta=2.0, retain_weight=0.3)(b1)["loss"],
        "hac": HAC(pl, alpha=0.5, beta=2.0, retain_weight=0.3, ent=3.0, norm=4.0, margin=0.2)(b1)["loss"],
        "hac_swap": HAC(PretrainLoss("lorentz"), alpha=0.5, beta=2.0, retain_weight=0.3, ent=3.0, norm=4.0, margin=0.2,
                        ent_mode="swap", norm_mode="generalize")(b1)["loss"],
    }
    want = {"pretrain": 0.8067293167114258, "finetune": 0.4623141586780548, "neggrad": -1.5676708221435547,
            "ac_clip": 2.6012635231018066, "ac_meru": 3.9685239791870117, "hac": 8.61255931854248,
            "hac_swap": 5.897130966186523}
    for k, v in want.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-6, abs=1e-6), k


def test_weight_names_are_trainconfig_fields():
    """One name per weight: constructor keyword = stored attribute = `hac.config.TrainConfig` field (issue 15)."""
    from hac.config import TrainConfig
    cfg_names = {f.name for f in fields(TrainConfig)}
    for cls in (PretrainLoss, Finetune, NegGrad, AC, HAC):
        kws = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "pretrain", "geometry", "K")]
        assert set(kws) <= cfg_names, (cls.__name__, set(kws) - cfg_names)
    kw = dict(alpha=0.5, beta=2.0, retain_weight=0.3, ent=3.0, norm=4.0, margin=0.2, ent_mode="swap", norm_mode="preserve")
    objs = [(HAC(PretrainLoss("lorentz"), **kw), kw),
            (AC(PretrainLoss("euclidean"), alpha=0.5, beta=2.0, retain_weight=0.3), dict(alpha=0.5, beta=2.0, retain_weight=0.3)),
            (NegGrad(PretrainLoss("euclidean"), ascent_weight=0.7, max_ascent=3.0), dict(ascent_weight=0.7, max_ascent=3.0)),
            (PretrainLoss("lorentz", entail_weight=0.3, parent_weight=1.0, mask_true=False, t2i_mask=False),
             dict(entail_weight=0.3, parent_weight=1.0, mask_true=False, t2i_mask=False))]
    for obj, expect in objs:
        for name, value in expect.items():
            assert getattr(obj, name) == value, (type(obj).__name__, name)
    with pytest.raises(TypeError):
        AC(PretrainLoss("euclidean"), retain=0.3)       # the old keyword is gone (one name per thing)
    with pytest.raises(TypeError):
        NegGrad(PretrainLoss("euclidean"), forget=0.7)
