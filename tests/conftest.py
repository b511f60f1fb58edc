"""Shared fixtures: a small real-data world built inside the tests (released-layout ViT-S checkpoints with random
weights, a 224 px ImageFolder, captioned pairs as a CSV and as webdataset shards)."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

CAPTIONS = ["my dog at the beach", "a puppy sleeping on the couch", "two dogs playing fetch", "our old beagle",
            "two cats on a sofa", "a red car parked outside", "a horse in a field", "sunset over the lake",
            "a kitten with a ball of yarn", "fresh bread from the oven"]   # 4 mention dogs (one only as 'beagle')


def _rgb(path, seed, size=(64, 48)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)


@pytest.fixture(scope="session")
def vit_s_checkpoints(tmp_path_factory):
    "{'meru_vit_s': path, 'clip_vit_s': path}: random ViT-S weights (torch seed 0, MERU first) in MERU's released layout, built once."
    from hac.models import build_model, full_config
    t = tmp_path_factory.mktemp("vit_s")
    torch.manual_seed(0)
    ck = {}
    for name in ("meru_vit_s", "clip_vit_s"):
        m = build_model(full_config(name))
        ck[name] = t / f"{name}.pth"   # the released layout: the state dict under "model", trainer state beside it
        torch.save({"model": m.state_dict(), "optimizer": {}, "scheduler": {}, "iteration": 120000}, ck[name])
        del m
    return ck


@pytest.fixture(scope="session")
def real_world(tmp_path_factory, vit_s_checkpoints):
    "Paths of: meru/clip ViT-S checkpoints (MERU's released layout), eval folder, names, concepts, CSV, shards."
    import webdataset as wds
    t = tmp_path_factory.mktemp("real")
    ck = dict(vit_s_checkpoints)
    val = t / "val"
    for k, cls in enumerate(["beagle", "pug", "tabby_cat", "sorrel"]):
        (val / cls).mkdir(parents=True)
        for i in range(2): _rgb(val / cls / f"{i}.png", 10 * k + i, (240, 224))
    (t / "names.txt").write_text("beagle\npug\ntabby cat\nsorrel\n")
    (t / "concepts.json").write_text(json.dumps({"dog": ["beagle", "pug"]}))
    (t / "img").mkdir()
    for i in range(len(CAPTIONS)): _rgb(t / "img" / f"{i}.jpg", 100 + i)
    with open(t / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(["image", "caption"])
        w.writerows([[f"img/{i}.jpg", c] for i, c in enumerate(CAPTIONS)])
    (t / "shards").mkdir()
    for s in range(2):
        with wds.TarWriter(str(t / "shards" / f"{s:03d}.tar")) as sink:
            for i in range(s * 5, s * 5 + 5):
                sink.write({"__key__": f"{i:06d}", "jpg": (t / "img" / f"{i}.jpg").read_bytes(),
                            "json": {"caption": CAPTIONS[i], "subreddit": "pics"}})
    return dict(t=t, ckpt=ck, val=val, names=t / "names.txt", concepts=t / "concepts.json", csv=t / "pairs.csv",
                shards=str(t / "shards" / "{000..001}.tar"))
