"""Sweeps for hac.metrics and hac.evaluate: metrics with known answers, oracles from scikit-learn, a Lorentz point
cloud with known cone membership, audits on a toy model."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion, roc_auc_score, roc_curve

from hac import evaluate as ev
from hac import metrics as mt
from hac.lorentz import dist0, oxy_angle

torch.set_num_threads(1)


# ---------------------------------------------------------------- zero-shot accuracy
@pytest.mark.parametrize("seed", range(5))
def test_confusion_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    C = int(torch.randint(2, 12, (1,), generator=g))
    yt, yp = torch.randint(0, C, (300,), generator=g), torch.randint(0, C, (300,), generator=g)
    cm = mt.confusion_matrix(yt, yp, n_classes=C)
    np.testing.assert_array_equal(cm.numpy(), sk_confusion(yt.numpy(), yp.numpy(), labels=range(C)))


@pytest.mark.parametrize("C,forget", [(10, [4]), (10, [0, 4, 9]), (3, [1]), (7, [0, 1, 2, 3, 4, 5])])
def test_perfect_constant_permuted(C, forget):
    y = torch.arange(C).repeat_interleave(7)
    perfect = mt.forget_retain_accuracy(y, y, forget=forget, n_classes=C)
    assert perfect["forget_acc"] == perfect["retain_acc"] == perfect["acc"] == 1.0
    assert perfect["forget_mean_class"] == perfect["retain_mean_class"] == 1.0
    assert perfect["n_forget"] == 7 * len(forget) and perfect["n_retain"] == 7 * (C - len(forget))
    # constant classifier (always the first forget class): forget top-1 = 1/|forget|, retain 0
    const = mt.forget_retain_accuracy(y, torch.full_like(y, forget[0]), forget=forget, n_classes=C)
    assert math.isclose(const["forget_acc"], 1 / len(forget))
    assert math.isclose(const["forget_mean_class"], 1 / len(forget))
    assert const["retain_acc"] == 0.0 and const["retain_mean_class"] == 0.0
    # permuted classifier: never right, every class lands on exactly one other class
    perm = mt.forget_retain_accuracy(y, (y + 1) % C, forget=forget, n_classes=C)
    assert perm["forget_acc"] == perm["retain_acc"] == perm["acc"] == 0.0
    cm = mt.confusion_matrix(y, (y + 1) % C, n_classes=C)
    assert torch.equal(cm, 7 * torch.roll(torch.eye(C, dtype=torch.long), 1, dims=1))


def test_mean_class_vs_top1_with_imbalance():
    # class 0: 90 images all right; class 1: 10 images all wrong -> top1 0.9, mean per class 0.5
    y = torch.tensor([0] * 90 + [1] * 10)
    p = torch.tensor([0] * 90 + [0] * 10)
    r = mt.forget_retain_accuracy(y, p, forget=[2], n_classes=3)
    assert math.isclose(r["retain_acc"], 0.9) and math.isclose(r["retain_mean_class"], 0.5)
    assert math.isnan(r["forget_acc"]) and r["n_forget"] == 0  # no forget images: NaN, not 0


def test_canonical_metrics_renames_old_names():
    old = {"overall_top1": 0.5, "forget_top1": 0.25, "retain_top1": 0.75, "top5": 1.0, "n_forget": 4, "per_class": [],
           "before": {"overall_top1": 0.9, "runs": [{"top5": 1.0}]}, "after": {"forget_top1": 0.0, "forget_acc": 0.0}}
    new = mt.canonical_metrics(old)
    assert new == {"acc": 0.5, "forget_acc": 0.25, "retain_acc": 0.75, "acc5": 1.0, "n_forget": 4, "per_class": [],
                   "before": {"acc": 0.9, "runs": [{"acc5": 1.0}]}, "after": {"forget_acc": 0.0}}
    assert list(new)[:4] == ["acc", "forget_acc", "retain_acc", "acc5"]   # order kept
    assert mt.canonical_metrics(new) == new and old["before"] == {"overall_top1": 0.9, "runs": [{"top5": 1.0}]}  # a copy
    # every key of the report functions is written down once, in METRIC_KEYS or REPORT_KEYS
    y = torch.arange(4).repeat_interleave(3)
    keys = set(mt.zero_shot_report(torch.nn.functional.one_hot(y, 4).float(), y, forget=[1])) - {"confusion"}
    assert keys <= set(mt.METRIC_KEYS) | set(mt.REPORT_KEYS) and not set(mt.METRIC_KEYS) & set(mt.REPORT_KEYS)


def test_zero_shot_report_topk_and_errors():
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    r = mt.zero_shot_report(logits, torch.tensor([0, 1, 0]), forget=[1], topk=(1, 2))
    assert math.isclose(r["acc"], 1 / 3) and math.isclose(r["acc2"], 2 / 3) and "acc1" not in r
    with pytest.raises(ValueError, match="NaN"):
        mt.zero_shot_report(torch.full((2, 3), math.nan), torch.tensor([0, 1]), forget=[0])
    with pytest.raises(ValueError, match="forget"):
        mt.zero_shot_report(logits, torch.tensor([0, 1, 0]), forget=[5])
    with pytest.raises(ValueError, match="n_classes"):
        mt.confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), n_classes=3)


def test_forget_destinations_rank_correlation():
    C = 6
    S = torch.rand(C, C, generator=torch.Generator().manual_seed(0))
    S = S + S.T
    cm = torch.eye(C, dtype=torch.long) * 10
    order = S[0, 1:].argsort(descending=True) + 1  # other classes by text similarity to class 0
    cm[0] = 0
    cm[0, order] = torch.tensor([50, 20, 10, 5, 1])
    df, rho = mt.forget_destinations(cm, S, forget=[0])
    assert math.isclose(rho["0"], 1.0)
    assert df.destination.iloc[0] == str(int(order[0])) and df.text_rank.iloc[0] == 1
    assert math.isclose(df.share.sum(), 1.0)
    cm[0, order] = torch.tensor([1, 5, 10, 20, 50])
    assert math.isclose(mt.forget_destinations(cm, S, forget=[0])[1]["0"], -1.0)


# ---------------------------------------------------------------- hierarchy diagnostics
@pytest.mark.parametrize("curv", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(3))
def test_cone_membership_known_cloud(curv, seed):
    g = torch.Generator().manual_seed(seed)
    n = 400
    a = 0.05 + 3 * torch.rand(n, generator=g, dtype=torch.float64)   # text radius (some inside 2K: aperture pi/2)
    s = 0.05 + 2 * torch.rand(n, generator=g, dtype=torch.float64)
    phi = 0.02 + (math.pi - 0.04) * torch.rand(n, generator=g, dtype=torch.float64)
    T, I = mt.synthetic_cone_pairs(a, s, phi, dim=5)
    # the construction is exact at curvature -1 ...
    np.testing.assert_allclose(oxy_angle(T, I, curv=1.0).numpy(), phi.numpy(), atol=1e-6)
    np.testing.assert_allclose(dist0(T, curv=1.0).numpy(), a.numpy(), atol=1e-9)
    # ... and rescaling space components by 1/sqrt(c) maps it to curvature -c with the same angles
    Tc, Ic = T / math.sqrt(curv), I / math.sqrt(curv)
    aper = torch.asin(torch.clamp(0.2 / torch.sinh(a), max=1.0))  # 2K/(sqrt(c)|x_c|) = 2K/sinh(a)
    known = phi <= aper
    margin = (phi - aper).abs() > 1e-6
    got = mt.cone_membership(Tc, Ic, curv=curv)
    assert torch.equal(got[margin], known[margin])
    assert 0 < known.sum() < n  # both outcomes occur


def test_cone_shares_by_level():
    # class 0 images on the ray of concept 0 (inside its cone), concept 1 = opposite direction (outside)
    T, I_in = mt.synthetic_cone_pairs(torch.full((5,), 1.0), torch.full((5,), 1.0), torch.zeros(5))
    T2, _ = mt.synthetic_cone_pairs(torch.full((1,), 1.0), torch.full((1,), 1.0), torch.zeros(1))
    concepts = torch.cat([T[:1], -T2])
    df = mt.cone_shares(I_in, torch.zeros(5, dtype=torch.long), concepts, [[0, 1]], curv=1.0, class_names=["dog"])
    assert df.share.tolist() == [1.0, 0.0] and df.up.tolist() == [0, 1]   # up: edges above the class


def test_radius_table_and_scalars():
    rt = mt.radius_table(["a", "b", "a"], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    assert rt.loc["a", "before_mean"] == 2.0 and rt.loc["a", "change"] == -1.0 and rt.loc["b", "n"] == 1
    m = ev.ToyModel({"dog": [1.0, 0.0]}, geometry="lorentz", curv=0.7)
    sc = ev.learned_scalars(m)
    assert math.isclose(sc["curv"], 0.7, rel_tol=1e-6) and math.isclose(sc["logit_scale"], 10.0, rel_tol=1e-6)
    assert math.isnan(sc["visual_alpha"])


# ---------------------------------------------------------------- audits
def test_probes_separable_and_uninformative():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(5).repeat_interleave(40)
    X = 6 * torch.randn(5, 16, generator=g)[y] + torch.randn(200, 16, generator=g)
    for probe in (mt.linear_probe, mt.knn_probe):
        r = probe(X[::2], y[::2], X[1::2], y[1::2], forget=[2])
        assert r["forget_acc"] == 1.0 and r["retain_acc"] == 1.0
    noise = torch.randn(2000, 8, generator=g)
    yn = torch.randint(0, 2, (2000,), generator=g)
    r = mt.knn_probe(noise[:1000], yn[:1000], noise[1000:], yn[1000:], forget=[0], k=25)
    assert abs(r["acc"] - 0.5) < 0.06  # chance
    r = mt.linear_probe(noise[:1000], yn[:1000], noise[1000:], yn[1000:], forget=[0])
    assert abs(r["acc"] - 0.5) < 0.06


def test_knn_probe_lorentz_metric():
    from hac.lorentz import exp_map0
    g = torch.Generator().manual_seed(2)
    y = torch.arange(3).repeat_interleave(30)
    x = exp_map0(2 * torch.randn(3, 6, generator=g)[y] + 0.2 * torch.randn(90, 6, generator=g), curv=1.0)
    r = mt.knn_probe(x[::2], y[::2], x[1::2], y[1::2], forget=[0], metric="lorentz", curv=1.0)
    assert r["acc"] == 1.0
    with pytest.raises(ValueError, match="curv"):
        mt.knn_probe(x, y, x, y, forget=[0], metric="lorentz")


@pytest.mark.parametrize("seed", range(5))
def test_mia_matches_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(300, generator=g) + 0.7
    neg = torch.randn(400, generator=g)
    pos[:20] = neg[:20]  # ties
    yt = np.r_[np.ones(300), np.zeros(400)]
    sc = np.r_[pos.numpy(), neg.numpy()]
    assert math.isclose(mt.roc_auc(pos, neg), roc_auc_score(yt, sc), abs_tol=1e-12)
    fpr, tpr, _ = roc_curve(yt, sc)
    assert math.isclose(mt.tpr_at_fpr(pos, neg, fpr=0.01), tpr[fpr <= 0.01].max(), abs_tol=1e-12)


def test_mia_known_answers_and_scores():
    r = mt.membership_inference(torch.arange(100.0) + 1000, torch.arange(100.0))
    assert r["auc"] == 1.0 and r["tpr_at_1fpr"] == 1.0
    r = mt.membership_inference(torch.zeros(50), torch.zeros(50))
    assert r["auc"] == 0.5 and r["tpr_at_1fpr"] == 0.0
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    s = mt.membership_scores(logits, torch.tensor([0, 0]))
    assert s[0] > s[1]  # confident-and-right looks like a member


def test_retrieval_scores():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.3], [0.1, 0.2, 0.9, 0.8, 0.3]])
    rel = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    df = mt.retrieval_scores(sim, rel)
    assert df.auc.tolist() == [1.0, 0.0] and df.precision_at_k.tolist() == [1.0, 0.0]
    assert math.isnan(mt.retrieval_scores(sim, torch.zeros_like(rel)).auc.iloc[0])


def test_output_and_weight_distance():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 10, generator=g), torch.randn(50, 10, generator=g)
    d = mt.output_distance(a, b)
    assert d["kl"] > 0 and 0 < d["js"] <= math.log(2) and 0 <= d["top1_agreement"] <= 1
    assert mt.output_distance(a, a + 3.0)["kl"] < 1e-12  # softmax is shift invariant
    m1, m2 = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    with torch.no_grad():
        m2.weight.copy_(m1.weight + 1.0); m2.bias.copy_(m1.bias)
    assert math.isclose(mt.weight_distance(m2, m1)["l2"], math.sqrt(12), rel_tol=1e-6)
    with pytest.raises(ValueError, match="share no"):
        mt.weight_distance(m1, torch.nn.Linear(5, 2))


# ---------------------------------------------------------------- wrappers on a toy model
TABLE = {"bear": [1.0, 0.0, 0.0], "dog": [0.0, 1.0, 0.0], "cat": [0.0, 0.0, 1.0], "animal": [0.1, 0.1, 0.1]}


def _toy_data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n)
    x = torch.eye(3)[y] + 0.1 * torch.randn(3 * n, 3, generator=g)
    return x[:, None, None, :], y


def test_evaluate_zero_shot_toy():
    imgs, y = _toy_data()
    r = ev.evaluate_zero_shot(ev.ToyModel(TABLE), imgs, y, ["bear", "dog", "cat"], ["a {}"], forget=[1])
    assert r["forget_acc"] == 1.0 and r["retain_acc"] == 1.0
    assert r["logits"].shape == (60, 3) and r["text_sim"].shape == (3, 3)


def test_relearning_attack_recovers_forgotten_class():
    imgs, y = _toy_data()
    names = ["bear", "dog", "cat"]
    unlearned = ev.ToyModel(TABLE)
    with torch.no_grad():  # "forget" dog: its text now points at cat
        unlearned.text[1] = torch.tensor([0.0, -0.2, 1.0])
    eval_fn = lambda m: ev.evaluate_zero_shot(m, imgs, y, names, ["a {}"], forget=[1])
    assert eval_fn(unlearned)["forget_acc"] < 0.1
    caps = [f"a {names[i]}" for i in y.tolist()]
    fmask = y == 1
    retain_only = [(imgs[~fmask], [c for c, f in zip(caps, fmask) if not f])]
    with_forget = [(imgs, caps)]
    kw = dict(n_steps=60, eval_every=10, lr=0.05)
    c_retain = ev.relearning_attack(unlearned, retain_only, eval_fn, **kw)
    c_forget = ev.relearning_attack(unlearned, with_forget, eval_fn, **kw)
    assert c_forget.forget_acc.iloc[-1] > 0.9  # forget images bring dog back
    assert c_retain.forget_acc.iloc[-1] < 0.5
    assert ev.steps_to_recover(c_forget, 0.5) <= 60 and math.isnan(ev.steps_to_recover(c_retain, 0.5))
    assert eval_fn(unlearned)["forget_acc"] < 0.1  # the original is untouched


def test_hierarchy_report_lorentz_toy():
    imgs, y = _toy_data()
    m = ev.ToyModel({k: [2 * v for v in vals] for k, vals in TABLE.items()}, geometry="lorentz", curv=1.0)
    paths = {"bear": ["bear", "animal"], "dog": ["dog", "animal"], "cat": ["cat", "animal"]}
    on_ray = 3 * torch.eye(3)[y][:, None, None, :]  # images exactly on the ray of their class text, farther out
    r = ev.hierarchy_report(m, on_ray, y, ["bear", "dog", "cat"], paths, ["{}"])
    tr = r["text_radii"].set_index("concept")
    assert math.isclose(tr.loc["dog", "radius"], 2.0, rel_tol=1e-5)  # exp_map0 of a raw vector of norm 2
    assert tr.loc["animal", "level"] == 0 and tr.loc["dog", "level"] == 1 and tr.loc["animal", "radius"] < tr.loc["dog", "radius"]
    cones = r["cones"]  # exterior angle 0: inside the own cone
    assert (cones[cones.up == 0].share == 1.0).all() and set(cones[cones.up == 1].level) == {0}
    r2 = ev.hierarchy_report(m, 3 * imgs, y, ["bear", "dog", "cat"], paths, ["{}"])
    assert (r2["cones"].share <= 1.0).all() and len(r2["cones"]) == 6
    with pytest.raises(ValueError, match="Lorentz"):
        ev.hierarchy_report(ev.ToyModel(TABLE), imgs, y, ["bear", "dog", "cat"], paths, ["{}"])
    with pytest.raises(ValueError, match="no entry"):
        ev.hierarchy_report(m, imgs, y, ["bear", "dog", "cat"], {"bear": ["bear"]}, ["{}"])


def test_related_prompts_real_taxonomy_and_leakage():
    from hac.data import load_taxonomy
    tax = load_taxonomy()
    rp = ev.related_prompts(tax, "dog")
    assert rp["self"] == ["dog"] and "canine" in rp["ancestor"] and "puppy" in rp["synonym"]
    assert "dog" not in rp["sibling"] and len(rp["sibling"]) >= 1
    imgs, y = _toy_data()
    # toy model: "puppy" maps like dog, "animal" is generic
    m = ev.ToyModel(dict(TABLE, puppy=[0.0, 0.9, 0.1]))
    df = ev.prompt_leakage(m, imgs, y, 1, {"self": ["dog"], "synonym": ["puppy"], "sibling": ["cat"]}, ["a {}"])
    d = df.set_index("prompt")
    assert d.loc["dog", "auc"] == 1.0 and d.loc["puppy", "auc"] == 1.0  # leaks through the synonym
    assert d.loc["cat", "auc"] < 0.5 and d.loc["dog", "precision_at_k"] == 1.0
