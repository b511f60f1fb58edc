"""The pretraining notebook (nbs/experiments/01_pretrain.ipynb) run by papermill with parameters the profiles do not use."""
import json
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "nbs" / "experiments" / "01_pretrain.ipynb"


def test_pretrain_notebook_without_references(tmp_path):
    "forget_sets = []: models only (what a benchmark with gap_concepts = [] needs), no retrained reference, no crash."
    run_dir, runs_root = tmp_path / "runs" / "pretrain" / "x", tmp_path / "runs"
    pm.execute_notebook(str(NB), str(tmp_path / "out.ipynb"), cwd=str(NB.parent), progress_bar=False, kernel_name="python3",
                        parameters=dict(run_dir=str(run_dir), runs_root=str(runs_root), seeds=[0], steps=2, batch_size=16,
                                        forget_sets=[], test_size=40, cone_sweep=[], unit_seeds=[], unit_recipes=[],
                                        workers=1))
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["forget_sets"] == [] and m["retrained"] == {}
    assert sorted(m["models"]) == ["clip", "meru"] and all(Path(p).is_file() for k in m["models"] for p in m["models"][k].values())
    assert sorted(json.loads((run_dir / "run_configs.json").read_text())) == ["pretrain clip", "pretrain meru"]
    for f in ("retrain_probe.csv", "retrain_diagnostics.csv"):   # written with their header, no rows
        lines = (run_dir / f).read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forget,model,seed"), (f, lines)
