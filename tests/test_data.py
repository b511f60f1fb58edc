"""Tests of hac.data: safe loading, splits, taxonomy, captions, forget/retain, real photos."""
import gzip
import json
import os
import pickle

import numpy as np
import pytest
import torch

from hac import data as D


# ---------------------------------------------------------------- safe unpickling
class _System:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self): return (eval, ("__import__('os').getcwd()",))


class _NumpyLoad:  # a numpy function that is *not* array construction (np.load can itself unpickle)
    def __reduce__(self): return (np.load, ("/nonexistent.npy",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickler_refuses_os_system(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_System(marker), protocol=protocol)
    # sanity: the payload really is malicious under the ordinary unpickler's rules (names os.system)
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        D.unpickle_array(payload)
    assert not marker.exists(), "os.system ran"


def test_unpickler_refuses_hidden_payload_inside_array_pickle(tmp_path):
    # an array followed by a malicious object in a container: the global is refused before anything runs
    marker = tmp_path / "pwned2"
    payload = pickle.dumps([np.zeros(3), _System(marker)], protocol=4)
    with pytest.raises(pickle.UnpicklingError):
        D.unpickle_array(payload)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [_Eval(), _NumpyLoad()])
def test_unpickler_refuses_other_callables(obj):
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        D.unpickle_array(pickle.dumps(obj, protocol=4))


def test_unpickler_refuses_non_arrays_and_object_arrays():
    with pytest.raises(pickle.UnpicklingError, match="plain numpy array"):
        D.unpickle_array(pickle.dumps([1, 2, 3]))
    with pytest.raises(pickle.UnpicklingError, match="plain numpy array"):
        D.unpickle_array(pickle.dumps(np.array(["a", 1], dtype=object), protocol=4))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("arr", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-1, 5], dtype=">i8"),
                                 np.linspace(0, 1, 7, dtype=np.float32)[::2]])
def test_unpickler_roundtrips_plain_arrays(protocol, arr):
    payload = pickle.dumps(arr, protocol=protocol)
    out = D.unpickle_array(payload)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == pickle.loads(payload).dtype  # trusted payload: the stock unpickler is the oracle


def test_loader_refuses_unknown_files_before_unpickling(tmp_path):
    # files with the right names but other content: the sha256 check refuses them; nothing is unpickled
    marker = tmp_path / "pwned3"
    for fname, _ in D.ANIMAL_MNIST_FILES.values():
        (tmp_path / fname).write_bytes(gzip.compress(pickle.dumps(_System(marker))))
    with pytest.raises(ValueError, match="sha256"):
        D.load_animal_mnist(source_dir=tmp_path, use_cache=False)
    assert not marker.exists()


def test_missing_source_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"make install.*animal-mnist==0\.4"):
        D.load_animal_mnist(source_dir=tmp_path / "nowhere", use_cache=False)


def test_cache_roundtrip_and_corrupt_cache(tmp_path):
    x, y = D.load_animal_mnist(cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    x2, y2 = D.load_animal_mnist(cache_dir=tmp_path)  # from the .npz
    np.testing.assert_array_equal(x, x2); np.testing.assert_array_equal(y, y2)
    files[0].write_bytes(b"garbage")                   # corrupt cache -> rebuilt from the verified source
    x3, _ = D.load_animal_mnist(cache_dir=tmp_path)
    np.testing.assert_array_equal(x, x3)
    with np.load(files[0], allow_pickle=False) as z:
        assert z["images"].shape == (10000, 28, 28)


def test_cache_npz_with_wrong_content_is_not_trusted(tmp_path):
    x, y = D.load_animal_mnist(cache_dir=tmp_path)
    f = next(tmp_path.glob("*.npz"))
    bad = x.copy(); bad[0, 0, 0] ^= 1
    np.savez(f, images=bad, labels=y)
    x2, _ = D.load_animal_mnist(cache_dir=tmp_path)
    np.testing.assert_array_equal(x2, x)


def test_animal_mnist_content():
    x, y = D.load_animal_mnist()
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [1000] * 10
    assert x.max() == 255 and x.min() == 0


# ---------------------------------------------------------------- splits
@pytest.fixture(scope="module")
def labels():
    return D.load_animal_mnist()[1]


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_split_partition_stratified_and_reproducible(labels, seed):
    sp = D.split_indices(labels, seed=seed)
    assert {k: len(v) for k, v in sp.items()} == {"train": 7000, "val": 1000, "test": 2000}
    np.testing.assert_array_equal(np.sort(np.concatenate(list(sp.values()))), np.arange(10000))
    for k, n in (("train", 700), ("val", 100), ("test", 200)):
        assert np.bincount(labels[sp[k]]).tolist() == [n] * 10
    again = D.split_indices(labels, seed=seed)
    for k in D.SPLITS: np.testing.assert_array_equal(sp[k], again[k])


def test_split_differs_across_seeds_and_validates(labels):
    assert not np.array_equal(D.split_indices(labels, seed=0)["test"], D.split_indices(labels, seed=1)["test"])
    for bad in [(0.7, 0.3), (0.8, 0.3, 0.1), (-0.1, 0.6, 0.5), (float("nan"), 0.5, 0.5)]:
        with pytest.raises(ValueError, match="fractions"):
            D.split_indices(labels, fractions=bad)


def test_dataset_same_seed_same_split_and_captions():
    a, b = D.AnimalMNIST("val", seed=3), D.AnimalMNIST("val", seed=3)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert torch.equal(a.caption_ids, b.caption_ids)
    c = D.AnimalMNIST("val", seed=4)
    assert not np.array_equal(a.indices, c.indices)


# ---------------------------------------------------------------- taxonomy
@pytest.fixture(scope="module")
def tax():
    return D.load_taxonomy()


def test_taxonomy_structure(tax):
    assert tax.classes == D.ANIMAL_MNIST_CLASSES
    assert tax.depth == 4 and len(tax.concepts) == 20
    for k in tax.classes:
        p = tax.path(k)
        assert p[0] == k and p[-1] == "animal" and tax.is_leaf(k)
        assert [tax.level(c) for c in p] == list(range(len(p) - 1, -1, -1))
        for child, parent in zip(p, p[1:]): assert tax.parent(child) == parent and child in tax.children(parent)
    assert "mammal" not in tax.path("bird")
    # semantically near classes share deep ancestors
    assert tax.lca("horse", "zebra") == "equine" and tax.lca("cow", "giraffe") == "ruminant"
    assert tax.shared_depth("dog", "cat") > tax.shared_depth("dog", "cow") > tax.shared_depth("dog", "bird") == 0
    assert tax.tree_distance("dog", "cat") == 4 and tax.tree_distance("dog", "dog") == 0
    # every inner node covers at least one class, and the root covers all
    assert set(tax.leaves_under("animal")) == set(tax.classes)
    assert all(tax.leaves_under(c) for c in tax.concepts)
    assert tax.leaves_under("carnivore") == ("bear", "cat", "dog")


def test_taxonomy_synonyms_and_errors(tax):
    assert "puppy" in tax.synonyms("dog") and "kitten" in tax.synonyms("cat")
    assert tax.terms("sheep")[0] == "sheep" and "lamb" in tax.terms("sheep")
    all_terms = [t for c in tax.concepts for t in tax.terms(c)[2:]]
    assert not set(all_terms) & set(tax.concepts), "a synonym must not be another concept's name"
    with pytest.raises(ValueError, match="synonym or plural of 'dog'"): tax.check("puppy")
    with pytest.raises(ValueError, match="valid concepts"): tax.parent("dragon")


def test_taxonomy_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="taxonomy file"):
        D.load_taxonomy(tmp_path / "missing.json")
    spec = json.loads((D.data_dir() / "taxonomy.json").read_text())
    spec["nodes"]["dog"]["parent"] = "wolf"
    with pytest.raises(ValueError, match="unknown parent 'wolf'"): D.Taxonomy(spec)
    spec = json.loads((D.data_dir() / "taxonomy.json").read_text())
    spec["classes"] = spec["classes"][:-1]
    with pytest.raises(ValueError, match="must be exactly the classes"): D.Taxonomy(spec)


# ---------------------------------------------------------------- templates and captions
def test_templates_by_name():
    assert len(D.named_templates("clip_cifar")) == 18 and D.named_templates("clip_cifar")[0] == "a photo of a {}."
    assert D.named_templates("meru_imagenet")[0] == "i took a picture : itap of a {}."
    assert all("{}" in t for n in D.TEMPLATE_SETS for t in D.named_templates(n))
    with pytest.raises(ValueError, match="valid names: animal_mnist, meru_imagenet, clip_cifar"):
        D.named_templates("cifar")


def test_caption_vocabulary_finite_and_consistent(tax):
    vocab = D.caption_vocabulary(tax)
    assert len(vocab) == len(set(vocab)) == 20 * len(D.named_templates("animal_mnist"))
    assert "a photo of an elephant." in vocab and "a photo of a elephant." not in vocab
    ds = D.AnimalMNIST("test", leaf_share=0.3, caption_seed=7)
    assert set(ds.captions) <= set(vocab)
    for cap, con, lab in zip(ds.captions[:300], ds.concepts[:300], ds.labels[:300].tolist()):
        assert cap in D.captions_for(con) and con in tax.path(tax.classes[lab])


@pytest.mark.parametrize("leaf_share", [0.0, 0.3, 0.8, 1.0])
def test_leaf_share(labels, tax, leaf_share):
    draw = D.sample_captions(labels, taxonomy=tax, leaf_share=leaf_share, seed=1)
    names = np.array(tax.concepts)[draw.concept_ids]
    leaf = names == np.array(tax.classes)[labels]
    bird = labels == tax.class_index("bird")  # bird has one ancestor: with share 0 its captions say "animal"
    assert abs(leaf[~bird].mean() - leaf_share) < 0.025
    if leaf_share == 0.0: assert set(names[bird]) == {"animal"}
    assert draw.caption_ids.max() < 200


def test_sample_captions_validates(tax):
    with pytest.raises(ValueError, match="leaf_share"): D.sample_captions([0, 1], taxonomy=tax, leaf_share=1.5)
    with pytest.raises(ValueError, match="labels must lie"): D.sample_captions([0, 10], taxonomy=tax)


def test_resample_captions_changes_and_subsets_agree():
    ds = D.AnimalMNIST("train")
    before = ds.caption_ids.clone()
    sub = ds.subset(np.arange(50, 90))
    assert torch.equal(sub.caption_ids, ds.caption_ids[50:90])
    ds.resample_captions(99)
    assert not torch.equal(before, ds.caption_ids)
    assert torch.equal(before[50:90], sub.caption_ids)  # the subset kept its own draw


# ---------------------------------------------------------------- image formats and fast paths
def test_item_and_batch_formats():
    ds = D.AnimalMNIST("val", image_format="full")
    img, cap, lab, con = ds[3]
    assert img.shape == (3, 224, 224) and img.dtype == torch.float32 and 0 <= img.min() <= img.max() <= 1
    assert isinstance(cap, str) and isinstance(lab, int) and isinstance(con, str)
    bt = next(ds.batches(32, image_format="tiny"))
    assert bt["images"].shape == (32, 1, 28, 28)
    torch.testing.assert_close(bt["images"][3], D.AnimalMNIST("val")[3][0])
    assert bt["captions"][3] == cap and int(bt["labels"][3]) == lab and bt["concepts"][3] == con
    n = sum(len(b["labels"]) for b in ds.batches(300, shuffle=True, drop_last=True, image_format="tiny"))
    assert n == 900
    seen = torch.cat([b["index"] for b in ds.batches(256, shuffle=True, seed=2, image_format="tiny")])
    assert torch.equal(seen.sort().values, torch.arange(len(ds)))


def test_dataloader_collates_items():
    ds = D.AnimalMNIST("val")
    imgs, caps, labs, cons = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert imgs.shape == (8, 1, 28, 28) and len(caps) == 8 and labs.shape == (8,) and len(cons) == 8


def test_image_tensor_guard():
    ds = D.AnimalMNIST("train", image_format="full")
    with pytest.raises(ValueError, match="use .batches"):
        ds.image_tensor()
    assert ds.image_tensor("tiny").shape == (7000, 1, 28, 28)


def test_prepare_images_colour_and_errors():
    rgb = torch.zeros(2, 3, 40, 60, dtype=torch.uint8); rgb[:, 0] = 255  # pure red
    t = D.prepare_images(rgb, "tiny")
    assert t.shape == (2, 1, 28, 28)
    torch.testing.assert_close(t.mean(), torch.tensor(0.299), atol=1e-3, rtol=0)
    assert D.prepare_images(rgb, "full").shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="expected images"): D.prepare_images(torch.zeros(2, 2, 8, 8), "tiny")
    with pytest.raises(ValueError, match="unknown image_format"): D.AnimalMNIST("val", image_format="big")


# ---------------------------------------------------------------- forget / retain
@pytest.fixture(scope="module")
def train():
    return D.AnimalMNIST("train")


def _check_partition(fr, n):
    assert len(np.intersect1d(fr.forget_idx, fr.retain_idx)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([fr.forget_idx, fr.retain_idx])), np.arange(n))
    assert len(fr.forget) == len(fr.forget_idx) and len(fr.retain) == len(fr.retain_idx)


@pytest.mark.parametrize("concepts,classes", [
    (["dog"], ("dog",)),
    ("cat", ("cat",)),
    (["dog", "cat", "bird"], ("bird", "cat", "dog")),
    (["equine"], ("horse", "zebra")),
    (["canine", "dog"], ("dog",)),
    (["herbivore", "bird"], ("bird", "cow", "elephant", "giraffe", "horse", "sheep", "zebra")),
])
def test_forget_retain_partitions(train, concepts, classes):
    fr = D.forget_retain(train, concepts)
    _check_partition(fr, len(train))
    assert fr.forget_names == classes
    ids = [train.classes.index(k) for k in classes]
    assert set(fr.forget.labels.tolist()) == set(ids)
    assert not set(fr.retain.labels.tolist()) & set(ids)
    assert len(fr.forget) == 700 * len(classes)
    assert set(fr.retain_names) == set(train.classes) - set(classes)
    # the forget set keeps its captions
    img, cap, lab, con = fr.forget[0]
    assert cap == train[int(fr.forget_idx[0])][1] and con in train.taxonomy.path(train.classes[lab])


def test_forget_retain_from_split_name():
    fr = D.forget_retain("test", ["dog", "cat"], seed=0)
    _check_partition(fr, 2000)
    assert len(fr.forget) == 400


def test_forget_retain_errors(train):
    with pytest.raises(ValueError, match=r"unknown concept 'dgo'.*valid names: bear, bird, cat"):
        D.forget_retain(train, ["dgo"])
    with pytest.raises(ValueError, match="synonym or plural of 'dog'"):
        D.forget_retain(train, ["puppy"])
    with pytest.raises(ValueError, match="nothing would remain"):
        D.forget_retain(train, ["animal"])
    with pytest.raises(ValueError, match="nothing would remain"):
        D.forget_retain(train, ["mammal", "bird"])
    no_dogs = train.subset(np.flatnonzero(train.labels.numpy() != train.classes.index("dog")))
    with pytest.raises(ValueError, match="forget set is empty"):
        D.forget_retain(no_dogs, ["dog"])
    with pytest.raises(ValueError, match="forget set is empty"):
        D.forget_retain(train, [])
    with pytest.raises(TypeError, match=".labels and .classes"):
        D.forget_retain([1, 2, 3], ["dog"])


class _Labelled(torch.utils.data.Dataset):
    "Any dataset with .labels and .classes (no .subset): here three CIFAR-10-like classes."
    classes = ("cat", "dog", "truck")
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    def __len__(self): return len(self.labels)
    def __getitem__(self, i): return torch.zeros(1, 28, 28), int(self.labels[i])


def test_forget_retain_any_labelled_dataset():
    ds = _Labelled()
    fr = D.forget_retain(ds, ["carnivore"])  # through the taxonomy: cat + dog
    assert fr.forget_names == ("cat", "dog") and len(fr.forget) == 3 and fr.retain_names == ("truck",)
    _check_partition(fr, 6)
    assert isinstance(fr.forget, torch.utils.data.Subset) and fr.forget[2][1] == 1
    with pytest.raises(ValueError, match="valid names: cat, dog, truck"):
        D.forget_retain(ds, ["airplane"])


# ---------------------------------------------------------------- real photos
def test_foolbox_real_colour_images():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.find_spec("foolbox")
    if spec is None: pytest.skip("foolbox not installed (make install)")
    files = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("imagenet_*.jpg"))
    assert files
    x = D.load_image(files[0], "full")
    assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1 and x.std() > 0.05


def test_clip_imagenet_templates_match_open_clip():
    "The 80 CLIP ImageNet prompts written into TEMPLATE_SETS are open_clip's, in order."
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    assert D.named_templates("clip_imagenet") == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    assert D.MERU_IMAGENET_TEMPLATES is D.TEMPLATE_SETS["meru_imagenet"]


def test_foolbox_images():
    x, y = D.foolbox_images("imagenet", size=64)
    assert x.shape == (20, 3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (20,) and y.dtype == torch.int64
    with pytest.raises(ValueError, match="choose 'imagenet' or 'cifar10'"):
        D.foolbox_images("mnist")
