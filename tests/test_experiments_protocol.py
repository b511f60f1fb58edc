"""The per-concept protocol's helpers (hac.experiments): reaching the common target on a trajectory, the
learning-rate rule, the jobs of a set of units and the units.csv row, each on known answers; and the default
profile's `protocol:` section against them."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hac.data import ANIMAL_MNIST_CLASSES
from hac.experiments import (LR_RULES, REACH_STATUSES, UNIT_COLUMNS, choose_lr, protocol, protocol_jobs, record, tune_lr,
                             steps_to_target, unit_row, unlearn_job)
from hac.stats import matched_forget

ROOT = Path(__file__).resolve().parents[1]
THREE = [("CLIP + AC", "clip", "ac"), ("MERU + AC", "meru", "ac"), ("MERU + HAC", "meru", "hac")]
LABELS = [m[0] for m in THREE]


# --- steps_to_target ----------------------------------------------------------------------------------------------

def test_steps_to_target_interpolates():
    # 20 -> 5 crosses 10 at lambda = 2/3 of [3, 6]: step 5, retain 80 + 2/3 (74 - 80) = 76
    s = steps_to_target([0, 3, 6], [40, 20, 5], [90, 80, 74], 10.0)
    assert s["status"] == "reached"
    assert s["step"] == pytest.approx(5.0, abs=1e-12) and s["retain"] == pytest.approx(76.0, abs=1e-12)


def test_steps_to_target_hits_a_logged_step():
    s = steps_to_target(np.array([0, 3, 6, 9]), np.array([50., 30., 10., 0.]), np.array([90., 85., 82., 80.]), 10.0)
    assert (s["status"], s["step"], s["retain"]) == ("reached", 6.0, 82.0)


@pytest.mark.parametrize("forget,status", [([8, 2, 0], "at_start"), ([10, 2, 0], "at_start"), ([40, 30, 20], "not_reached")])
def test_steps_to_target_without_a_crossing_has_no_numbers(forget, status):
    s = steps_to_target([0, 3, 6], forget, [90, 80, 74], 10.0)
    assert s["status"] == status and s["status"] in REACH_STATUSES
    assert math.isnan(s["step"]) and math.isnan(s["retain"])


@pytest.mark.parametrize("seed", range(20))
def test_steps_to_target_agrees_with_matched_forget_after_the_start(seed):
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 33, 3)
    forget = np.sort(rng.uniform(0, 100, len(steps)))[::-1]
    retain = rng.uniform(50, 95, len(steps))
    target = float(rng.uniform(0, 100))
    s, m = steps_to_target(steps, forget, retain, target), matched_forget(steps, forget, retain, target)
    if forget[0] <= target:
        assert s["status"] == "at_start"
    else:
        assert s["status"] == ("reached" if m["reached"] else "not_reached")
        np.testing.assert_equal([s["step"], s["retain"]], [m["step"], m["retain"]])


def test_steps_to_target_needs_the_start():
    with pytest.raises(ValueError, match="must start at step 0"):
        steps_to_target([3, 6], [40, 5], [90, 80], 10.0)
    with pytest.raises(ValueError, match="equal non-empty"):
        steps_to_target([0, 3], [40], [90, 80], 10.0)


# --- choose_lr ----------------------------------------------------------------------------------------------------

def _sel(rows):
    return pd.DataFrame(rows, columns=["lr", "method", "seed", "status"])


def _runs(status_of, grid, seeds=(0,)):
    "Selection runs of every (lr, method, seed) in `grid`: status_of(lr, method, seed) -> status."
    return _sel([(lr, m, s, status_of(lr, m, s)) for lr in grid for m in LABELS for s in seeds])


GRID = [2e-5, 5e-5, 1e-4, 2e-4]


def test_choose_lr_smallest_lr_where_every_method_reaches():
    # CLIP + AC reaches from 2e-5, the MERU methods only from 1e-4: the rule takes 1e-4, not CLIP's own 2e-5
    runs = _runs(lambda lr, m, s: "reached" if lr >= (2e-5 if m == "CLIP + AC" else 1e-4) else "not_reached", GRID)
    assert choose_lr(runs, GRID, LABELS, [0]) == dict(lr=1e-4, reached=True, next=None)


def test_choose_lr_is_the_smallest_even_if_a_larger_lr_fails():
    runs = _runs(lambda lr, m, s: "reached" if lr == 5e-5 else "not_reached", GRID)
    assert choose_lr(runs, GRID, LABELS, [0])["lr"] == 5e-5
    assert choose_lr(runs, list(reversed(GRID)), LABELS, [0])["lr"] == 5e-5   # the grid's order does not matter


def test_choose_lr_asks_for_the_next_lr_while_undecided():
    first = _runs(lambda lr, m, s: "not_reached", GRID[:1])
    assert choose_lr(first, GRID, LABELS, [0]) == dict(lr=None, reached=False, next=5e-5)
    assert choose_lr(_sel([]), GRID, LABELS, [0]) == dict(lr=None, reached=False, next=2e-5)
    # an lr that meets the rule decides it although the larger ones never ran
    assert choose_lr(_runs(lambda lr, m, s: "reached", GRID[:1]), GRID, LABELS, [0]) == dict(lr=2e-5, reached=True, next=None)


def test_choose_lr_none_reaching_takes_the_largest_as_not_reached():
    runs = _runs(lambda lr, m, s: "not_reached" if m == "MERU + HAC" else "reached", GRID)
    assert choose_lr(runs, GRID, LABELS, [0]) == dict(lr=2e-4, reached=False, next=None)


def test_choose_lr_at_start_counts_as_reaching():
    runs = _runs(lambda lr, m, s: "at_start" if m == "MERU + AC" else "reached", GRID[:1])
    assert choose_lr(runs, GRID, LABELS, [0])["lr"] == 2e-5


def test_choose_lr_every_selection_seed_must_reach():
    runs = _runs(lambda lr, m, s: "not_reached" if (s == 1 and lr < 1e-4) else "reached", GRID, seeds=(0, 1))
    assert choose_lr(runs, GRID, LABELS, [0, 1])["lr"] == 1e-4
    assert choose_lr(runs[runs.seed == 0], GRID, LABELS, [0])["lr"] == 2e-5   # seed 0 alone would have taken 2e-5


def test_choose_lr_refuses_incomplete_lrs_and_unknown_rules():
    runs = _runs(lambda lr, m, s: "not_reached", GRID[:1])
    with pytest.raises(ValueError, match="lacks the runs"):
        choose_lr(runs[runs.method != "MERU + HAC"], GRID, LABELS, [0])
    with pytest.raises(ValueError, match="unknown rule"):
        choose_lr(runs, GRID, LABELS, [0], rule="best_retain")
    assert "smallest" in LR_RULES["smallest_reaching"] and "largest" in LR_RULES["smallest_reaching"]


# --- protocol_jobs ------------------------------------------------------------------------------------------------

P = protocol(steps=30, batch_size=64, forget_batch=32, warmup=5, log_every=3, probe_size=300, test_size=0)
MODELS = {k: {str(s): f"{k}{s}.pt" for s in range(3)} for k in ("clip", "meru")}


def test_protocol_jobs_one_run_per_unit_and_method():
    jobs, meta = protocol_jobs(MODELS, [("dog", 0), ("dog", 2), ("cat", 1)], THREE, {"dog": 5e-5, "cat": 2e-5}, "runs", **P)
    assert len(jobs) == len(meta) == 9
    assert [(c.model_path, c.forget, c.seed, c.lr, c.method) for c, _ in jobs[6:]] == [
        ("clip1.pt", ["cat"], 1, 2e-5, "ac"), ("meru1.pt", ["cat"], 1, 2e-5, "ac"), ("meru1.pt", ["cat"], 1, 2e-5, "hac")]
    assert meta[4] == dict(concept="dog", seed=2, method="MERU + AC", model="MERU", recipe="meru", loss="ac", lr=5e-5, overrides="")
    assert len({o for _, o in jobs}) == 9   # nine different runs
    assert all(c.min_lr_ratio == 1.0 and c.steps == 30 and c.threads == 1 for c, _ in jobs)


def test_protocol_jobs_share_runs():
    units, _ = protocol_jobs(MODELS, [("dog", 0), ("dog", 1)], THREE, {"dog": 5e-5}, "runs", **P)
    sel, _ = protocol_jobs(MODELS, [("dog", 0)], THREE, {"dog": 5e-5}, "runs", **P)
    assert [o for _, o in sel] == [o for _, o in units[:3]]            # the selection run at the chosen lr is the unit run
    single = unlearn_job("hac", "meru0.pt", ["dog"], "runs", seed=0, lr=5e-5, **P)[1]   # 02_single_concept's job
    assert units[2][1] == single
    other = protocol_jobs(MODELS, [("dog", 0)], THREE, {"dog": 2e-5}, "runs", **P)[0]
    assert not {o for _, o in other} & {o for _, o in sel}             # another lr: other runs


def test_protocol_jobs_recipes_and_overrides():
    models = {**MODELS, "meru@entail1": {str(s): f"cone{s}.pt" for s in range(3)}}
    arms = [("MERU[entail 1] + HAC", "meru@entail1", "hac"), ("MERU[entail 1] + HAC x3", "meru@entail1", "hac", {"ent": 3.0, "norm": 3.0})]
    jobs, meta = protocol_jobs(models, [("dog", 1)], arms, {"dog": 5e-5}, "runs", **P)
    assert [c.model_path for c, _ in jobs] == ["cone1.pt", "cone1.pt"]
    assert (jobs[0][0].ent, jobs[0][0].norm, jobs[1][0].ent, jobs[1][0].norm) == (1.0, 1.0, 3.0, 3.0)
    assert jobs[0][1] != jobs[1][1]                                     # the overrides make another run
    assert meta[1]["model"] == "MERU" and meta[1]["recipe"] == "meru@entail1" and meta[1]["overrides"] == '{"ent": 3.0, "norm": 3.0}'
    with pytest.raises(KeyError, match="meru@entail3"):
        protocol_jobs(models, [("dog", 1)], [("x", "meru@entail3", "ac")], {"dog": 5e-5}, "runs", **P)


# --- unit_row -----------------------------------------------------------------------------------------------------

def _hist(forget, retain, every=3):
    return pd.DataFrame({"step": np.arange(len(forget)) * every, "probe_forget_acc": forget, "probe_retain_acc": retain})


METRICS = {"before": {"forget_acc": .45, "retain_acc": .88, "forget_prob": .5},
           "after": {"forget_acc": .06, "retain_acc": .75, "forget_prob": .12, "forget_auc": .61}, "steps": 6,
           "train_time_s": 1.0}


def test_unit_row_known_answers():
    row = unit_row(_hist([.40, .20, .05], [.90, .80, .74]), METRICS, 10.0, concept="dog", seed=3, method="MERU + HAC")
    assert list(row)[:3] == ["concept", "seed", "method"]
    assert (row["status"], row["steps"], row["target_forget_acc"]) == ("reached", 6, 10.0)
    np.testing.assert_allclose([row["steps_to_target"], row["retain_at_target"], row["forget_at_budget"],
                                row["forget_prob_after"], row["forget_auc_after"], row["probe_forget_start"],
                                row["probe_retain_end"], row["retain_before"]],
                               [5.0, 76.0, 6.0, 12.0, .61, 40.0, 74.0, 88.0], atol=1e-9)
    assert set(row) - set(record(METRICS)) <= set(UNIT_COLUMNS)


def test_unit_row_at_start_is_excluded_from_matched_numbers():
    row = unit_row(_hist([.08, .02, .0], [.90, .85, .80]), METRICS, 10.0, concept="dog", seed=0)
    assert row["status"] == "at_start" and math.isnan(row["steps_to_target"]) and math.isnan(row["retain_at_target"])
    assert row["forget_at_budget"] == pytest.approx(6.0)   # the budget endpoint stays


# --- the protocol's default-size configuration (configs/default.yaml, section protocol) ----------------------------

def test_protocol_config():
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    p = cfg["protocol"]
    seeds = cfg["pretrain"]["seeds"] + cfg["pretrain"]["unit_seeds"]
    assert len(seeds) >= 5 and p["seeds"] == []                              # every pretrained seed is a unit: >= 5
    assert [float(w) for w in p["recipes"]] == [float(w) for w in cfg["pretrain"]["unit_recipes"]]   # models exist
    assert set(p["sweep_concepts"]) <= set(p["concepts"])
    assert sorted(p["concepts"]) == sorted(ANIMAL_MNIST_CLASSES)               # every leaf is a forget set
    assert set(p["selection_seeds"]) <= set(cfg["pretrain"]["seeds"])
    assert p["lr_rule"] in LR_RULES and p["lr_grid"] == sorted(p["lr_grid"])
    assert p["target_forget_acc"] == pytest.approx(100 / len(ANIMAL_MNIST_CLASSES))   # chance
    assert set(p["endpoints"]) <= set(UNIT_COLUMNS)


@pytest.mark.parametrize("seed", range(40))
def test_tune_lr_gentlest_rule_properties(seed):
    "gentlest_near_best_retain on random tuning tables: a reaching rate no larger than the best-retain rule's, within tol of its retain."
    rng = np.random.default_rng(seed)
    grid, tol = [2e-5, 5e-5, 1e-4, 2e-4], float(rng.choice([0.0, 0.5, 1.0, 3.0]))
    rows = []
    for m in ("A", "B", "C"):
        for lr in grid:
            for s in (0, 1):
                st = rng.choice(["reached", "not_reached", "at_start"], p=[0.6, 0.3, 0.1])
                rows.append(dict(method=m, lr=lr, seed=s, status=st, retain_at_target=80 + 3 * rng.standard_normal() if st != "not_reached" else np.nan,
                                 probe_forget_end=float(rng.uniform(0, 50))))
    runs = pd.DataFrame(rows)
    best = tune_lr(runs).set_index("method")
    gent = tune_lr(runs, "gentlest_near_best_retain", tol).set_index("method")
    assert (best.reached == gent.reached).all()                          # the tie-break never changes whether a rate reaches
    for m in best.index:
        if not best.reached[m]:
            assert gent.lr[m] == best.lr[m]                              # nothing reached: both take the lowest final forget
            continue
        assert gent.lr[m] <= best.lr[m]                                  # the gentlest of the ties, never a larger rate
        assert gent.retain_at_target[m] >= best.retain_at_target[m] - tol - 1e-9
        ok = runs[runs.method == m].groupby("lr").filter(lambda g: g.status.isin(["reached", "at_start"]).all())
        smaller = ok[ok.lr < gent.lr[m]].groupby("lr").retain_at_target.mean()
        assert (smaller < best.retain_at_target[m] - tol).all()          # every smaller reaching rate lost more than tol
    if tol == 0.0: assert gent.lr.to_dict() == best.lr.to_dict()
