"""Claim statistics (hac.stats): oracles (statsmodels, scipy), the cluster bootstrap's known cases and its error rate
under no effect, the four verdicts on planted effects, Holm over a family; matched forgetting and tables."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from hac.stats import (VERDICTS, claim_test, cluster_bootstrap, decide, holm, matched_forget, mde, seed_table, seed_ttest,
                       sign_test, summarize, tost, verdict)


def _oracle(module):
    "statsmodels, a test oracle only (requirements-dev.txt; hac never imports it)."
    return pytest.importorskip(f"statsmodels.stats.{module}")


def _synth(delta, n_seeds, rng, seed_sd=1.0, noise=0.5, per_seed=2):
    "(effects, seeds): delta + an offset shared by the units of a seed + unit noise."
    g = np.repeat(np.arange(n_seeds), per_seed)
    return delta + rng.normal(0, seed_sd, n_seeds)[g] + rng.normal(0, noise, len(g)), g


# --- oracles -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels(seed):
    sm_multitest = _oracle("multitest")
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, 15) ** 2
    p[3] = p[7]                                                    # a tie
    ref = sm_multitest.multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm(p), ref, rtol=0, atol=1e-12)


def test_holm_leaves_nan_out_of_the_family():
    sm_multitest = _oracle("multitest")
    p = np.array([0.01, np.nan, 0.02, 0.5, np.nan])
    adj = holm(p)
    np.testing.assert_allclose(adj[[0, 2, 3]], sm_multitest.multipletests(p[[0, 2, 3]], method="holm")[1], atol=1e-12)
    assert np.isnan(adj[[1, 4]]).all() and np.isnan(holm([np.nan])).all() and holm([]).shape == (0,)


@pytest.mark.parametrize("n,margin,shift", [(3, 2.0, 0.3), (5, 1.0, -0.2), (8, 0.5, 0.0), (20, 0.3, 0.1)])
def test_tost_matches_statsmodels_ttost_paired(n, margin, shift):
    sm_weightstats = _oracle("weightstats")
    rng = np.random.default_rng(n)
    a = rng.normal(shift, 0.5, n); b = rng.normal(0, 0.5, n)
    ref = sm_weightstats.ttost_paired(a, b, -margin, margin)
    r = tost(a - b, margin)
    assert math.isclose(r["p_tost"], float(ref[0]), rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(r["p_lower"], float(ref[1][1]), rel_tol=1e-9, abs_tol=1e-15)
    assert math.isclose(r["p_upper"], float(ref[2][1]), rel_tol=1e-9, abs_tol=1e-15)


def test_tost_is_the_90_percent_interval_inside_the_margin():
    "p_tost < 0.05 exactly when the 90 % Student interval lies inside (-margin, margin)."
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 1), int(rng.integers(3, 12)))
        margin = float(rng.uniform(0.2, 2))
        s = summarize(d)
        h = st.t.ppf(0.95, s["n"] - 1) * s["std"] / math.sqrt(s["n"])
        inside = -margin < s["mean"] - h and s["mean"] + h < margin
        assert (tost(d, margin)["p_tost"] < 0.05) == inside


@pytest.mark.parametrize("n", [3, 4, 5, 10, 30])
@pytest.mark.parametrize("one_sided", [True, False])
def test_mde_matches_statsmodels_power(n, one_sided):
    sm_power = _oracle("power")
    ref = sm_power.TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="larger" if one_sided else "two-sided")
    assert math.isclose(mde(1.0, n, one_sided=one_sided), ref, rel_tol=1e-5)
    assert math.isclose(mde(2.5, n, one_sided=one_sided), 2.5 * ref, rel_tol=1e-5)


def test_mde_at_three_seeds_is_about_seven_points():
    "DESIGN 8: with 3 seeds a paired t-test sees only ~7-point effects (one-sided 0.05, 80 %, sd ~3 points)."
    assert 6.5 < mde(3.0, 3) < 7.5 and math.isnan(mde(3.0, 1)) and math.isnan(mde(math.nan, 5))


@pytest.mark.parametrize("seed", range(4))
def test_seed_ttest_matches_scipy(seed):
    d = np.random.default_rng(seed).normal(0.3, 1, 6)
    r = seed_ttest(d)
    g, l = (st.ttest_1samp(d, 0, alternative=a).pvalue for a in ("greater", "less"))
    assert math.isclose(r["p_greater"], g, rel_tol=1e-9) and math.isclose(r["p_less"], l, rel_tol=1e-9)
    ci = st.ttest_1samp(d, 0).confidence_interval(0.95)
    assert math.isclose(r["ci_low"], ci.low, rel_tol=1e-9) and math.isclose(r["ci_high"], ci.high, rel_tol=1e-9)


# --- the cluster bootstrap -----------------------------------------------------------------------------------------

def test_cluster_bootstrap_deterministic_and_equivariant():
    e, g = _synth(0.5, 6, np.random.default_rng(0), per_seed=3)
    a, b = cluster_bootstrap(e, g, seed=1), cluster_bootstrap(e, g, seed=1)
    assert a == b and cluster_bootstrap(e, g, seed=2) != a
    s = cluster_bootstrap(e + 10.0, g, seed=1)                       # shifting every effect shifts effect and intervals
    for k in ("effect", "ci_low", "ci_high", "ci_t_low", "ci_t_high"):
        assert math.isclose(s[k], a[k] + 10.0, rel_tol=0, abs_tol=1e-9)
    perm = np.random.default_rng(5).permutation(len(e))              # unit order does not matter
    r = cluster_bootstrap(e[perm], g[perm], seed=1)
    for k in ("effect", "se", "ci_low", "ci_high", "p_greater", "p_less"):
        assert math.isclose(r[k], a[k], rel_tol=1e-12, abs_tol=1e-12)


def test_cluster_bootstrap_edge_cases():
    one = cluster_bootstrap([1.0, 2.0], [0, 0])                        # one seed: an effect, nothing else
    assert one["effect"] == 1.5 and one["n_seeds"] == 1 and math.isnan(one["p_greater"]) and math.isnan(one["ci_low"])
    r = cluster_bootstrap([1.0, np.nan, 3.0, 2.0], [0, 0, 1, 2])      # NaN units are dropped
    assert r["n_units"] == 3 and r["n_seeds"] == 3 and r["effect"] == 2.0
    c = cluster_bootstrap([2.0] * 6, [0, 0, 1, 1, 2, 2], n_boot=1000)  # no spread: a degenerate but defined answer
    assert c["ci_low"] == c["ci_high"] == c["ci_t_low"] == c["ci_t_high"] == 2.0 and c["p_greater"] == 1 / 1001
    with pytest.raises(ValueError, match="one entry per unit"):
        cluster_bootstrap([1.0, 2.0], [0])


def test_cluster_bootstrap_unbalanced_se_is_the_cluster_robust_one():
    "se = sqrt(G/(G-1) sum_g (S_g - theta n_g)^2) / N for seeds with different numbers of units."
    e = np.array([1.0, 2.0, 4.0, 0.0, 3.0, 5.0, 6.0]); g = np.array([0, 0, 0, 1, 2, 2, 3])
    S = np.array([7.0, 0.0, 8.0, 6.0]); n = np.array([3.0, 1.0, 2.0, 1.0]); th = S.sum() / n.sum()
    se = math.sqrt(4 / 3 * ((S - th * n) ** 2).sum()) / n.sum()
    r = cluster_bootstrap(e, g, n_boot=200)
    assert math.isclose(r["effect"], th, rel_tol=1e-12) and math.isclose(r["se"], se, rel_tol=1e-12)


@pytest.mark.parametrize("G,per_seed,seed_sd,noise", [(5, 2, 1.0, 0.5), (8, 2, 1.0, 0.5), (8, 1, 0.0, 1.0), (12, 3, 1.0, 1.0)])
def test_cluster_bootstrap_null_rejection_rate(G, per_seed, seed_sd, noise):
    "No effect: the studentized cluster bootstrap rejects (two-sided, 0.05) near 5 % of data sets; the plain one more often."
    rng, draws = np.random.default_rng(100 + G), 400
    rej = {True: 0, False: 0}
    for i in range(draws):
        e, g = _synth(0.0, G, rng, seed_sd=seed_sd, noise=noise, per_seed=per_seed)
        for stud in (True, False):
            b = cluster_bootstrap(e, g, n_boot=1000, seed=i, studentize=stud)
            rej[stud] += 2 * min(b["p_greater"], b["p_less"]) < 0.05
    assert rej[True] / draws <= 0.085                # nominal 0.05; 400 draws: sd ~0.011
    assert rej[False] >= rej[True]


def test_units_as_clusters_would_overstate_the_evidence():
    "Seed offsets shared by a seed's units: a unit bootstrap rejects a true null often, the cluster bootstrap does not."
    rng, draws, rej_c, rej_u = np.random.default_rng(9), 200, 0, 0
    for i in range(draws):
        e, g = _synth(0.0, 6, rng, seed_sd=1.0, noise=0.2, per_seed=5)
        c, u = cluster_bootstrap(e, g, n_boot=500, seed=i), cluster_bootstrap(e, np.arange(len(e)), n_boot=500, seed=i)
        rej_c += 2 * min(c["p_greater"], c["p_less"]) < 0.05
        rej_u += 2 * min(u["p_greater"], u["p_less"]) < 0.05
    assert rej_c / draws <= 0.1 and rej_u / draws >= 0.3


# --- verdicts ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("effect,p_holm,p_tost,direction,word", [
    (2.0, 0.01, np.nan, "greater", "holds"),
    (-2.0, 0.01, np.nan, "less", "holds"),
    (-2.0, 0.01, 0.01, "greater", "reversed"),     # significance first: a significant effect is not "equivalent"
    (2.0, 0.01, np.nan, "less", "reversed"),
    (0.1, 0.3, 0.01, "greater", "equivalent"),
    (0.1, 0.3, 0.2, "greater", "inconclusive"),
    (0.1, np.nan, np.nan, "less", "inconclusive"),
    (0.0, 0.0, np.nan, "greater", "inconclusive"),  # no sign, no direction
])
def test_verdict_table(effect, p_holm, p_tost, direction, word):
    assert verdict(effect, p_holm, p_tost, direction) == word and word in VERDICTS


def test_planted_effects_get_their_verdicts():
    rng = np.random.default_rng(11)
    rows = [claim_test(*_synth(3.0, 8, rng), direction="greater", margin=1.0),
            claim_test(*_synth(3.0, 8, rng), direction="less", margin=1.0),
            claim_test(*_synth(-3.0, 10, rng), direction="less", margin=1.0),
            claim_test(*_synth(0.0, 30, rng, seed_sd=0.1, noise=0.2), margin=0.5)]
    assert list(decide(pd.DataFrame(rows)).verdict) == ["holds", "reversed", "holds", "equivalent"]
    assert [r["method"].startswith("cluster bootstrap") for r in rows] == [False, False, False, True]   # 8, 8, 10: t; 30: bootstrap
    boot = [claim_test(*_synth(d, n, np.random.default_rng(11 + i)), direction=w, margin=1.0, min_seeds=5)
            for i, (d, n, w) in enumerate([(3.0, 8, "greater"), (-3.0, 10, "less")])]
    assert list(decide(pd.DataFrame(boot)).verdict) == ["holds", "holds"] and all(r["method"].startswith("cluster") for r in boot)


@pytest.mark.parametrize("n_seeds", [3, 4, 6, 10])
def test_zero_effect_never_holds_beyond_alpha(n_seeds):
    "200 synthetic data sets with no effect: the share of 'holds' stays at or below alpha (t path and bootstrap path)."
    rng = np.random.default_rng(1000 + n_seeds)
    words = [decide(pd.DataFrame([claim_test(*_synth(0.0, n_seeds, rng), margin=1.0, n_boot=1000, seed=i)])).verdict[0]
             for i in range(200)]
    assert sum(w == "holds" for w in words) / 200 <= 0.05
    assert set(words) <= set(VERDICTS)


def test_deterministic_zero_effect_is_equivalent_or_inconclusive():
    for d in ([0.0, 0.0, 0.0], [0.5, -0.4, -0.1], [1.0, -1.0, 0.0, 0.5, -0.5]):
        for margin in (0.1, 1.0, 5.0):
            r = decide(pd.DataFrame([claim_test(d, np.arange(len(d)), margin=margin)]))
            assert r.verdict[0] in ("equivalent", "inconclusive")
    assert decide(pd.DataFrame([claim_test([0.5, -0.4, -0.1], [0, 1, 2], margin=2.0)])).verdict[0] == "equivalent"


def test_claim_test_switches_method_at_min_seeds_and_reports_both():
    rng = np.random.default_rng(2)
    for lo, hi, kw in ((14, 15, {}), (4, 5, dict(min_seeds=5))):      # the default threshold, and one set by the caller
        few, many = claim_test(*_synth(1.0, lo, rng), **kw), claim_test(*_synth(1.0, hi, rng), **kw)
        assert few["method"].startswith("t-test") and few["p"] == few["p_t"] and np.isfinite(few["p_boot"])
        assert many["method"].startswith("cluster bootstrap") and many["p"] == many["p_boot"] and np.isfinite(many["p_t"])
    m = claim_test([1.0, np.nan, 2.0, 3.0], [0, 1, 1, 2], margin=np.nan)
    assert m["n_missing"] == 1 and m["n_units"] == 3 and m["n_seeds"] == 3 and math.isnan(m["p_tost"])
    one = claim_test([1.0, 2.0], [0, 0], margin=1.0)
    assert math.isnan(one["p"]) and decide(pd.DataFrame([one])).verdict[0] == "inconclusive"


def test_decide_applies_holm_over_the_testable_rows():
    fam = pd.DataFrame(dict(effect=[1.0, 1.0, 1.0, -1.0], p=[0.02, 0.03, 0.04, 0.001], p_tost=np.nan,
                            direction="greater", testable=[True, True, True, False]))
    out = decide(fam)
    np.testing.assert_allclose(out.p_holm[:3], [0.06, 0.06, 0.06], atol=1e-12)   # three tests, each p < 0.05 alone
    assert math.isnan(out.p_holm[3]) and list(out.verdict) == ["inconclusive"] * 4
    assert list(decide(fam.drop(columns="testable")).verdict) == ["inconclusive"] * 3 + ["reversed"]


# --- counting, matched forgetting, tables ----------------------------------------------------------------------------

def test_sign_test_and_summary():
    assert sign_test(56, 57)["verdict"] == "holds" and sign_test(28, 57)["verdict"] == "inconclusive"
    assert sign_test(2, 57)["verdict"] == "reversed" and sign_test(0, 0)["verdict"] == "inconclusive"
    r = sign_test(40, 57)
    assert math.isclose(r["p_two_sided"], st.binomtest(40, 57, 0.5).pvalue, rel_tol=1e-9)
    s = summarize([2.0, 4.0, 6.0, math.nan])
    assert s["n"] == 3 and s["mean"] == 4.0 and s["ci_low"] < 4.0 < s["ci_high"]


@pytest.mark.parametrize("slope", [0.05, 0.1, 0.25])
def test_matched_forget_on_linear_curves(slope):
    steps = np.arange(0, 31, 3)
    forget, retain = 0.9 - slope * steps, 0.8 - 0.002 * steps
    target = 0.3
    m = matched_forget(steps, forget, retain, target)
    s_star = (0.9 - target) / slope
    if s_star <= 30:
        assert m["reached"] and math.isclose(m["step"], s_star, rel_tol=1e-9)
        assert math.isclose(m["retain"], 0.8 - 0.002 * s_star, rel_tol=1e-9)
    else:
        assert not m["reached"] and math.isnan(m["step"])


def test_matched_forget_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        matched_forget([0, 3, 3], [1, 0.5, 0.2], [1, 1, 1], 0.3)
    with pytest.raises(ValueError, match="equal non-empty"):
        matched_forget([], [], [], 0.3)


def test_seed_table_counts_seeds():
    d = pd.DataFrame(dict(m=["a"] * 3, seed=[0, 1, 2], x=[1.0, 2.0, 3.0]))
    t = seed_table(d, ["m"], ["x"])
    assert t.seeds.tolist() == [3] and math.isclose(t.x_mean[0], 2.0)
    with pytest.raises(ValueError, match="not in the records"):
        seed_table(d, ["m"], ["y"])


def test_t_branch_reports_the_mean_of_seed_means_and_centres_its_interval_on_it():
    "Unequal units per seed: the t branch's effect is the mean of the seed means (what it tests), the bootstrap's the unit mean."
    e, g = [1.0, 1.0, 1.0, 1.0, 4.0, 2.0], [0, 0, 0, 0, 1, 2]            # seed means 1, 4, 2; unit mean 10/6
    t, b = claim_test(e, g, margin=1.0), claim_test(e, g, margin=1.0, min_seeds=3)
    assert math.isclose(t["effect"], 7 / 3, rel_tol=1e-12) and math.isclose(b["effect"], 10 / 6, rel_tol=1e-12)
    assert math.isclose((t["ci_low"] + t["ci_high"]) / 2, t["effect"], rel_tol=1e-12)
    ref = st.ttest_1samp([1.0, 4.0, 2.0], 0)                             # scipy's one-sample t-test as the oracle
    assert math.isclose(t["p"], ref.pvalue, rel_tol=1e-9)


@pytest.mark.parametrize("rs", [0, 1, 2])
def test_bootstrap_interval_is_erratic_at_five_unequal_seeds_and_agrees_at_fifteen(rs):
    "Why min_seeds is 15: null data, every third seed with 1 unit and the others 10; widths of the two 95 % intervals."
    def widths(G):
        r, w = np.random.default_rng(100 + rs), []
        n_g = np.where(np.arange(G) % 3 == 2, 1, 10)
        for i in range(150):
            g = np.repeat(np.arange(G), n_g); e = r.normal(0, 0.5, G)[g] + r.normal(0, 1.0, len(g))
            b, t = cluster_bootstrap(e, g, n_boot=1000, seed=i), seed_ttest(pd.Series(e).groupby(g).mean().to_numpy())
            w.append((b["ci_t_high"] - b["ci_t_low"], t["ci_high"] - t["ci_low"]))
        w = np.array(w)
        return (w[:, 0] > w[:, 1]).mean(), np.percentile(w[:, 0], 95) / np.percentile(w[:, 1], 95)
    (wider5, r5), (_, r15) = widths(5), widths(15)
    assert wider5 > 0.6 and r5 > 2.0 and r15 < 1.25                     # measured: 0.70-0.77, 2.7-4.0; 0.95-1.03
