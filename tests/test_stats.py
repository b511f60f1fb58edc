"Claim logic and matched forgetting (hac.stats): every verdict reachable, known curves, bad input."
import math

import numpy as np
import pandas as pd
import pytest

from hac.stats import VERDICTS, matched_forget, paired_test, seed_table, sign_test, summarize


@pytest.mark.parametrize("a,b,direction,verdict", [
    ([10.0, 12.0, 11.0, 13.0], [5.0, 6.0, 5.5, 6.5], "greater", "holds"),
    ([10.0, 12.0, 11.0, 13.0], [5.0, 6.0, 5.5, 6.5], "less", "does not hold"),
    ([1.0, -1.0, 0.5], [0.0, 0.0, 0.0], "greater", "does not hold"),      # noise around zero
    ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], "less", "untestable"),            # both on the floor: nothing to rank
    ([3.0], [1.0], "greater", "untestable"),                              # one seed
    ([3.0, math.nan, math.nan], [1.0, 2.0, math.nan], "greater", "untestable"),  # one seed with both values
])
def test_paired_test_verdicts(a, b, direction, verdict):
    r = paired_test(a, b, direction)
    assert r["verdict"] == verdict and r["verdict"] in VERDICTS and r["reason"]


def test_paired_test_matches_scipy_one_sided():
    from scipy.stats import ttest_rel
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 8), rng.normal(0, 1, 8)
    r = paired_test(a, b, "greater")
    ref = ttest_rel(a, b, alternative="greater")
    assert math.isclose(r["p"], ref.pvalue, rel_tol=1e-9) and math.isclose(r["t"], ref.statistic, rel_tol=1e-9)


def test_paired_test_bad_input():
    with pytest.raises(ValueError, match="direction"):
        paired_test([1, 2], [0, 1], "more")
    with pytest.raises(ValueError, match="equal-length"):
        paired_test([1, 2, 3], [0, 1], "less")


def test_sign_test_and_summary():
    assert sign_test(56, 57)["verdict"] == "holds" and sign_test(28, 57)["verdict"] == "does not hold"
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
