"""hac.viz.forest_plot: the per-concept forest plot renders to a PNG through save_figure."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hac import viz as V

CONCEPTS = ["airplane", "bird", "bus", "cat", "dog", "elephant", "horse", "pizza", "ship", "truck"]


def _table():
    "2 comparisons x 10 concepts + pooled rows; every third concept flips sign, one row is NaN."
    rows = []
    for comp, sign in [("retain", 1.0), ("drift", -1.0)]:
        eff = [sign * (-1.5 if i % 3 == 0 else 2.0) + 0.1 * i for i in range(10)]
        rows += [dict(comparison=comp, concept=c, effect=e, ci_low=e - 0.5, ci_high=e + 0.5, n_seeds=5)
                 for c, e in zip(CONCEPTS, eff)]
        rows.append(dict(comparison=comp, concept="pooled", effect=sign, ci_low=sign - 0.5, ci_high=sign + 0.5, n_seeds=50))
    df = pd.DataFrame(rows)
    df.loc[(df.comparison == "drift") & (df.concept == "horse"), ["effect", "ci_low", "ci_high"]] = np.nan
    return df


def test_forest_plot_saves_png(tmp_path):
    fig = V.forest_plot(_table(), margins={"retain": 1.0}, directions={"retain": "greater", "drift": "less"},
                        xlabel="difference (pp)")
    try:
        assert len(fig.axes) == 2
        paths = V.save_figure(fig, tmp_path / "forest", formats=("png",))
    finally:
        plt.close(fig)
    assert paths == [tmp_path / "forest.png"]
    assert paths[0].exists() and paths[0].stat().st_size > 0
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
