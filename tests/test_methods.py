"""hac.methods: CLIPErase, DELETE, DIET, SalUn and SLUG run through hac.train and `hac unlearn --method` on a tiny CLIP
and MERU; SalUn and SLUG make a fresh concept's forget accuracy fall (SalUn's unmasked weights stay put, SLUG changes
one tensor); their constants are TrainConfig fields; adding them changed no existing run's config or cache key;
numerical sweeps."""
import dataclasses
import inspect
import json
import os
from dataclasses import fields

import numpy as np
import pytest
import torch

import hac.train as T
from hac.cli import main
from hac.config import METHODS, TrainConfig, pretrain_config, unlearn_config
from hac.experiments import _key
from hac.lorentz import exp_map0
from hac.losses import PretrainLoss, toy_batch
from hac.checkpoints import load_checkpoint
from hac.methods import (BALL_MARGIN, BENCHMARK_METHODS, CLIPErase, DELETE, DIET, NEEDS_FROZEN, SLUG, SalUn, ball_coords,
                         bisect_step, busemann, ideal_prototypes, saliency_mask, sinkhorn)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# a very small model (no MiniLM load), as tests/test_train.py builds its checkpoints
TINY = dict(text_encoder="transformer", text_width=32, text_layers=1, text_heads=2, context_length=24,
            vit_width=32, vit_depth=1, vit_heads=2, embed_dim=16)
PARTS = {"cliperase": {"rm_loss", "fm_loss", "cm_loss"}, "delete": {"kd_loss", "true_prob"},
         "diet": {"hyp_loss", "ot_loss", "rep_loss"}, "salun": {"retain_loss", "rl_loss", "true_prob"},
         "slug": {"slug_rel", "slug_step", "slug_evals"}}
BENCH_PREFIXES = ("cliperase_", "diet_", "salun_", "slug_")


def _pretrain_tiny(folder, model: str, **kw) -> dict:
    "hac.train.train of a tiny `model` ('meru' | 'clip') pretraining into `folder` (one thread, no progress bar)."
    return T.train(pretrain_config(model, model_overrides=TINY, progress=False, threads=1, out_dir=str(folder), **kw))


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    "A tiny pretrained MERU and CLIP checkpoint (4 steps)."
    tmp = tmp_path_factory.mktemp("ckpt")
    return {m: _pretrain_tiny(tmp / m, m, steps=4, batch_size=16, log_every=2, probe_size=20, test_size=40, warmup=1,
                              parent_weight=1.0 if m == "meru" else 0.0)["out_dir"] + "/model.pt" for m in ("meru", "clip")}


@pytest.mark.parametrize("model", ["clip", "meru"])
@pytest.mark.parametrize("method", BENCHMARK_METHODS)
def test_each_method_trains_three_steps(tiny_ckpts, tmp_path, method, model):
    cfg = unlearn_config(method, tiny_ckpts[model], ["dog"], steps=3, batch_size=16, forget_batch=8, probe_size=50,
                         test_size=100, threads=1, progress=False, out_dir=str(tmp_path / "run"))
    res = T.train(cfg)
    assert (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "model.pt").exists()
    last = res["history"][-1]
    assert last["step"] == (1 if method == "slug" else 3) and PARTS[method] <= set(last), last   # SLUG: one update
    assert method == "slug" or np.isfinite(last["loss"]), last
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"forget_acc", "retain_acc"} <= set(m["before"]) and {"forget_acc", "retain_acc"} <= set(m["after"])
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["method"] == method and written["architecture"] == model
    bench = {f.name for f in fields(TrainConfig) if f.name.startswith(BENCH_PREFIXES)}
    own = {n for n in bench if n.startswith(method + "_")}
    assert set(written) & bench == own   # its own constants are recorded, other methods' (at their defaults) are not


@pytest.mark.parametrize("model", ["clip", "meru"])
@pytest.mark.parametrize("method", BENCHMARK_METHODS)
def test_cli_unlearn_method(tiny_ckpts, tmp_path, capsys, method, model):
    rc = main(["unlearn", "--model", tiny_ckpts[model], "--forget", "dog", "--method", method, "--steps", "2",
               "--batch-size", "16", "--forget-batch", "8", "--threads", "1", "--quiet", "--out", str(tmp_path / "u"),
               "--set", "probe_size=20", "test_size=40", "log_every=1"])
    out = capsys.readouterr().out
    assert rc == 0 and f"{method} ({'1 update of' if method == 'slug' else '2 steps'}" in out and "forget acc" in out, out
    assert (tmp_path / "u" / "metrics.json").exists() and (tmp_path / "u" / "model.pt").exists()
    assert json.loads((tmp_path / "u" / "config.json").read_text())["method"] == method


def test_frozen_copy_only_where_read(tiny_ckpts):
    for method in METHODS[2:]:
        cfg = unlearn_config(method, tiny_ckpts["clip"], ["dog"])
        frozen = T._build(cfg, "cpu")[1]
        assert (frozen is not None) == (method in NEEDS_FROZEN + ("hac",)), method


def test_existing_configs_and_cache_keys_unchanged():
    """The benchmark fields stay out of other methods' to_dict at their defaults: the keys hashed before they existed."""
    assert _key(unlearn_config("hac", "m.pt", ["dog"])) == "7fc43e0a29cb"
    assert _key(pretrain_config("clip")) == "2e536eccc1f4"
    assert _key(unlearn_config("ac", "m.pt", ["dog"], beta=3.0)) == "788bdc0f9e2a"
    cfg = unlearn_config("diet", "m.pt", ["dog"], cliperase_fm=1.0)
    d = cfg.to_dict()
    assert d["diet_hyp"] == 30.0 and d["cliperase_fm"] == 1.0 and "cliperase_cm" not in d
    assert TrainConfig.from_dict(d) == cfg


def test_weight_names_are_trainconfig_fields_and_reach_the_objective():
    names = {f.name for f in fields(TrainConfig)}
    for cls in (CLIPErase, DELETE, DIET, SalUn, SLUG):
        kws = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "pretrain", "geometry")]
        assert set(kws) <= names, (cls.__name__, set(kws) - names)
    kw = dict(cliperase_fm=0.5, cliperase_cm=0.25, retain_weight=0.7, diet_hyp=3.0, diet_ot=0.5, diet_rep=2.0,
              diet_margin=0.3, diet_sinkhorn_eps=0.1, diet_proto_eps=2e-3, diet_clip_r=0.8, salun_sparsity=0.3,
              salun_mask_batches=2)
    for method in BENCHMARK_METHODS:
        obj = T.make_objective(unlearn_config(method, "m.pt", ["dog"], **kw), "lorentz")
        for k in inspect.signature(type(obj).__init__).parameters:
            if k in kw: assert getattr(obj, k) == kw[k], (method, k)
    # the published constants are the defaults, in the classes and in TrainConfig
    cfg = TrainConfig()
    assert (cfg.retain_weight, cfg.cliperase_fm, cfg.cliperase_cm) == (1.0, 3.0, 3.0)
    assert (cfg.diet_hyp, cfg.diet_ot, cfg.diet_rep, cfg.diet_margin, cfg.diet_sinkhorn_eps) == (30.0, 1.0, 20.0, 1.0, 0.5)
    assert cfg.salun_sparsity == 0.5 and cfg.slug_target == 0.1   # SalUn's 50 % mask; SLUG's target: chance for 10 classes


@pytest.mark.parametrize("bad,msg", [(dict(cliperase_fm=-1.0), "cliperase_fm must be >= 0"),
                                     (dict(diet_rep=float("nan")), "diet_rep must be >= 0"),
                                     (dict(diet_sinkhorn_eps=0.0), "diet_sinkhorn_eps must be > 0"),
                                     (dict(diet_clip_r=-1.0), "diet_clip_r must be > 0"),
                                     (dict(diet_proto_eps=BALL_MARGIN), "diet_proto_eps must be in"),
                                     (dict(salun_sparsity=1.0), "salun_sparsity must be in"),
                                     (dict(slug_target=1.5), "slug_target must be in"),
                                     (dict(slug_max_rel=0.0), "slug_max_rel must be > 0"),
                                     (dict(slug_batches=0), "slug_batches must be a positive int"),
                                     (dict(method="scrub"), "method must be one of")])
def test_config_validation(bad, msg):
    with pytest.raises(ValueError, match=msg): TrainConfig(**{**dict(method="diet", model_path="m.pt", forget=["dog"]), **bad})


def test_clear_errors_for_missing_inputs():
    b = toy_batch()
    with pytest.raises(ValueError, match=r"DELETE needs batch key\(s\) \['img_f0'"):
        DELETE("euclidean")({**b, "img_f0": None})
    with pytest.raises(ValueError, match=r"CLIPErase \(L_CM\) needs batch key\(s\) \['scale0'\]"):
        CLIPErase(PretrainLoss("euclidean"))({**b, "scale0": None})
    with pytest.raises(ValueError, match=r"DIET needs batch key\(s\) \['head', 'head_forget'\]"):
        DIET("lorentz")({**b, "head": None, "head_forget": None})
    with pytest.raises(ValueError, match="at least one retained class"):
        DIET("lorentz")({**b, "head_forget": torch.tensor([True, True])})
    with pytest.raises(ValueError, match="whole head"):   # forgetting "animal" masks every class: nothing to distil
        DELETE("euclidean")({**b, "leaf_f": torch.full((4,), 3)})


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dim", [2, 8, 64])
def test_busemann_against_numpy(seed, dim):
    g = torch.Generator().manual_seed(seed)
    z = F_normalize(torch.randn(9, dim, generator=g, dtype=torch.float64)) * torch.rand(9, 1, generator=g, dtype=torch.float64) * 0.99
    p = ideal_prototypes(torch.randn(4, dim, generator=g, dtype=torch.float64))
    Z, P = z.numpy(), p.numpy()
    ref = np.log(((P[None] - Z[:, None]) ** 2).sum(-1) / (1 - (Z ** 2).sum(-1))[:, None])
    np.testing.assert_allclose(busemann(z, p).numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(busemann(z.float(), p.float()).numpy(), ref, rtol=0, atol=2e-4)   # float32


def F_normalize(x): return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [0.25, 0.5, 5.0])   # DIET: 0.5 on Busemann costs of a few units
def test_sinkhorn_marginals(seed, eps):
    g = torch.Generator().manual_seed(seed)
    n, m = int(torch.randint(1, 12, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
    C = 4 * torch.randn(n, m, generator=g, dtype=torch.float64)
    a, b = torch.rand(n, generator=g, dtype=torch.float64) + 0.05, torch.rand(m, generator=g, dtype=torch.float64) + 0.05
    a, b = a / a.sum(), b / b.sum()
    P = sinkhorn(C, a, b, eps=eps)
    assert (P >= 0).all()
    np.testing.assert_allclose(P.sum(1).numpy(), a.numpy(), atol=1e-6)
    np.testing.assert_allclose(P.sum(0).numpy(), b.numpy(), atol=1e-6)


@pytest.mark.parametrize("curv", [0.1, 1.0, 10.0])
def test_ball_coords_stay_inside_and_keep_the_radius_order(curv):
    g = torch.Generator().manual_seed(0)
    v = F_normalize(torch.randn(32, 8, generator=g)) * torch.logspace(-3, 2, 32)[:, None]   # growing norms
    for geo in ("euclidean", "lorentz"):
        x = v if geo == "euclidean" else exp_map0(v, curv=curv)
        z = ball_coords(x, geometry=geo, curv=curv, clip_r=1.0)
        r = z.norm(dim=-1)
        assert torch.isfinite(z).all() and (r <= 1 - BALL_MARGIN + 1e-6).all()
        assert (r.diff() >= -1e-6).all()   # farther inputs stay at least as far out


# --- SalUn and SLUG on a tiny model that has learned something: a 4-step model predicts one class for every image (and
# a collapsed MERU gives SLUG's bounded forget loss no gradient), so these tests pretrain 60 steps of leaf captions
LEARNED = dict(steps=60, batch_size=64, warmup=5, leaf_share=1.0, entail_weight=0.0, parent_weight=0.0)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    "{model: (checkpoint, the concept to forget)}: the non-dog class the tiny model recognizes best (the other tests forget dog)."
    tmp = tmp_path_factory.mktemp("learned")
    out = {}
    for m in ("meru", "clip"):
        pc = _pretrain_tiny(tmp / m, m, log_every=60, probe_size=20, test_size=100, **LEARNED)["metrics"]["after"]["per_class"]
        concept = max((k for k in pc if k != "dog"), key=lambda k: (pc[k], k))
        assert pc[concept] >= 0.5, pc   # a concept the model knows, so that forgetting it can show
        out[m] = (str(tmp / m / "model.pt"), concept)
    return out


def _params(model): return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("model", ["clip", "meru"])
def test_salun_forgets_and_moves_only_salient_weights(learned, tmp_path, model):
    ckpt, concept = learned[model]
    start = load_checkpoint(ckpt)
    p0, trainable = _params(start), {n for n, p in start.named_parameters() if p.requires_grad}
    cfg = unlearn_config("salun", ckpt, [concept], steps=3, lr=5e-3, batch_size=16, forget_batch=8, salun_mask_batches=2,
                         probe_size=20, test_size=100, log_every=1, threads=1, progress=False, out_dir=str(tmp_path / "s"))
    res = T.train(cfg)
    assert (tmp_path / "s" / "metrics.json").exists() and (tmp_path / "s" / "model.pt").exists()
    m = res["metrics"]
    assert m["after"]["forget_acc"] <= 0.5 * m["before"]["forget_acc"], (concept, m["before"]["forget_acc"], m["after"]["forget_acc"])
    # the mask, recomputed from the same start: every entry outside it is bit-identical after the run (decay included)
    obj = T._setup(dataclasses.replace(cfg, out_dir=None), None, None, load_checkpoint(ckpt), None)[3]
    p1 = _params(res["model"])
    outside = moved = 0
    for n in trainable:
        keep = obj.grad_mask[n]
        assert torch.equal(p1[n][~keep], p0[n][~keep]), n
        outside += int((~keep).sum()); moved += int((p1[n][keep] != p0[n][keep]).sum())
    n_all = sum(p0[n].numel() for n in trainable)
    assert moved > 0 and outside == n_all - round(0.5 * n_all)   # the mask holds round(N / 2) entries
    assert all(torch.equal(p1[n], p0[n]) for n in p0 if n not in trainable)


@pytest.mark.parametrize("model", ["clip", "meru"])
def test_slug_forgets_by_one_tensor(learned, tmp_path, model):
    ckpt, concept = learned[model]
    p0 = _params(load_checkpoint(ckpt))
    cfg = unlearn_config("slug", ckpt, [concept], batch_size=16, forget_batch=8, slug_batches=2, probe_size=20,
                         test_size=100, threads=1, progress=False, out_dir=str(tmp_path / "g"))
    res = T.train(cfg)
    for f in ("metrics.json", "model.pt", "config.json", "history.json"): assert (tmp_path / "g" / f).exists(), f
    m, sl = res["metrics"], res["metrics"]["slug"]
    assert sl["reached"] and sl["acc"] <= cfg.slug_target and sl["evals"] == 1 + cfg.slug_bisect, sl
    assert m["after"]["forget_acc"] <= 0.5 * m["before"]["forget_acc"], (concept, m["before"], m["after"])
    changed = [n for n, p in res["model"].named_parameters() if not torch.equal(p.detach(), p0[n])]
    assert changed == [sl["layer"]] and sl["layer"] in sl["front"] and sl["layer"].endswith(".weight")
    assert sl["grad_evals"] == 2 * cfg.slug_batches and m["steps"] == 1
    assert [r["step"] for r in res["history"]] == [0, 1] and res["history"][-1]["probe_forget_acc"] <= cfg.slug_target
    # the written model is the stepped one
    w = _params(load_checkpoint(tmp_path / "g" / "model.pt"))
    assert torch.equal(w[sl["layer"]], res["model"].get_parameter(sl["layer"]).detach())


def test_salun_without_a_zero_shot_head_fails_before_writing(tiny_ckpts, tmp_path, monkeypatch):
    cfg = unlearn_config("salun", tiny_ckpts["clip"], ["dog"], steps=2, batch_size=16, forget_batch=8, probe_size=20,
                         test_size=40, threads=1, progress=False, out_dir=str(tmp_path / "nohead"))
    monkeypatch.setattr(T, "_head_keys", lambda run: {})   # a data source without a class list: no zero-shot head
    with pytest.raises(ValueError, match=r"SalUn needs batch key\(s\) \['head'\].*class list"):
        T.train(cfg)
    assert not (tmp_path / "nohead").exists() or not any((tmp_path / "nohead").iterdir())


def test_slug_search_and_mask_properties():
    # bisection: monotone accuracies give the smallest step within hi / 2^steps; the published 50 % mask
    for thr in (0.05, 0.31, 0.77):
        acc = lambda r: 1.0 if r < thr else 0.0
        res = bisect_step(acc, target=0.1, hi=1.0, steps=12)
        assert thr <= res["rel"] <= thr + 2 ** -12 and res["reached"] and len(res["trace"]) == 13
    g = torch.Generator().manual_seed(0)
    grads = {"a": torch.randn(300, generator=g), "b": torch.randn(7, 11, generator=g)}
    m = saliency_mask(grads)
    assert sum(int(v.sum()) for v in m.values()) == round(0.5 * 377)


def test_cli_says_what_salun_lacks(tiny_ckpts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(T, "_head_keys", lambda run: {})   # as above: no zero-shot head in the data
    rc = main(["unlearn", "--model", tiny_ckpts["clip"], "--forget", "dog", "--method", "salun", "--steps", "2",
               "--batch-size", "16", "--forget-batch", "8", "--threads", "1", "--quiet", "--out", str(tmp_path / "u"),
               "--set", "probe_size=20", "test_size=40"])
    err = capsys.readouterr().err
    assert rc == 2 and "SalUn needs batch key(s) ['head']" in err and "class list" in err, err
    assert not (tmp_path / "u" / "metrics.json").exists()
