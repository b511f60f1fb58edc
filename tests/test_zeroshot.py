"""Tests of `hac eval` (hac.zeroshot through hac.cli.main): a MERU ViT-S checkpoint in the released layout (random
init) on a 224 px RGB image folder; metrics.json contents, the forget/retain split, the streamed predictions against
a direct computation, and the clear errors (nothing written)."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from hac.cli import main
from hac.metrics import confusion_matrix
from hac.models import MERU, build_model, full_config
from hac.checkpoints import load_checkpoint
from hac.zeroshot import ZeroShotFolder, confusion_dense, load_classnames, load_concepts
from hac.evaluators import evaluate_folder, read_metrics
from hac.checkpoints import parse_model_spec

torch.set_num_threads(1)
NAMES = ["beagle", "pug", "tabby cat"]          # folder order (sorted): beagle, pug, tabby_cat
TEMPLATES = ["a photo of a {}.", "a {} in a video game."]


def _folder(root, classes, n, side, mode, seed=0):
    rng = np.random.default_rng(seed)
    for k in classes:
        (root / k).mkdir(parents=True)
        for i in range(n):
            shape = (side, side) if mode == "L" else (side, side, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / k / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory, vit_s_checkpoints):
    t = tmp_path_factory.mktemp("zs")
    ckpt = vit_s_checkpoints["meru_vit_s"]   # MERU's released layout (conftest)
    (t / "names.txt").write_text("\n".join(NAMES) + "\n")
    (t / "concepts.json").write_text(json.dumps({"dog": ["beagle", "pug"], "cat": [2]}))
    (t / "templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return dict(t=t, ckpt=ckpt, rgb=_folder(t / "rgb224", ["beagle", "pug", "tabby_cat"], 2, 224, "RGB"),
                gray=_folder(t / "gray28", ["beagle", "pug", "tabby_cat"], 1, 28, "L"))


def _eval(env, *extra, out="o"):
    return main(["eval", "--model", str(env["ckpt"]), "--eval-images", str(env["rgb"]), "--classnames",
                 str(env["t"] / "names.txt"), "--concept-classes", str(env["t"] / "concepts.json"), "--templates",
                 str(env["t"] / "templates.txt"), "--device", "cpu", "--batch-size", "4", "--quiet",
                 "--out", str(env["t"] / out), *extra])


def test_eval_writes_metrics_and_matches_direct_scoring(env, capsys):
    assert _eval(env, "--forget", "dog", out="run1") == 0
    assert "forget" in capsys.readouterr().out
    m = json.loads((env["t"] / "run1" / "metrics.json").read_text())
    assert m["model_kind"] == "meru" and m["class_match"] == "name" and m["precision"] == "fp32"
    assert (m["n_images"], m["n_classes"], m["n_folders"], m["n_templates"]) == (6, 3, 3, 2)
    assert m["forget_classes"] == [0, 1] and (m["n_forget"], m["n_retain"]) == (4, 2)
    for k in ("acc", "forget_acc", "retain_acc", "acc5", "forget_mean_class", "retain_mean_class"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["acc5"] == 1.0   # 3 classes: the label is always among the top 5
    assert m["acc"] == pytest.approx((4 * m["forget_acc"] + 2 * m["retain_acc"]) / 6, abs=1e-12)
    assert read_metrics(env["t"] / "run1") == m   # written with the current names
    assert [(c["name"], c["n"]) for c in m["per_class"]] == [("beagle", 2), ("pug", 2), ("tabby cat", 2)]
    cm = confusion_dense(m["confusion"], 3)
    assert cm.sum(1).tolist() == [2, 2, 2]
    assert m["image_check"]["modes"] == {"RGB": 6} and not m["image_check"]["upscaled"]
    # the streamed predictions are those of scoring the folder in one batch with the loaded model
    model = load_checkpoint(env["ckpt"]).eval()
    assert isinstance(model, MERU)
    ds = ZeroShotFolder(env["rgb"], model, NAMES)
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        pred = model.zero_shot_logits(x, model.class_prototypes(NAMES, TEMPLATES)).argmax(1)
    assert torch.equal(cm, confusion_matrix(ds.labels, pred, n_classes=3))
    # a finished run is never overwritten silently
    mtime = (env["t"] / "run1" / "metrics.json").stat().st_mtime_ns
    assert _eval(env, out="run1") == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (env["t"] / "run1" / "metrics.json").stat().st_mtime_ns == mtime


def test_eval_without_forget_and_with_overwrite(env, capsys):
    assert _eval(env, out="run2") == 0
    m = json.loads((env["t"] / "run2" / "metrics.json").read_text())
    assert m["forget"] == [] and m["forget_acc"] is None and m["n_retain"] == 6   # NaN is written as null
    assert _eval(env, "--forget", "cat", "--overwrite", out="run2") == 0
    m = json.loads((env["t"] / "run2" / "metrics.json").read_text())
    assert m["forget_classes"] == [2] and (m["n_forget"], m["n_retain"]) == (2, 4)


@pytest.mark.parametrize("case", ["gray_for_rgb_model", "missing_folder", "count_mismatch", "unknown_concept",
                                  "empty_forget_split", "released_not_cached", "open_clip_unknown", "cuda_missing"])
def test_eval_errors_write_nothing(env, capsys, case):
    t = env["t"]
    base = ["eval", "--model", str(env["ckpt"]), "--eval-images", str(env["rgb"]), "--device", "cpu",
            "--templates", str(t / "templates.txt"), "--quiet", "--out", str(t / f"bad_{case}")]
    (t / "four.txt").write_text("a\nb\nc\nd\n")
    args, expect = {
        "gray_for_rgb_model": (["--eval-images", str(env["gray"])],
                               ["1-channel grayscale", "28x28", "3-channel RGB 224x224 images (MERU"]),
        "missing_folder": (["--eval-images", str(t / "nowhere")], ["image folder", "not found"]),
        "count_mismatch": (["--classnames", str(t / "four.txt")], ["3 class folders but 4 class names"]),
        "unknown_concept": (["--classnames", str(t / "names.txt"), "--concept-classes", str(t / "concepts.json"),
                             "--forget", "unicorn"], ["unknown concept 'unicorn'", "[dog, cat]"]),
        "empty_forget_split": (["--classnames", "imagenet", "--forget", "pizza"],
                               ["forget concept(s) ['pizza']", "forget split would be empty"]),
        "released_not_cached": (["--model", "clip_vit_s", "--cache-dir", str(t / "cache")],
                                ["clip_vit_s.pth not found", "--download"]),
        "open_clip_unknown": (["--model", "open_clip:NoSuchArch@openai"], ["unknown open_clip architecture 'NoSuchArch'"]),
        "cuda_missing": (["--device", "cuda"], ["no CUDA device"]),
    }[case]
    if case == "cuda_missing" and torch.cuda.is_available(): pytest.skip("a GPU is visible")
    assert main(base + args) == 2
    err = " ".join(capsys.readouterr().err.split())
    for s in expect: assert s in err, (s, err)
    assert not (t / f"bad_{case}").exists()
    assert not (t / "cache").exists()


def test_read_metrics_of_an_older_run(tmp_path):
    "A metrics.json written before the metric names were unified reads with the current names."
    old = {"model": "x.pt", "overall_top1": 0.5, "forget_top1": None, "retain_top1": 0.5, "top5": 1.0,
           "forget_mean_class": None, "n_forget": 0, "per_class": [{"index": 0, "name": "pug", "n": 2, "top1": 0.5}]}
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    m = read_metrics(tmp_path)
    assert m == read_metrics(tmp_path / "metrics.json")
    assert (m["acc"], m["forget_acc"], m["retain_acc"], m["acc5"]) == (0.5, None, 0.5, 1.0)
    assert not {"overall_top1", "forget_top1", "retain_top1", "top5"} & set(m)
    assert m["per_class"] == [{"index": 0, "name": "pug", "n": 2, "acc": 0.5}]


def test_parsing_and_assets():
    assert parse_model_spec("open_clip:ViT-B-16@laion2b_s34b_b88k") == ("open_clip", {"arch": "ViT-B-16",
                                                                                     "pretrained": "laion2b_s34b_b88k"})
    assert parse_model_spec("meru_vit_l") == ("released", {"name": "meru_vit_l"})
    assert parse_model_spec("x/model.pt")[0] == "path"
    inet = load_classnames("imagenet")
    assert len(inet) == 1000 and len(load_classnames("cifar10")) == 10 and len(load_classnames("cifar100")) == 100
    assert load_concepts("imagenet", inet)["dog"] == list(range(151, 269))
    sup = load_concepts("cifar100", load_classnames("cifar100"))
    assert len(sup) == 20 and all(len(v) == 5 for v in sup.values())
    assert sorted(i for v in sup.values() for i in v) == list(range(100))


def test_tiny_model_gray_folder_and_rgb_refused(env, capsys):
    "The 28 px grayscale format: a gray folder runs (templates auto -> animal_mnist), a 224 px RGB folder is refused."
    from hac.models import tiny_config
    from hac.checkpoints import save_checkpoint
    torch.manual_seed(0)
    micro = build_model(tiny_config("meru", text_encoder="transformer", text_width=64, text_layers=2, text_heads=2,
                                    embed_dim=32))
    ck = save_checkpoint(micro, env["t"] / "micro.pt")
    base = ["eval", "--model", str(ck), "--device", "cpu", "--quiet"]
    assert main(base + ["--eval-images", str(env["gray"]), "--out", str(env["t"] / "tiny_ok")]) == 0
    m = json.loads((env["t"] / "tiny_ok" / "metrics.json").read_text())
    assert (m["templates"], m["n_images"], m["class_match"], m["model_input"]) == \
        ("animal_mnist", 3, "folder", "1-channel grayscale 28x28 images (MERU, ViT vit)")
    assert main(base + ["--eval-images", str(env["rgb"]), "--out", str(env["t"] / "tiny_bad")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "are 3-channel RGB" in err and "224x224" in err and "1-channel grayscale 28x28 images" in err, err
    assert not (env["t"] / "tiny_bad").exists()
