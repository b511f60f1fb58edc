"""The papermill runner on a throw-away repository: order, resume, failures, parameter checks."""
import json
from pathlib import Path

import nbformat
import pytest

from hac.reproduce import ReproduceError, check_parameters, load_manifest, reproduce


def make_nb(path, params_src, body_src):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body_src)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "settings.ini").write_text("[DEFAULT]\n")
    (tmp_path / "configs").mkdir()
    body = ("import json, pathlib\npathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n"
            "if fail: raise RuntimeError('boom')\n"
            "pathlib.Path(run_dir, 'metrics.json').write_text(json.dumps({'x': x}))\n")
    params = "run_dir: str = 'scratch'\nruns_root: str = 'scratch'\nx: int = 1\nfail: bool = False\n"
    make_nb(tmp_path / "nbs" / "a.ipynb", params, body)
    make_nb(tmp_path / "nbs" / "b.ipynb", params, body + "assert pathlib.Path(runs_root, 'a', 'default', 'metrics.json').exists()\n")
    (tmp_path / "configs" / "reproduce.yaml").write_text(
        "experiments:\n  b: {notebook: nbs/b.ipynb, needs: [a]}\n  a: {notebook: nbs/a.ipynb}\n")
    (tmp_path / "configs" / "default.yaml").write_text("a: {x: 5}\n")
    return tmp_path


def test_order_resume_and_outputs(repo):
    assert list(load_manifest(repo)) == ["a", "b"]
    logs = []
    s = reproduce("default", root=repo, runs_root=repo / "runs", log=logs.append)
    assert json.loads((repo / "runs/a/default/metrics.json").read_text()) == {"x": 5}
    cfg = json.loads((repo / "runs/a/default/config.json").read_text())
    assert cfg["parameters"]["x"] == 5 and cfg["profile"] == "default"
    assert (repo / "runs/b/default/executed.ipynb").exists()
    assert set(s["seconds"]) == {"a", "b"}
    # second call: both skipped (same parameters, same notebooks)
    logs.clear()
    reproduce("default", root=repo, runs_root=repo / "runs", log=logs.append)
    assert sum("skipped" in l for l in logs) == 2


def test_failure_names_notebook_and_keeps_finished(repo):
    (repo / "configs" / "default.yaml").write_text("b: {fail: true}\n")
    with pytest.raises(ReproduceError, match=r"b \(nbs/b.ipynb\) failed in cell .*RuntimeError: boom"):
        reproduce("default", root=repo, runs_root=repo / "runs", log=lambda *_: None)
    assert (repo / "runs/a/default/DONE").exists() and not (repo / "runs/b/default/DONE").exists()
    assert (repo / "runs/b/default/failed.ipynb").exists()


def test_profiles_select_experiments(repo):
    "An experiment with `profiles` runs only in those; --only refuses one that its profile skips."
    (repo / "configs" / "reproduce.yaml").write_text(
        "experiments:\n  a: {notebook: nbs/a.ipynb, profiles: [quick]}\n  c: {notebook: nbs/a.ipynb, profiles: [default]}\n")
    s = reproduce("default", root=repo, runs_root=repo / "runs", log=lambda *_: None)
    assert set(s["seconds"]) == {"c"} and not (repo / "runs/a").exists()
    with pytest.raises(ValueError, match=r"do not run in profile 'default'"):
        reproduce("default", only=["a"], root=repo, runs_root=repo / "runs", log=lambda *_: None)


def test_full_profile_runs_only_the_real_data_experiment():
    exps = load_manifest()
    runs_in = {p: [n for n, e in exps.items() if e.profiles is None or p in e.profiles] for p in ("quick", "default", "full")}
    assert runs_in["full"] == ["real"] and "real" in runs_in["quick"] and "real" not in runs_in["default"]
    import yaml
    full = yaml.safe_load((Path(__file__).parents[1] / "configs" / "full.yaml").read_text())
    check_parameters(Path(__file__).parents[1] / exps["real"].notebook,
                     {**full["real"], "run_dir": "r", "runs_root": "r", "out_dir": "o", "profile": "full"})


def test_parameter_checks(repo):
    with pytest.raises(ValueError, match="parameter 'x' must be int"):
        check_parameters(repo / "nbs/a.ipynb", {"x": "five"})
    with pytest.raises(ValueError, match="unknown parameter 'y'"):
        check_parameters(repo / "nbs/a.ipynb", {"y": 1})
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("default", only=["nope"], root=repo, runs_root=repo / "runs")


def test_real_manifest_notebooks_have_one_parameters_cell():
    "Every experiment notebook keeps exactly one `parameters` cell (nbdev_clean must not strip tags)."
    for exp in load_manifest().values():
        nb = nbformat.read(str(Path(__file__).parents[1] / exp.notebook), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, exp.notebook


def test_atomic_writers_leave_old_file_on_crash(tmp_path, monkeypatch):
    import torch
    from hac.reproduce import atomic_file, atomic_save, atomic_write_json
    p = atomic_write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write("{broken"); raise RuntimeError("crash")
    assert json.loads(p.read_text()) == {"a": 1} and [x.name for x in tmp_path.iterdir()] == ["m.json"]
    q = atomic_save({"w": torch.ones(2)}, tmp_path / "c" / "x.pth")
    assert torch.equal(torch.load(q, weights_only=True)["w"], torch.ones(2))
    def crash(obj, f, *a, **k): f.write(b"partial"); raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.zeros(2)}, q)
    monkeypatch.undo()
    assert torch.equal(torch.load(q, weights_only=True)["w"], torch.ones(2))
    assert [x.name for x in q.parent.iterdir()] == ["x.pth"]


def test_git_commit(tmp_path):
    import re
    import subprocess
    from hac.reproduce import git_commit
    assert git_commit(tmp_path) == "unknown"                       # not a checkout
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", git_commit())    # this checkout
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q"); (tmp_path / "f.txt").write_text("1")
    run("add", "f.txt"); run("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "x")
    sha = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    (tmp_path / "f.txt").write_text("2")
    assert git_commit(tmp_path) == sha + "+dirty"
