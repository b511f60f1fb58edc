"""hac.train / hac.config / hac.cli: determinism, kill+resume, divergence, every method, DDP (2 gloo processes)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hac.train as T
from hac.pairs import AnimalMNISTBatches
from hac.cli import build_parser, config_from_args, main
from hac.config import TrainConfig, pretrain_config, unlearn_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# a very small model (no MiniLM load) so every run takes a few seconds
TINY = dict(text_encoder="transformer", text_width=32, text_layers=1, text_heads=2, context_length=24,
            vit_width=32, vit_depth=1, vit_heads=2, embed_dim=16)
FAST = dict(model_overrides=TINY, batch_size=16, forget_batch=8, log_every=2, probe_size=20, test_size=40,
            progress=False, threads=1, warmup=1)


def _pre(tmp=None, name="run", model="meru", **kw):
    return pretrain_config(model, **{**FAST, "steps": 4, "parent_weight": 1.0 if model == "meru" else 0.0,
                                     "out_dir": str(tmp / name) if tmp else None, **kw})


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _drop_key_bias(k, t):
    """The key third of an attention in-projection bias has an exactly zero gradient (softmax is invariant to it):
    its float noise differs between reduction orders and Adam turns any noise into a +-lr step. Compare q and v only."""
    if k.endswith(("in_proj_bias", "qkv.bias")):
        n = t.shape[0] // 3
        return torch.cat([t[:n], t[2 * n:]])
    return t


def _same_state(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(_drop_key_bias(k, a[k]), _drop_key_bias(k, b[k]), atol=atol, rtol=0, msg=k)
        else: assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory):
    "A tiny pretrained MERU and CLIP checkpoint (4 steps)."
    tmp = tmp_path_factory.mktemp("ckpt")
    return {m: T.train(_pre(tmp, m, model=m))["out_dir"] + "/model.pt" for m in ("meru", "clip")}


def test_kill_and_resume_gives_the_same_result(tmp_path, monkeypatch, tiny_ckpts):
    straight = tmp_path / "straight"
    T.train(_pre(tmp_path, "straight", ckpt_every=2))

    def kill(step, state):
        if step == 2: raise KeyboardInterrupt("simulated kill")
    monkeypatch.setattr(T, "_after_step", kill)
    with pytest.raises(KeyboardInterrupt):
        T.train(_pre(tmp_path, "killed", ckpt_every=2))
    assert (tmp_path / "killed" / "checkpoint.pt").exists() and not (tmp_path / "killed" / "model.pt").exists()
    monkeypatch.setattr(T, "_after_step", lambda step, state: None)
    with pytest.raises(ValueError, match="another config"):   # a checkpoint of another run is refused
        T.train(_pre(tmp_path, "killed", ckpt_every=2, lr=1.0))
    res = T.train(_pre(tmp_path, "killed", ckpt_every=2))
    _same_state(_state(straight / "model.pt"), _state(tmp_path / "killed" / "model.pt"))
    h1 = json.loads((straight / "history.json").read_text())
    h2 = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [r["step"] for r in h2] == [2, 4] and [r["loss"] for r in h1] == [r["loss"] for r in h2]
    # the straight run equals the fixture's run with the same config: same seed, same result
    _same_state(_state(straight / "model.pt"), _state(tiny_ckpts["meru"]))
    # outputs written
    for f in ("config.json", "history.csv", "metrics.json", "model.pt"):
        assert (straight / f).exists(), f
    assert not (straight / "checkpoint.pt").exists()          # removed once the run is complete ...
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()   # the resumed run's checkpoint (asserted above) is gone
    T.train(_pre(tmp_path, "kept", steps=1, keep_checkpoint=True))
    assert (tmp_path / "kept" / "checkpoint.pt").exists()    # ... unless asked to keep it


def test_different_seed_differs():
    "cfg.seed alone decides the run: the global RNG is set alike before both runs, so ignoring cfg.seed would fail here."
    def run(seed, global_seed):
        torch.manual_seed(global_seed)   # the same global state for both seeds; a different one for the same seed
        return T.train(_pre(steps=2, seed=seed))["model"].state_dict()["visual_proj.weight"]
    a, b, a2 = run(0, 123), run(1, 123), run(0, 456)
    assert not torch.equal(a, b)          # another cfg.seed, same global RNG: another model
    assert torch.equal(a, a2)             # the same cfg.seed, another global RNG: the same model


def test_divergence_stops_and_saves_nothing(tmp_path, monkeypatch):
    real = T.make_objective

    class NaNLoss(torch.nn.Module):
        def __init__(self, inner): super().__init__(); self.inner = inner
        def forward(self, *a, **k):
            out = self.inner(*a, **k); out["loss"] = out["loss"] * float("nan"); return out
    monkeypatch.setattr(T, "make_objective", lambda cfg, g: NaNLoss(real(cfg, g)))
    with pytest.raises(T.TrainingDiverged, match="no result was saved"):
        T.train(_pre(tmp_path, "nan"))
    assert not (tmp_path / "nan" / "model.pt").exists() and not (tmp_path / "nan" / "metrics.json").exists()


@pytest.mark.parametrize("method,model", [("hac", "meru"), ("ac", "meru"), ("ac", "clip"), ("finetune", "meru"),
                                          ("neggrad", "clip")])
def test_unlearning_methods_run_and_log_parts(tiny_ckpts, method, model):
    cfg = unlearn_config(method, tiny_ckpts[model], ["dog"], **{**FAST, "steps": 2, "log_every": 1})
    res = T.train(cfg)
    parts = {"hac": {"retain_loss", "pos_loss", "neg_loss", "ec_excl_loss", "ec_anc_loss", "nr_keep_loss", "nr_gen_loss"},
             "ac": {"retain_loss", "pos_loss", "neg_loss"},
             "finetune": {"retain_loss"}, "neggrad": {"retain_loss", "ascent_loss"}}[method]
    row = res["history"][-1]
    assert parts <= set(row), row.keys()
    assert {"probe_forget_acc", "probe_retain_acc", "logit_scale", "lr"} <= set(row)
    if model == "meru": assert {"curv", "visual_alpha", "textual_alpha", "radius_level0"} <= set(row)
    m = res["metrics"]
    assert {"forget_acc", "retain_acc", "acc"} <= set(m["before"]) and {"forget_acc", "retain_acc"} <= set(m["after"])
    if method == "hac":   # radius preservation starts at zero: at the first logged step (0) the model is its frozen copy
        first = [r for r in res["history"] if "nr_keep" in r][0]
        assert first["nr_keep"] < 1e-3


@pytest.mark.parametrize("model", ["clip", "meru"])
def test_retrain_from_scratch_without_forget_concepts(model):
    res = T.train(unlearn_config("retrain", None, ["dog"], model=model, **{**FAST, "steps": 2, "log_every": 1}))
    assert res["model"].geometry == ("euclidean" if model == "clip" else "lorentz")
    assert {"forget_acc", "retain_acc"} <= set(res["metrics"]["after"])
    if model == "meru": assert "parent_loss" in res["history"][-1]


def test_hac_refuses_clip(tiny_ckpts):
    with pytest.raises(ValueError, match="MERU"):
        T.train(unlearn_config("hac", tiny_ckpts["clip"], ["dog"], **{**FAST, "steps": 1}))


def test_draws_respect_forget_retain():
    for method in ("retrain", "hac"):
        task = AnimalMNISTBatches(["dog"], method=method, batch_size=64, forget_batch=32)
        dog = task.classes.index("dog")
        fc = set(task.forget_concepts.tolist())
        assert {task.concepts[i] for i in fc} == {"dog", "canine"}
        for step in range(3):
            b = task.draw(step)
            assert (b["cls_r"] != dog).all() and not (set(b["con_r"].tolist()) & fc)
            assert all(task.truth[c, k] for c, k in zip(b["cls_r"], b["con_r"]))   # captions are true
            if method == "hac":
                assert (b["cls_f"] == dog).all() and set(b["con_f"].tolist()) <= fc
                assert set(b["con_alt"].tolist()) <= set(task.leaf[task.retain_classes].tolist())
                assert len(b["cap_f"]) == len(b["cap_alt"]) == b["img_f"].shape[0] == 32
    # deterministic per (seed, step); pretraining ignores the forget set
    b1 = AnimalMNISTBatches(method="pretrain", batch_size=32).draw(5)
    b2 = AnimalMNISTBatches(["dog"], method="pretrain", batch_size=32).draw(5)
    assert torch.equal(b1["img_r"], b2["img_r"]) and b1["cap_r"] == b2["cap_r"]


def test_bf16_precision_runs(tmp_path):
    res = T.train(_pre(steps=2, precision="bf16"))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in res["history"])


def test_cli_unlearn_prints_before_after(tiny_ckpts, capsys, tmp_path):
    rc = main(["unlearn", "--model", tiny_ckpts["meru"], "--forget", "dog", "--method", "hac", "--steps", "2",
               "--batch-size", "16", "--forget-batch", "8", "--threads", "1", "--quiet", "--out", str(tmp_path / "u"),
               "--set", "probe_size=20", "test_size=40", "log_every=1", f"model_overrides={json.dumps(TINY)}"])
    out = capsys.readouterr().out
    assert rc == 0 and "forget acc" in out and "retain acc" in out and "before" in out
    assert (tmp_path / "u" / "metrics.json").exists()
    rc = main(["unlearn", "--model", tiny_ckpts["meru"], "--forget", "unicorn", "--steps", "1", "--quiet"])
    assert rc == 2 and "unknown concept" in capsys.readouterr().err
    rc = main(["unlearn", "--model", str(tmp_path / "missing.pt"), "--forget", "dog", "--steps", "1", "--quiet"])
    assert rc == 2 and "missing.pt" in capsys.readouterr().err


def test_cli_config_round_trip(tiny_ckpts, tmp_path):
    "The config.json a real run writes (with hac_version, world_size, git_commit beside the fields) loads back and drives the CLI."
    cfg = unlearn_config("ac", tiny_ckpts["clip"], ["dog", "cat"], beta=3.0,
                         **{**FAST, "steps": 2, "log_every": 1, "out_dir": str(tmp_path / "run")})
    T.train(cfg)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {"hac_version", "world_size", "git_commit"} <= set(written)       # the run's provenance is in the file ...
    assert written["model"] == "meru" and written["architecture"] == "clip"  # the model actually trained, not the scratch default
    assert TrainConfig.load(tmp_path / "run" / "config.json") == cfg         # ... and the config loads back unchanged
    args = build_parser().parse_args(["unlearn", "--model", "m.pt", "--forget", "dog", "--config", str(tmp_path / "run" / "config.json")])
    assert config_from_args(args) == cfg


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_ddp_two_gloo_processes_match_one(tmp_path):
    """torchrun, 2 CPU processes, gloo: the same global batch gives the same model as one process."""
    args = ["pretrain", "--model", "meru", "--steps", "3", "--batch-size", "16", "--threads", "1", "--quiet",
            "--set", "probe_size=20", "test_size=40", "log_every=3", "warmup=1", "parent_weight=1.0",
            f"model_overrides={json.dumps(TINY)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), "-m", "hac.cli", *args, "--out", str(tmp_path / "ddp")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    _same_state(_state(tmp_path / "ddp" / "model.pt"), _state(tmp_path / "one" / "model.pt"), atol=2e-5)
    h2 = json.loads((tmp_path / "ddp" / "history.json").read_text())
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    assert h1[-1]["loss"] == pytest.approx(h2[-1]["loss"], rel=1e-4)


def test_cli_hac_terms_act_and_change_the_result(tiny_ckpts, tmp_path):
    "Issue 12: `hac unlearn --method hac` logs non-zero entailment-calibration and norm terms, and its model differs"
    " from the same run with both terms off."
    from hac.cli import main
    common = ["--model", tiny_ckpts["meru"], "--forget", "dog", "--steps", "3", "--batch-size", "16", "--forget-batch", "8",
              "--threads", "1", "--quiet", "--set", "log_every=1", "probe_size=20", "test_size=40", "warmup=1", "heldout=false"]
    main(["unlearn", "--method", "hac", "--out", str(tmp_path / "hac"), *common])
    main(["unlearn", "--method", "hac", "--ent", "0", "--norm", "0", "--out", str(tmp_path / "off"), *common])
    hist = json.loads((tmp_path / "hac" / "history.json").read_text())
    rows = [r for r in hist if r["step"] > 0]
    assert max(r["ec"] for r in rows) > 0 and max(r["nr"] for r in rows) > 0, rows
    for k in ("ec_excl", "ec_anc", "nr_keep", "nr_gen"): assert k in rows[-1], rows[-1].keys()
    off = json.loads((tmp_path / "off" / "history.json").read_text())
    assert "ec" not in off[-1] and "nr" not in off[-1]
    a, b = _state(tmp_path / "hac" / "model.pt"), _state(tmp_path / "off" / "model.pt")
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point()), "HAC's terms changed no weight"


def test_ddp_on_real_pairs_matches_one_process(tiny_ckpts, real_world, tmp_path):
    """torchrun, 2 gloo processes, HAC on captioned pairs (PairBatches, FolderEval): the same model as one process."""
    from PIL import Image
    gray = tmp_path / "gray"
    for k, cls in enumerate(["beagle", "pug", "tabby_cat", "sorrel"]):   # a 28 px grayscale folder for the tiny MERU
        (gray / cls).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), 60 * k, np.uint8), "L").save(gray / cls / "0.png")
    w = real_world
    args = ["unlearn", "--model", tiny_ckpts["meru"], "--method", "hac", "--forget", "dog", "--data", str(w["csv"]),
            "--eval-images", str(gray), "--classnames", str(w["names"]), "--concept-classes", str(w["concepts"]),
            "--keywords", "dog=beagle", "--steps", "2", "--batch-size", "4", "--forget-batch", "2", "--threads", "1",
            "--device", "cpu", "--quiet", "--set", "log_every=1", "probe_size=4", "warmup=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(_free_port()), "-m", "hac.cli", *args, "--out", str(tmp_path / "ddp")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["sources"]["forget_pairs"] == 4
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    _same_state(_state(tmp_path / "ddp" / "model.pt"), _state(tmp_path / "one" / "model.pt"), atol=2e-5)
    h2 = json.loads((tmp_path / "ddp" / "history.json").read_text())
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    assert [r["step"] for r in h1] == [r["step"] for r in h2] == [0, 1, 2]
    assert h1[-1]["loss"] == pytest.approx(h2[-1]["loss"], rel=1e-4) and h1[-1]["ec"] > 0
