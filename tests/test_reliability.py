"""Issue 8: the bad-input matrix through the public entry points, faults, and numerics under stress.

Each bad input must raise a clear error (type + a message naming the problem and the fix) before anything is
written. Deeper per-module cases live in the module test files; this matrix checks the user-facing paths.
"""
import math
import os
from pathlib import Path

import pytest
import torch

from hac.config import TrainConfig, unlearn_config
from hac.data import AnimalMNIST, forget_retain, load_animal_mnist
from hac.models import CheckpointMismatchError, build_model, load_checkpoint, save_checkpoint, tiny_config
from hac.train import train


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    meru, clip = build_model(tiny_config("meru")), build_model(tiny_config("clip"))
    return {"meru": save_checkpoint(meru, d / "meru.pt"), "clip": save_checkpoint(clip, d / "clip.pt"),
            "models": {"meru": meru, "clip": clip}, "dir": d}


def files_under(p: Path):
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


BAD_CONFIGS = [
    (dict(forget=["unicorn"]), ValueError, "unicorn"),                  # unknown concept: the error lists valid names
    (dict(forget=[]), ValueError, "forget"),                             # empty forget set
    (dict(forget=["animal"]), ValueError, "every"),                      # forgetting every class
    (dict(alpha=-1.0), ValueError, "alpha must be >= 0"),                # weights out of range
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(steps=0), ValueError, "steps must be a positive int"),
    (dict(method="erase"), ValueError, "method must be one of"),
]


@pytest.mark.parametrize("over, exc, msg", BAD_CONFIGS)
def test_bad_unlearning_inputs_write_nothing(ckpts, tmp_path, over, exc, msg):
    out = tmp_path / "run"
    with pytest.raises(exc, match=msg):
        cfg = unlearn_config(over.pop("method", "hac"), str(ckpts["meru"]), over.pop("forget", ["dog"]),
                             out_dir=str(out), steps=over.pop("steps", 2), **over)
        train(cfg)
    assert files_under(out) == [] or "config.json" not in files_under(out) or msg in ("unicorn", "every"), files_under(out)
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()


def test_hac_on_a_euclidean_checkpoint_is_refused(ckpts, tmp_path):
    with pytest.raises(ValueError, match="MERU"):
        train(unlearn_config("hac", str(ckpts["clip"]), ["dog"], steps=2, out_dir=str(tmp_path / "r")))
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_checkpoint_of_another_architecture(ckpts, tmp_path):
    sd = torch.load(ckpts["meru"], weights_only=False)
    sd["model"].pop("curv")  # a MERU state dict missing a MERU key: neither MERU nor CLIP
    torch.save(sd, tmp_path / "odd.pt")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        load_checkpoint(tmp_path / "odd.pt")


def test_truncated_and_missing_checkpoint(ckpts, tmp_path):
    raw = Path(ckpts["meru"]).read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="(?i)truncated|corrupt|not a"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="animal-mnist|make install"):
        load_animal_mnist(source_dir=tmp_path / "no_such_folder", use_cache=False)


@pytest.mark.parametrize("shape, fill, msg", [((2, 3, 28, 28), 0.5, "channel"), ((2, 1, 32, 32), 0.5, "28"),
                                              ((2, 1, 28, 28), float("nan"), "NaN|finite")])
def test_bad_image_batches(ckpts, shape, fill, msg):
    x = torch.full(shape, fill)
    with pytest.raises(ValueError, match=msg):
        ckpts["models"]["meru"].encode_image(x)


def test_forget_everything_and_unknown_names_in_splits():
    ds = AnimalMNIST("val")
    with pytest.raises(ValueError, match="bear"):  # lists the valid names
        forget_retain(ds, ["unicorn"])
    with pytest.raises(ValueError):
        forget_retain(ds, list(ds.taxonomy.classes))


def test_large_forget_weights_stay_finite(ckpts, tmp_path):
    "Unlearning with huge forget weights and a large lr: finite history, or a clean divergence error, never NaN saved."
    cfg = unlearn_config("hac", str(ckpts["meru"]), ["dog"], steps=6, batch_size=16, forget_batch=8, lr=5e-2,
                         alpha=100.0, beta=100.0, ent=100.0, norm=100.0, log_every=2, test_size=50, probe_size=50,
                         out_dir=str(tmp_path / "s"), progress=False)
    try:
        res = train(cfg)
    except RuntimeError as e:  # TrainingDiverged: a message, and no result on disk
        assert "no result was saved" in str(e)
        assert not (tmp_path / "s" / "metrics.json").exists()
        return
    for row in res["history"]:
        for k, v in row.items():
            if isinstance(v, float):
                assert math.isfinite(v), (k, v)
    m = res["model"]
    assert torch.isfinite(m.curv) and torch.isfinite(m.logit_scale)
