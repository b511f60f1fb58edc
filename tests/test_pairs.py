"""Tests of hac.pairs' readers of RedCaps annotations, folders and TAR shards, and of caption matching against forget concepts."""
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from hac import data as D
from hac.pairs import (_concept_matchers, forget_concepts, load_redcaps_annotations, matched, open_pairs, redcaps_pairs,
                       shard_pairs, split_pairs)


def _png(path, value, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


RECS = [("r1", "dogpictures", "my good boy at the park"),
        ("r2", "cats", "sleepy kitten"),
        ("r3", "itookapicture", "ITAP of a Dog and a cat"),
        ("r4", "earthporn", "mountains at dawn"),
        ("r5", "itookapicture", "hotdog stand downtown"),
        ("r6", "puppies", "first day home"),
        ("r8", "aww", "two Dogs and a hotdog"),
        ("r7", "birdpics", "a robin")]           # r7 has no image on disk


@pytest.fixture()
def redcaps(tmp_path):
    "A RedCaps folder: annotations/{a,b}.json and images/<subreddit>/<image_id>.png."
    ann = tmp_path / "annotations"
    ann.mkdir()
    half = len(RECS) // 2
    for f, recs in (("a.json", RECS[:half]), ("b.json", RECS[half:])):
        (ann / f).write_text(json.dumps({"info": {"subreddit": "mixed"}, "annotations": [
            {"image_id": i, "subreddit": s, "caption": c, "url": f"https://i.redd.it/{i}.jpg"} for i, s, c in recs]}))
    imgs = tmp_path / "images"
    for k, (i, s, c) in enumerate(RECS[:-1]):
        _png(imgs / s / f"{i}.png", 30 * k, size=(50, 40))
    return tmp_path


def _dog_cat():
    "Forget dog and cat: their taxonomy terms (dog, puppy, kitten, ...) and these subreddits."
    return forget_concepts(["dog", "cat"], subreddits={"dog": ["dogpictures", "r/Puppies"], "cat": ["cats"]})


def test_redcaps_folder_counts(redcaps):
    pairs = redcaps_pairs(redcaps, image_format="tiny")
    assert len(pairs) == 7 and pairs.missing_images == 1              # r7's image is not on disk
    assert len(open_pairs(redcaps)) == 7                              # a RedCaps folder is a data SPEC
    sp = split_pairs(pairs, _dog_cat())
    # r1 (subreddit), r3 ("Dog"), r6 (r/Puppies), r8 ("Dogs") | r2; "hotdog" (r5) is not "dog"
    assert sp.counts == {"dog": 4, "cat": 1}                          # r3 names both: the first forget concept takes it
    assert (len(sp.forget), len(sp.retain)) == (5, 2)
    assert sorted(pairs.records[i]["image_id"] for i in sp.forget.indices) == ["r1", "r2", "r3", "r6", "r8"]
    assert sorted(pairs.records[i]["image_id"] for i in sp.retain.indices) == ["r4", "r5"]
    tx = D.load_taxonomy()
    assert [tx.concepts[i] for i in sp.forget_concept.tolist()] == ["dog", "cat", "dog", "dog", "dog"]
    img, cap, lab, con = sp.forget[0]
    assert img.shape == (1, 28, 28) and cap == "my good boy at the park" and (lab, con) == (-1, "")  # concepts unassigned


def test_redcaps_single_file_keyword_only(redcaps):
    anns = load_redcaps_annotations(redcaps / "annotations" / "a.json")
    assert [a["image_id"] for a in anns] == ["r1", "r2", "r3", "r4"]
    cat = forget_concepts(["cat"])                                    # keywords only: the taxonomy's terms of cat
    assert [matched(a, cat) for a in anns] == [None, "cat", "cat", None]   # r2 "kitten", r3 "a cat"


def _write_shard(path, items, meta="json"):
    with tarfile.open(path, "w") as tf:
        for key, sub, cap, img in items:
            files = []
            if img is not None: files.append((f"{key}.png", img))
            if meta == "json": files.append((f"{key}.json", json.dumps({"caption": cap, "subreddit": sub}).encode()))
            else: files.append((f"{key}.txt", cap.encode()))
            for name, data in files:
                ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))


def _img_bytes(v):
    buf = io.BytesIO(); Image.fromarray(np.full((30, 30, 3), v, dtype=np.uint8)).save(buf, format="PNG"); return buf.getvalue()


def test_redcaps_tar_shards(tmp_path, redcaps):
    shards = tmp_path / "shards"; shards.mkdir()
    items = [(i, s, c, _img_bytes(20 * k)) for k, (i, s, c) in enumerate(RECS)]
    items[-1] = items[-1][:3] + (None,)  # r7: caption without image
    _write_shard(shards / "000.tar", items[:4]); _write_shard(shards / "001.tar", items[4:])
    pairs = shard_pairs(shards)                                       # a folder of shards
    assert len(pairs) == 7 and pairs.missing_images == 1
    sp = split_pairs(pairs, _dog_cat())
    assert sp.counts == {"dog": 4, "cat": 1} and (len(sp.forget), len(sp.retain)) == (5, 2)
    x = sp.forget[1][0]
    assert x.shape == (3, 224, 224)
    # a DataLoader with workers would pickle the dataset: open shard handles are not carried along
    clone = pickle.loads(pickle.dumps(sp.forget))
    torch.testing.assert_close(clone[1][0], x)
    # .txt captions + subreddits from the annotation files, joined by image id
    _write_shard(tmp_path / "txt.tar", items[:3], meta="txt")
    txt = shard_pairs(tmp_path / "txt.tar", annotations=redcaps / "annotations")
    assert [r["subreddit"] for r in txt.records] == ["dogpictures", "cats", "itookapicture"]
    sp2 = split_pairs(txt, forget_concepts(["dog"], subreddits={"dog": ["dogpictures"]}))
    assert sp2.counts == {"dog": 2} and sp2.forget.captions[0] == "my good boy at the park"  # r1 by subreddit, r3 by word
    # a glob pattern, a brace pattern, and a folder of shards as a data SPEC
    assert len(shard_pairs(str(shards / "*.tar"))) == 7 and len(shard_pairs(shards / "{000..001}.tar")) == 7
    assert len(open_pairs(shards)) == 7
    # a RedCaps folder with shards/ reads the shards, subreddits joined from its annotations
    rc = tmp_path / "rc_shards"
    for sub, f, src in (("annotations", "a.json", redcaps / "annotations" / "a.json"), ("shards", "000.tar", tmp_path / "txt.tar")):
        (rc / sub).mkdir(parents=True); (rc / sub / f).write_bytes(src.read_bytes())
    assert [r["subreddit"] for r in redcaps_pairs(rc).records] == ["dogpictures", "cats", "itookapicture"]


def test_redcaps_errors(tmp_path, redcaps):
    (tmp_path / "noimages" / "annotations").mkdir(parents=True)
    (tmp_path / "noimages" / "annotations" / "a.json").write_bytes((redcaps / "annotations" / "a.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"images/<subreddit>/<image_id>\.jpg"):
        redcaps_pairs(tmp_path / "noimages")
    with pytest.raises(FileNotFoundError, match="no annotations/ sub-folder"):
        redcaps_pairs(redcaps / "images")
    _write_shard(tmp_path / "one.tar", [("r1", "dogpictures", "my good boy", _img_bytes(0))])
    with pytest.raises(FileNotFoundError, match="annotation .json files"):
        shard_pairs(tmp_path / "one.tar", annotations=tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match="TAR shard"):
        shard_pairs(tmp_path / "missing.tar")
    with pytest.raises(ValueError, match="'subreddits' and/or 'keywords'"):
        _concept_matchers({"dog": {"keyword": ["dog"]}})
    bad = tmp_path / "bad.json"; bad.write_text(json.dumps({"annotations": [{"image_id": "x", "caption": "c"}]}))
    with pytest.raises(ValueError, match=r"lacks \['subreddit'\]"):
        load_redcaps_annotations(bad)
