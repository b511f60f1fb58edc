"""Property tests of hac.losses: each unlearning term does what it claims after one gradient step."""
import pytest
import torch
import torch.nn.functional as F

from hac import lorentz as L
from hac.losses import (AC, HAC, NegGrad, Finetune, PretrainLoss, contrastive_loss, entailment_calibration,
                        masked_cross_entropy, negative_calibration, norm_regularization, positive_calibration,
                        rowwise_similarity, similarity, toy_batch, truth_mask)

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
              truth=b["truth"], concept_txt=b["concept_txt"], parent=b["parent"])["loss"]
    torch.testing.assert_close(out["retain_loss"], ref)
    torch.testing.assert_close(Finetune(pre)(b)["loss"], ref)


def test_objective_parts_sum_and_switches():
    b = toy_batch(seed=4)
    out = HAC(PretrainLoss("lorentz"), alpha=0.5, beta=2.0, ent=3.0, norm=4.0)(b)
    assert set(k for k in out if k.endswith("_loss")) == {"retain_loss", "neg_loss", "pos_loss", "ec_loss", "nr_loss"}
    torch.testing.assert_close(out["loss"], sum(v for k, v in out.items() if k.endswith("_loss")))
    torch.testing.assert_close(out["pos_loss"], 2.0 * out["pos"])
    torch.testing.assert_close(out["ec_loss"], 3.0 * out["ec"])
    off = HAC(PretrainLoss("lorentz"), alpha=0, beta=0, ent=0, norm=0)(b)
    assert set(k for k in off if k.endswith("_loss")) == {"retain_loss"}
    # no forget samples in the batch: only the retain-side terms
    b0 = dict(b, img_f=b["img_f"][:0], txt_f=b["txt_f"][:0])
    assert set(k for k in HAC(PretrainLoss("lorentz"))(b0) if k.endswith("_loss")) == {"retain_loss", "nr_loss"}


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
