"""Tests of hac.models: released-checkpoint round trips (full-size ViT-S MERU and CLIP), real colour images,
the tiny default, clamps, bad inputs, checkpoint faults, from_pretrained (no network) and the open_clip wrapper."""
import copy
import math
import os
import urllib.error

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hac.checkpoints as C
import hac.data as D
import hac.models as M
from hac import lorentz as L
from hac.data import foolbox_images
from hac.models import CLIP, MERU, ModelConfig, build_model, from_open_clip, full_config, tiny_config
from hac.checkpoints import CheckpointMismatchError, check_state_dict, from_pretrained, infer_config, load_checkpoint, save_checkpoint

torch.set_num_threads(2)
CAPS = ["a photo of a dog", "a photo of a cat", "a canine", "a pet", "a mammal", "an animal"]


def _micro(kind="meru", **kw):
    "A small model whose checkpoint is a few MB (tiny ViT + 2-layer CLIP-BPE text transformer)."
    cfg = dict(text_encoder="transformer", text_width=64, text_layers=2, text_heads=2, embed_dim=32)
    return tiny_config(kind, **{**cfg, **kw})


@torch.no_grad()
def _embs(m, imgs, caps=CAPS):
    return m.encode_image(imgs), m.encode_text(caps)


# ----------------------------------------------------------------------------------------------------------------
# Full size: MERU's released architecture, state-dict names, round trip, real colour images
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fb():
    imgs, labels = foolbox_images("imagenet", size=224)
    return imgs, labels


@pytest.fixture(scope="module")
def meru_s():
    torch.manual_seed(0)
    return build_model(full_config("meru_vit_s")).eval()


def test_released_state_dict_names(meru_s):
    sd = meru_s.state_dict()
    top = {k for k in sd if "." not in k}
    assert top == {"pixel_mean", "pixel_std", "logit_scale", "curv", "visual_alpha", "textual_alpha"}
    for k in ["visual.cls_token", "visual.pos_embed", "visual.patch_embed.proj.weight", "visual.blocks.11.attn.qkv.weight",
              "visual.blocks.0.mlp.fc2.bias", "visual.norm.weight", "visual_proj.weight", "textual_proj.weight",
              "textual.token_embed.weight", "textual.posit_embed", "textual.attn_mask", "textual.ln_final.bias",
              "textual.resblocks.11.attn.in_proj_weight", "textual.resblocks.0.attn.out_proj.weight",
              "textual.resblocks.0.ln_1.weight", "textual.resblocks.0.mlp.c_fc.weight",
              "textual.resblocks.0.mlp.c_proj.bias", "textual.resblocks.0.ln_2.bias"]:
        assert k in sd, k
    assert not any(k.startswith("log_") for k in sd)
    assert sd["visual.pos_embed"].shape == (1, 197, 384) and sd["visual_proj.weight"].shape == (512, 384)
    assert sd["textual.token_embed.weight"].shape == (49408, 512) and sd["textual.posit_embed"].shape == (77, 512)
    assert sd["textual.attn_mask"].dtype == torch.bool and sd["pixel_mean"].shape == (3, 1, 1)
    # MERU's init of the learned scalars (logs stored)
    torch.testing.assert_close(sd["curv"], torch.tensor(0.0))
    torch.testing.assert_close(sd["visual_alpha"], torch.tensor(512 ** -0.5).log())
    torch.testing.assert_close(sd["logit_scale"], torch.tensor(1 / 0.07).log())
    assert meru_s.visual.blocks[0].attn.num_heads == 12 and len(meru_s.textual.resblocks) == 12
    assert meru_s.textual.resblocks[0].attn.num_heads == 8
    assert not meru_s.visual.pos_embed.requires_grad
    # the named parameters are the logs; the state dict carries MERU's names
    names = dict(meru_s.named_parameters())
    assert "log_curv" in names and "curv" not in names


def test_full_size_round_trip_meru_and_clip(meru_s, fb, tmp_path):
    imgs = fb[0][:2]
    # MERU: written exactly like a release (state dict under "model", optimizer etc. beside, no hac config)
    released = {"model": meru_s.state_dict(), "optimizer": {}, "scheduler": {}, "iteration": 120000}
    torch.save(released, tmp_path / "meru_vit_s.pth")
    m2 = load_checkpoint(tmp_path / "meru_vit_s.pth")
    assert type(m2) is MERU and m2.config == full_config("meru_vit_s")   # architecture inferred from the keys
    for a, b in zip(_embs(meru_s, imgs), _embs(m2.eval(), imgs)):
        assert torch.equal(a, b)
    del m2
    # CLIP: through save_checkpoint (same layout plus our config)
    torch.manual_seed(1)
    clip = build_model(full_config("clip_vit_s")).eval()
    p = save_checkpoint(clip, tmp_path / "clip_vit_s.pth", iteration=7)
    ck = torch.load(p, weights_only=True)
    assert set(ck) >= {"model", "hac_config", "hac_version", "iteration"} and "curv" not in ck["model"]
    c2 = load_checkpoint(p)
    assert type(c2) is CLIP and c2.geometry == "euclidean"
    for a, b in zip(_embs(clip, imgs), _embs(c2.eval(), imgs)):
        assert torch.equal(a, b)
    assert infer_config(clip.state_dict()) == full_config("clip_vit_s")


def test_full_size_wrong_key_or_shape_is_a_clear_error(meru_s, tmp_path):
    sd = dict(meru_s.state_dict())
    bad_key = dict(sd); bad_key["textual.resblocks.0.mlp.c_fc.weightt"] = bad_key.pop("textual.resblocks.0.mlp.c_fc.weight")
    with pytest.raises(CheckpointMismatchError) as e:
        check_state_dict(meru_s, bad_key)
    msg = str(e.value)
    assert "missing keys (1):\n    textual.resblocks.0.mlp.c_fc.weight" in msg
    assert "unexpected keys (1):\n    textual.resblocks.0.mlp.c_fc.weightt" in msg
    assert "MERU with ViT vit_small_mocov3_patch16_224" in msg
    bad_shape = dict(sd); bad_shape["textual_proj.weight"] = torch.zeros(256, 512)
    with pytest.raises(CheckpointMismatchError, match=r"textual_proj.weight: checkpoint \(256, 512\) vs model \(512, 512\)"):
        check_state_dict(meru_s, bad_shape)
    # through a file, with the architecture forced: a CLIP file into a MERU config lacks the scalars
    torch.save({"model": {k: v for k, v in sd.items() if k not in ("curv", "visual_alpha", "textual_alpha")}},
               tmp_path / "x.pth")
    with pytest.raises(CheckpointMismatchError, match="missing keys \\(3\\)"):
        load_checkpoint(tmp_path / "x.pth", config=full_config("meru_vit_s"))


def test_foolbox_forward_on_the_hyperboloid(meru_s, fb):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    imgs, labels = fb
    assert imgs.shape == (20, 3, 224, 224) and 0 <= imgs.min() and imgs.max() <= 1 and imgs.std() > 0.1
    names = sorted({IMAGENET_CLASSNAMES[i] for i in labels.tolist()})
    with torch.no_grad():
        raw = meru_s.encode_image(imgs, project=False)       # one forward pass of the 20 images at 224 px
        e = meru_s.lift_image(raw)
        protos = meru_s.class_prototypes(names, D.MERU_IMAGENET_TEMPLATES)
        logits = meru_s.logits(e, protos)
        torch.testing.assert_close(meru_s.zero_shot_logits(imgs[:2], protos), logits[:2], rtol=1e-4, atol=1e-4)
    c = meru_s.curv
    assert e.shape == (20, 512) and protos.shape == (len(names), 512) and logits.shape == (20, len(names))
    for x in (e, protos):   # points on the hyperboloid <x, x>_L = -1/c, computed in float64
        x64 = x.double()
        torch.testing.assert_close(L.rowwise_inner(x64, x64, curv=c.double()), torch.full((len(x),), -1 / c.item(),
                                   dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(L.dist0(e, curv=c), (meru_s.visual_alpha * raw).norm(dim=-1), rtol=1e-4, atol=1e-4)
    assert torch.isfinite(logits).all() and (logits <= 0).all()
    # the images are different, so are their embeddings
    assert torch.cdist(e, e).fill_diagonal_(1.0).min() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# Config inference for every released size, without allocating the weights
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["meru_vit_s", "meru_vit_b", "meru_vit_l", "clip_vit_s", "clip_vit_b", "clip_vit_l"])
def test_infer_config_every_released_size(name):
    with torch.device("meta"):
        m = build_model(full_config(name))
    sd = dict(m.state_dict())
    sd["pixel_mean"], sd["pixel_std"] = torch.tensor(D.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(D.IMAGENET_STD).view(3, 1, 1)
    assert infer_config(sd) == full_config(name)


def test_config_validation():
    with pytest.raises(ValueError, match="fixes"):
        ModelConfig(image_encoder="vit_base_patch16_224")          # tiny dims with a named arch
    with pytest.raises(ValueError, match="curv_init"):
        tiny_config(curv_init=0.0)
    with pytest.raises(ValueError, match="pixel_mean"):
        tiny_config(in_chans=3)
    with pytest.raises(ValueError, match="unknown image_encoder"):
        build_model(tiny_config(image_encoder="resnet50"))


# ----------------------------------------------------------------------------------------------------------------
# The tiny default
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return {k: build_model(tiny_config(k)) for k in ("meru", "clip")}


def _step(m, imgs, caps, lr=1e-3):
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
    out = m(imgs, caps)
    lg = m.logits(out["image"], out["text"])
    y = torch.arange(len(caps))
    loss = (F.cross_entropy(lg, y) + F.cross_entropy(lg.T, y)) / 2
    opt.zero_grad(); loss.backward(); opt.step(); m.clamp_params_()
    return loss


def test_tiny_models_build_train_and_count(tiny):
    imgs = torch.rand(6, 1, 28, 28)
    for kind, m in tiny.items():
        n = m.num_parameters()
        assert 22_000_000 < n["textual"] < 23_500_000          # the real MiniLM, frozen
        assert 500_000 < n["trainable"] < 2_000_000 and n["visual"] < 1_500_000
        frozen = m.textual.encoder.encoder.layer[0].attention.self.query.weight.clone()
        before = m.visual_proj.weight.clone()
        loss = _step(m, imgs, CAPS)
        assert torch.isfinite(loss)
        assert not torch.equal(before, m.visual_proj.weight)
        assert torch.equal(frozen, m.textual.encoder.encoder.layer[0].attention.self.query.weight)
        assert m.geometry == ("lorentz" if kind == "meru" else "euclidean")


def test_tiny_raw_feature_norms_match_meru_alpha_init(tiny):
    m = tiny["meru"]
    D = m.embed_dim
    with torch.no_grad():
        ri, rt = m.encode_image(torch.rand(32, 1, 28, 28), project=False), m.encode_text(CAPS, project=False)
    for r in (ri, rt):   # LayerNorm + bias-free projection (std width^-1/2): |raw| ~ sqrt(D)
        assert 0.6 * D ** 0.5 < r.norm(dim=-1).mean() < 1.5 * D ** 0.5
    with torch.no_grad():
        d = L.dist0(m.encode_text(CAPS), curv=m.curv)
    assert (d > 0.3).all() and (d < 3).all()   # texts start away from the origin, not collapsed on it


def test_minilm_cache_and_partial_unfreezing(tiny):
    t = tiny["clip"].textual
    t.clear_cache()
    a = t(CAPS)
    assert len(t._cache) == len(CAPS)
    b = t(CAPS[::-1])
    torch.testing.assert_close(a, b.flip(0), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(a, t.ln_final(t.pooled(CAPS)), rtol=1e-4, atol=1e-4)
    t.precompute(["a zebra", "a horse"])
    assert "a zebra" in t._cache
    tiny["clip"].load_state_dict(tiny["clip"].state_dict())   # loading weights invalidates the cache
    assert len(t._cache) == 0
    small = M.MiniLMText(trainable_layers=1, cache_size=10)
    train = [n for n, p in small.encoder.named_parameters() if p.requires_grad]
    assert train and all(n.startswith("encoder.layer.5.") for n in train)
    small.train()
    assert small.encoder.training
    x = small(CAPS[:2])
    x.sum().backward()
    assert small.encoder.encoder.layer[5].output.dense.weight.grad is not None and len(small._cache) == 0
    t.clear_cache(); t.cache_size = 3
    try:
        t(CAPS[:3]); t(CAPS[3:4])
        assert list(t._cache) == CAPS[1:4]                       # least recently used evicted
        t(CAPS[1:2] + CAPS[4:6])                                 # a batch is never evicted by its own new entries
        assert list(t._cache) == [CAPS[1], CAPS[4], CAPS[5]]
    finally:
        t.cache_size = 100_000


def test_cache_filled_under_inference_mode_then_training(tiny):
    "Evaluation (inference_mode) fills the frozen-text cache; a later training step must still backpropagate."
    m = tiny["meru"]
    m.textual.clear_cache()
    with torch.inference_mode():
        m.class_prototypes(["dog", "cat"], ["a photo of a {}."])
        m.encode_text(CAPS)
    loss = _step(m, torch.rand(len(CAPS), 1, 28, 28), CAPS)
    assert torch.isfinite(loss) and m.textual_proj.weight.grad is not None and m.textual.ln_final.weight.grad is not None


def test_clamps_and_gradients_at_the_bound():
    m = build_model(_micro("meru", curv_init=2.0))
    with torch.no_grad():
        m.log_curv.fill_(10.0); m.log_visual_alpha.fill_(3.0); m.log_textual_alpha.fill_(-1.0); m.log_logit_scale.fill_(8.0)
    assert math.isclose(m.curv.item(), 20.0, rel_tol=1e-5) and math.isclose(m.visual_alpha.item(), 1.0)
    assert math.isclose(m.logit_scale.item(), 100.0, rel_tol=1e-5)
    m.clamp_params_()
    assert math.isclose(m.log_curv.item(), math.log(20.0), rel_tol=1e-6) and m.log_visual_alpha.item() == 0.0
    assert math.isclose(m.log_textual_alpha.item(), -1.0)              # inside the range: untouched
    with torch.no_grad(): m.log_curv.fill_(-10.0)
    m.clamp_params_()
    assert math.isclose(m.curv.item(), 0.2, rel_tol=1e-5)
    out = m(torch.rand(4, 1, 28, 28), CAPS[:4])
    m.logits(out["image"], out["text"]).diagonal().sum().backward()
    for p in (m.log_curv, m.log_visual_alpha, m.log_logit_scale):      # at the bound the gradient still flows
        assert p.grad is not None and p.grad.abs() > 0
    frozen = build_model(_micro("meru", learn_curv=False))
    assert not frozen.log_curv.requires_grad


def test_encode_equals_lift_of_raw_and_prototypes(tiny):
    imgs = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        for m in tiny.values():
            torch.testing.assert_close(m.encode_image(imgs), m.lift_image(m.encode_image(imgs, project=False)))
            torch.testing.assert_close(m.encode_text(CAPS), m.lift_text(m.encode_text(CAPS, project=False)))
        tm, names, tpl = tiny["meru"], ["dog", "cat"], ["a photo of a {}.", "a sketch of a {}.", "the {}."]
        raw = tm.encode_text([t.format(n) for n in names for t in tpl], project=False).view(2, 3, -1)
        torch.testing.assert_close(tm.class_prototypes(names, tpl), L.exp_map0(tm.textual_alpha * raw.mean(1), curv=tm.curv))
        tc = tiny["clip"]
        raw = tc.encode_text([t.format(n) for n in names for t in tpl], project=False).view(2, 3, -1)
        torch.testing.assert_close(tc.class_prototypes(names, tpl), F.normalize(F.normalize(raw, dim=-1).mean(1), dim=-1))
        lg = tm.zero_shot_logits(imgs, tm.class_prototypes(names, tpl))
        assert lg.shape == (4, 2) and (lg <= 0).all()


def test_autocast_keeps_geometry_in_float32(tiny):
    imgs = torch.rand(4, 1, 28, 28)
    for m in tiny.values():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            e, t = m.encode_image(imgs), m.encode_text(CAPS)
            lg = m.logits(e, t)
            p = m.class_prototypes(["dog", "cat"])
        assert e.dtype == t.dtype == lg.dtype == p.dtype == torch.float32
        assert torch.isfinite(lg).all()


def test_half_precision_model_on_float_images():
    m = build_model(_micro("meru")).to(torch.bfloat16).eval()
    with torch.no_grad():
        e = m.encode_image(torch.rand(2, 1, 28, 28))
        lg = m.logits(e, m.encode_text(CAPS[:3]))
    assert e.dtype == lg.dtype == torch.float32 and torch.isfinite(lg).all()


def test_deepcopy_is_independent(tiny):
    m = tiny["meru"]
    frozen = copy.deepcopy(m).requires_grad_(False)
    with torch.no_grad(): m.log_curv.add_(0.1)
    assert not torch.equal(frozen.state_dict()["curv"], m.state_dict()["curv"])
    assert torch.equal(frozen.state_dict()["visual_proj.weight"], m.state_dict()["visual_proj.weight"])
    with torch.no_grad(): m.log_curv.sub_(0.1)


@pytest.mark.parametrize("images, match", [
    (torch.rand(2, 3, 28, 28), "images.mean"),
    (torch.rand(2, 1, 224, 224), "takes 28x28"),
    (torch.rand(1, 28, 28), r"images\[None\]"),
    (torch.rand(28, 28), "shape"),
    (torch.full((2, 1, 28, 28), float("inf")), "NaN or inf"),
    (torch.rand(2, 1, 28, 28).index_put_((torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), torch.tensor([3])),
                                         torch.tensor(float("nan"))), "NaN"),
    ((torch.rand(2, 1, 28, 28) - 0.5) / 0.1, "normalized already"),
    (torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8), "float pixels"),
    (torch.rand(0, 1, 28, 28), "empty"),
    (None, "torch.Tensor"),
])
def test_bad_images(tiny, images, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tiny["meru"].encode_image(images)


def test_bad_texts(tiny):
    m = tiny["clip"]
    with pytest.raises(ValueError, match="non-empty"):
        m.encode_text([])
    with pytest.raises(TypeError, match="strings"):
        m.encode_text(["a dog", 3])
    with pytest.raises(ValueError, match="placeholder"):
        m.class_prototypes(["dog"], ["a photo of {} and {}"])
    assert m.encode_text("a dog").shape == (1, m.embed_dim)
    assert m.encode_text([""]).isfinite().all()


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and position embedding against independent references
# ----------------------------------------------------------------------------------------------------------------
def test_tokenizer_matches_open_clip():
    import open_clip
    tok = M.CLIPTokenizer()
    texts = ["A photo of a Dog!", "pics : a origami zebra.", "it's   &amp; html", "word " * 90]
    ours, ref = tok(texts), open_clip.tokenize(texts)
    assert torch.equal(ours, ref[:, : ours.shape[1]]) and (ref[:, ours.shape[1]:] == 0).all()
    assert ours[3, -1] == tok.eot and ours.shape[1] == 77
    assert tok.ids(texts[0]) is tok.ids(texts[0])               # token ids cached per string


def test_sincos_matches_mocov3_formula():
    h = w = 14; width = 384; d = width // 4
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(d, dtype=torch.float32) / d)
    ow, oh = gw.flatten()[:, None] * omega, gh.flatten()[:, None] * omega
    ref = torch.cat([torch.zeros(1, width), torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)])[None]
    torch.testing.assert_close(M.sincos_pos_embed_2d(h, w, width), ref, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint faults
# ----------------------------------------------------------------------------------------------------------------
def test_checkpoint_faults(tmp_path):
    m = build_model(_micro("meru"))
    p = save_checkpoint(m, tmp_path / "ok.pth")
    data = p.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth").write_bytes(os.urandom(4096))
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("trunc.pth", "garbage.pth", "empty.pth"):
        with pytest.raises(ValueError, match="truncated or corrupt"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_checkpoint(tmp_path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(ValueError, match="no state dict"):
        load_checkpoint(tmp_path / "opt.pth")
    # a checkpoint of another architecture
    clip_sd = build_model(_micro("clip", embed_dim=16)).state_dict()
    torch.save({"model": clip_sd}, tmp_path / "clip.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(tmp_path / "clip.pth", config=_micro("meru"))
    assert "curv" in str(e.value) and "visual_proj.weight: checkpoint (16, 128) vs model (32, 128)" in str(e.value)
    # a bare DDP state dict loads
    torch.save({"module." + k: v for k, v in m.state_dict().items()}, tmp_path / "ddp.pth")
    m2 = load_checkpoint(tmp_path / "ddp.pth", config=_micro("meru"))
    assert torch.equal(m2.encode_image(torch.ones(1, 1, 28, 28)), m.encode_image(torch.ones(1, 1, 28, 28)))


def test_save_is_atomic(tmp_path, monkeypatch):
    m = build_model(_micro("clip"))
    p = save_checkpoint(m, tmp_path / "ck.pth")
    good = p.read_bytes()
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(m, p)
    monkeypatch.setattr(torch, "save", real_save)
    assert p.read_bytes() == good                                   # the old file is intact
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ck.pth"]  # no temporary left behind
    load_checkpoint(p)


# ----------------------------------------------------------------------------------------------------------------
# from_pretrained, never touching the network
# ----------------------------------------------------------------------------------------------------------------
def test_from_pretrained_offline(tmp_path, monkeypatch):
    m = build_model(_micro("meru"))
    src = save_checkpoint(m, tmp_path / "src.pth")
    cache = tmp_path / "cache"

    def no_network(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(ConnectionError, match="offline.*copy it to"):
        from_pretrained("meru_vit_s", cache_dir=cache)
    assert not (cache / "meru_vit_s.pth").exists()
    assert not cache.exists() or not [x for x in cache.iterdir() if x.name.endswith(".part")]   # nothing half-written
    with pytest.raises(FileNotFoundError, match="download=False"):
        from_pretrained("meru_vit_s", cache_dir=cache, download=False)
    monkeypatch.undo()
    # a file:// URL stands in for the release server
    m2 = from_pretrained("meru_vit_s", cache_dir=cache, url=src.as_uri())
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(m2.encode_image(x), m.encode_image(x))
    # second call: served from the cache, no download attempted
    monkeypatch.setattr(C, "_download", lambda *a, **k: pytest.fail("downloaded although cached"))
    from_pretrained("meru_vit_s", cache_dir=cache)
    monkeypatch.setenv("HAC_CACHE", str(cache))
    from_pretrained("meru_vit_s")
    with pytest.raises(ValueError, match="choose one of"):
        from_pretrained("meru_vit_h", cache_dir=cache)


# ----------------------------------------------------------------------------------------------------------------
# open_clip wrapper
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ViT-S-32-alt", "RN50"])
def test_open_clip_wrapper(name, fb, tmp_path):
    torch.manual_seed(0)
    oc = from_open_clip(name, pretrained=None).eval()
    assert isinstance(oc, CLIP) and oc.geometry == "euclidean"
    imgs = F.interpolate(fb[0][:2], size=oc.image_size, mode="bilinear", antialias=True).clamp(0, 1)
    with torch.no_grad():
        e = oc.encode_image(imgs)
        protos = oc.class_prototypes(["dog", "cat", "goose"], ["a photo of a {}."])
        lg = oc.logits(e, protos)
        ref = oc.model.encode_image((imgs - oc.pixel_mean) / oc.pixel_std, normalize=True)
    assert lg.shape == (2, 3) and torch.isfinite(lg).all()
    torch.testing.assert_close(e, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lg, oc.logit_scale * e @ protos.T, rtol=1e-4, atol=1e-4)
    if name == "ViT-S-32-alt":   # save/load through our checkpoint format
        p = save_checkpoint(oc, tmp_path / "oc.pth")
        oc2 = load_checkpoint(p).eval()
        with torch.no_grad():
            assert torch.equal(oc2.encode_image(imgs), e)


def test_open_clip_checkpoint_records_how_it_was_built(tmp_path):
    "save_checkpoint stores name, pretrained tag and architecture arguments; the reload is the same network."
    torch.manual_seed(0)
    weights = tmp_path / "start.pt"
    torch.save(from_open_clip("ViT-S-32-alt").model.state_dict(), weights)
    oc = from_open_clip("ViT-S-32-alt", pretrained=str(weights), force_quick_gelu=True, device="cpu").eval()
    assert oc.open_clip_args == {"name": "ViT-S-32-alt", "pretrained": str(weights), "kwargs": {"force_quick_gelu": True}}
    p = save_checkpoint(oc, tmp_path / "oc.pth")
    weights.unlink()                      # the reload must not need the starting weights (they are in the checkpoint)
    rec = torch.load(p, weights_only=True)["open_clip"]
    assert rec == oc.open_clip_args
    oc2 = load_checkpoint(p).eval()
    assert oc2.open_clip_args == oc.open_clip_args
    x = torch.rand(2, 3, *oc.image_size)
    with torch.no_grad():
        assert torch.equal(oc2.encode_image(x), oc.encode_image(x))
        # QuickGELU leaves no trace in the weights: without the recorded argument the same weights compute another function
        plain = from_open_clip("ViT-S-32-alt").eval()
        plain.load_state_dict(oc.state_dict())
        assert not torch.allclose(plain.encode_image(x), oc.encode_image(x), atol=1e-4)
    # an old checkpoint with only the name still loads
    old = torch.load(p, weights_only=True); old["open_clip"] = {"name": "ViT-S-32-alt"}
    torch.save(old, tmp_path / "old.pth")
    assert load_checkpoint(tmp_path / "old.pth").open_clip_args["kwargs"] == {}
    with pytest.raises(ValueError, match="not plain data"):
        from_open_clip("ViT-S-32-alt", force_preprocess_cfg={"mean": torch.zeros(3)})


def test_open_clip_errors():
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        from_open_clip("ViT-Z-99")


def test_text_attention_causal_hint_matches_explicit_mask():
    "The text blocks tell SDPA the mask is causal (flash kernel on GPUs); the result equals the explicit-mask path."
    from hac.models import TextTransformer
    torch.manual_seed(0)
    t = TextTransformer(width=64, layers=2, heads=4).eval()
    toks = torch.randint(1, 1000, (3, 12)); toks[:, -1] = 49407
    with torch.no_grad():
        got = t.forward_tokens(toks)
        n = toks.shape[1]; x = t.token_embed(toks) + t.posit_embed[:n]; m = t.attn_mask[:n, :n]
        for b in t.resblocks:
            h = b.ln_1(x); x = x + b.attn(h, h, h, attn_mask=m, need_weights=False)[0]; x = x + b.mlp(b.ln_2(x))
        ref = t.ln_final(x)[torch.arange(3), toks.argmax(-1)]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
