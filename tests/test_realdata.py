"""Issue 13: unlearn a released-layout ViT model on captioned pairs and evaluate it on an image folder, end to end
through the command line (`hac unlearn --data ... --eval-images ...`, then `hac eval`), small enough for CPU CI."""
import json

import pytest
import torch

from hac.cli import main
from hac.models import build_model, full_config
from hac.checkpoints import load_checkpoint

torch.set_num_threads(2)


def _unlearn(w, model, method, data, out, *extra):
    return main(["unlearn", "--model", str(w["ckpt"][model]), "--method", method, "--forget", "dog", "--data", str(data),
                 "--eval-images", str(w["val"]), "--classnames", str(w["names"]), "--concept-classes", str(w["concepts"]),
                 "--steps", "2", "--batch-size", "4", "--forget-batch", "2", "--device", "cpu", "--quiet",
                 "--eval-batch-size", "8", "--out", str(out), "--keywords", "dog=beagle", "--set", "log_every=1", "probe_size=4",
                 "warmup=1", *extra])


@pytest.mark.parametrize("model,method,data", [("meru_vit_s", "hac", "csv"), ("clip_vit_s", "ac", "shards")])
def test_unlearn_real_pairs_then_eval(real_world, capsys, model, method, data):
    w = real_world
    out = w["t"] / f"run_{method}_{data}"
    assert _unlearn(w, model, method, w[data], out) == 0, capsys.readouterr().err
    assert "forget acc" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"config.json", "history.csv", "history.json", "metrics.json", "model.pt"}
    m = json.loads((out / "metrics.json").read_text())
    for when in ("before", "after"):
        assert m[when]["n_images"] == 8 and m[when]["n_forget"] == 4 and m[when]["forget_classes"] == [0, 1]
        assert 0 <= m[when]["forget_acc"] <= 1 and 0 <= m[when]["retain_acc"] <= 1
    hist = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in hist] == [0, 1, 2] and all("probe_forget_acc" in r for r in hist)
    if method == "hac":   # the hyperbolic terms act on real pairs too
        assert all(r["ec"] > 0 and r["nr"] >= 0 for r in hist[1:])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sources"]["forget_pairs"] == 4 and cfg["sources"]["retain_pairs"] == 6   # 'beagle' by --keywords
    assert cfg["sources"]["matched"] == {"dog": 4}
    # the unlearned checkpoint is in the released layout: it loads strictly into a fresh architecture
    sd = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["model"]
    fresh = build_model(full_config(model)); fresh.load_state_dict(sd, strict=True)
    before = torch.load(w["ckpt"][model], map_location="cpu", weights_only=True)["model"]
    assert sd.keys() == before.keys() and any(not torch.equal(sd[k], before[k]) for k in sd)
    assert type(load_checkpoint(out / "model.pt")) is type(fresh)
    # ... and `hac eval` reads it
    rc = main(["eval", "--model", str(out / "model.pt"), "--eval-images", str(w["val"]), "--classnames", str(w["names"]),
               "--concept-classes", str(w["concepts"]), "--forget", "dog", "--device", "cpu", "--quiet",
               "--out", str(out.with_name(out.name + "_eval"))])
    assert rc == 0 and (out.with_name(out.name + "_eval") / "metrics.json").exists()


def test_finished_run_is_not_overwritten(real_world, capsys):
    w = real_world
    out = w["t"] / "run_hac_csv"
    if not (out / "metrics.json").exists(): pytest.skip("needs the run of test_unlearn_real_pairs_then_eval")
    stamp = (out / "metrics.json").stat().st_mtime_ns
    assert _unlearn(w, "meru_vit_s", "hac", w["csv"], out) == 2
    assert "holds a finished run" in capsys.readouterr().err and (out / "metrics.json").stat().st_mtime_ns == stamp


def test_streamed_retain_pairs(real_world, capsys):
    "--stream: the forget pairs are indexed in one pass, the retain pairs streamed by webdataset; same outputs."
    w = real_world
    out = w["t"] / "run_stream"
    assert _unlearn(w, "clip_vit_s", "ac", w["shards"], out, "--stream") == 0, capsys.readouterr().err
    src = json.loads((out / "config.json").read_text())["sources"]
    assert src["stream"] is True and (src["forget_pairs"], src["retain_pairs"]) == (4, 6)
    assert [r["step"] for r in json.loads((out / "history.json").read_text())] == [0, 1, 2]
    assert (out / "model.pt").exists() and (out / "metrics.json").exists()


@pytest.mark.parametrize("method", ["salun", "cliperase", "delete", "diet", "slug"])
def test_benchmark_methods_on_real_pairs(real_world, capsys, method):
    "Issue 22: every benchmark method runs 2 steps (SLUG: its one step) on the ViT-S fixture through `hac unlearn --data`."
    w = real_world
    out = w["t"] / f"run_bench_{method}"
    assert _unlearn(w, "meru_vit_s", method, w["csv"], out) == 0, capsys.readouterr().err
    assert {"config.json", "history.json", "metrics.json", "model.pt"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    assert all(0 <= m[when]["forget_acc"] <= 1 for when in ("before", "after"))
    sd = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["model"]
    before = torch.load(w["ckpt"]["meru_vit_s"], map_location="cpu", weights_only=True)["model"]
    changed = [k for k in sd if not torch.equal(sd[k], before[k])]
    if method == "slug":   # one step on one weight tensor, or none when the probe is already at the target
        assert "slug" in m and len(changed) <= 1 and (len(changed) == 1) == (m["slug"]["step"] > 0), (changed, m["slug"])
    else:
        assert changed
