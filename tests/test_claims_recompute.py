"""The committed claims follow from the committed units: every row of `paper_figures/claims.csv` is recomputed from
`paper_figures/claim_units.csv` (the per-unit effects the render tested) with `hac.stats` and `configs/claims.yaml`,
then Holm and the verdicts over the whole family. A claim, interval or verdict typed or edited by hand fails here."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hac.paper import claim_row
from hac.stats import decide

ROOT = Path(__file__).resolve().parents[1]
FIGS = ROOT / "paper_figures"
STATS = ["effect", "ci_low", "ci_high", "p", "p_tost", "mde"]


def recompute(claims: pd.DataFrame, units: pd.DataFrame, cc: dict) -> pd.DataFrame:
    "claims.csv's statistics and verdicts recomputed: `claim_row` (claim_test with the claim's margin) per claim with units, the rest (the sign test) as given."
    rows = []
    for r in claims.itertuples():
        u = units[units.claim == r.claim]
        if not len(u):
            rows.append({**r._asdict(), "recomputed": False}); continue
        t = claim_row(u.key.iloc[0], r.claim, u.effect.to_numpy(float), u.seed.to_numpy(), direction=u.direction.iloc[0],
                      what="", cc=cc)
        rows.append(dict(claim=r.claim, **{k: t[k] for k in [*STATS, "n_units", "n_seeds", "method"]},
                         direction=r.direction, testable=r.testable, recomputed=True))
    out = decide(pd.DataFrame(rows), alpha=float(cc["alpha"]))
    return out.set_index("claim")


@pytest.fixture(scope="module")
def committed():
    if not (FIGS / "claim_units.csv").exists():
        pytest.fail("paper_figures/claim_units.csv is missing: regenerate paper_figures with `make reproduce`")
    return (pd.read_csv(FIGS / "claims.csv"), pd.read_csv(FIGS / "claim_units.csv"),
            yaml.safe_load((ROOT / "configs" / "claims.yaml").read_text()))


def test_every_claim_text_is_unique_and_only_the_sign_test_lacks_units(committed):
    claims, units, _ = committed
    assert claims.claim.is_unique and set(units.claim) <= set(claims.claim)
    bare = claims[~claims.claim.isin(units.claim)]
    assert ((bare.method.str.startswith("sign")) | (bare.n_units == 0)).all(), bare.claim.tolist()
    assert units.groupby("claim").key.nunique().eq(1).all() and units.groupby("claim").direction.nunique().eq(1).all()


def test_committed_claims_recompute_from_their_units(committed):
    claims, units, cc = committed
    new = recompute(claims, units, cc)
    ref = claims.set_index("claim")
    done = new.index[new.recomputed.astype(bool)]
    assert len(done) == claims.claim.isin(units.claim).sum() > 0          # the others: the sign test, claims without units
    for col in STATS:
        a, b = ref.loc[done, col].to_numpy(float), new.loc[done, col].to_numpy(float)
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)
    for col in ("n_units", "n_seeds", "method"):
        assert ref.loc[done, col].tolist() == new.loc[done, col].tolist(), col
    np.testing.assert_allclose(new.loc[ref.index, "p_holm"].to_numpy(float), ref.p_holm.to_numpy(float), rtol=1e-9,
                               atol=1e-12, equal_nan=True)
    assert new.loc[ref.index, "verdict"].tolist() == ref.verdict.tolist()
