"""hac.cli: the defaults of `hac unlearn` are the claims protocol's main budget, and every command's --help shows its defaults."""
import argparse
import json
from pathlib import Path

import pytest
import yaml

from hac.cli import build_parser, config_from_args, main
from hac.config import UNLEARN_RECIPE, TrainConfig, pretrain_config
from hac.experiments import protocol

ROOT = Path(__file__).resolve().parents[1]
BUDGET = ("lr", "steps", "warmup", "min_lr_ratio", "batch_size", "forget_batch", "log_every")


def _cfg(*argv) -> TrainConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_unlearn_defaults_are_the_protocols_main_budget():
    cfg = _cfg("unlearn", "--forget", "dog", "--model", "X")
    assert {k: getattr(cfg, k) for k in BUDGET} == dict(lr=2e-5, steps=30, warmup=5, min_lr_ratio=1.0, batch_size=64,
                                                        forget_batch=32, log_every=3)
    # the same numbers as the protocol that decides the claims (so the CLI cannot drift from it) ...
    p = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["protocol"]
    prot = protocol(**{k: p[k] for k in ("steps", "batch_size", "forget_batch", "warmup", "log_every", "probe_size", "test_size")})
    assert {k: getattr(cfg, k) for k in BUDGET} == {"lr": p["lr_grid"][0], **{k: prot[k] for k in BUDGET[1:]}}
    # ... and as the single-concept experiment's main budget (lrs[0])
    single = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["single"]
    assert {k: getattr(cfg, k) for k in BUDGET if k != "min_lr_ratio"} == {"lr": single["lrs"][0],
                                                                           **{k: single[k] for k in BUDGET[1:] if k != "min_lr_ratio"}}
    # the rest is unlearn_config's recipe, whose own defaults (hashed by the experiment notebooks) did not move
    assert (cfg.method, cfg.model_path, cfg.forget, cfg.alpha, cfg.entail_weight, cfg.parent_weight) == \
           ("hac", "X", ["dog"], 1.0, UNLEARN_RECIPE["entail_weight"], UNLEARN_RECIPE["parent_weight"])


def test_unlearn_options_set_and_config_override_the_defaults(tmp_path):
    cfg = _cfg("unlearn", "--forget", "dog", "--model", "X", "--method", "ac", "--lr", "1e-4", "--steps", "9",
               "--batch-size", "16", "--forget-batch", "8", "--min-lr-ratio", "0", "--log-every", "2",
               "--ent-mode", "reanchor", "--norm-mode", "generalize", "--set", "warmup=1", "probe_size=20")
    assert (cfg.method, cfg.lr, cfg.steps, cfg.batch_size, cfg.forget_batch, cfg.min_lr_ratio, cfg.log_every) == \
           ("ac", 1e-4, 9, 16, 8, 0.0, 2)
    assert (cfg.ent_mode, cfg.norm_mode, cfg.warmup, cfg.probe_size) == ("reanchor", "generalize", 1, 20)
    assert _cfg("unlearn", "--forget", "dog", "--model", "X", "--warmup", "2", "--set", "warmup=3").warmup == 3  # --set last
    # --config starts from the file, not from the CLI's defaults
    saved = TrainConfig(method="hac", model_path="m.pt", forget=["dog"], steps=7, lr=1e-3, warmup=0, log_every=7)
    saved.save(tmp_path / "config.json")
    cfg = _cfg("unlearn", "--forget", "dog", "--model", "m.pt", "--config", str(tmp_path / "config.json"))
    assert (cfg.steps, cfg.lr, cfg.warmup, cfg.log_every, cfg.batch_size) == (7, 1e-3, 0, 7, saved.batch_size)


def test_pretrain_and_retrain_keep_the_pretraining_recipe():
    for model in ("meru", "clip"):
        rec = pretrain_config(model)
        for argv in (["pretrain", "--model", model], ["retrain", "--model", model, "--forget", "dog"]):
            cfg = _cfg(*argv)
            assert (cfg.steps, cfg.lr, cfg.batch_size, cfg.warmup, cfg.min_lr_ratio, cfg.log_every) == \
                   (rec.steps, rec.lr, rec.batch_size, rec.warmup, rec.min_lr_ratio, rec.log_every), argv


def _help(command, capsys) -> str:
    with pytest.raises(SystemExit) as e: main([command, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_every_default(capsys):
    h = _help("unlearn", capsys)
    for s in ["(default: 2e-05;", "(default: 30;", "(default: 5)", "(default: 64)", "(default: 32;", "(default: 3)",
              "(default: 1.0)", "configs/default.yaml, protocol", "(default: hac)"]:
        assert s in h, s
    rec = pretrain_config()
    for command in ("pretrain", "retrain"):
        h = _help(command, capsys)
        for s in [f"(default: {rec.lr};", f"(default: {rec.steps};", f"(default: {rec.batch_size})", "PRETRAIN_RECIPES"]:
            assert s in h, (command, s)
    assert "(default: 64)" in _help("eval", capsys)
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("pretrain", "retrain", "unlearn", "eval"):
        fmt = subs[command].formatter_class(command)
        for a in subs[command]._actions:   # every option that is not required says what happens without it
            if a.dest != "help" and not a.required:
                assert "default" in fmt._get_help_string(a), (command, a.option_strings)
