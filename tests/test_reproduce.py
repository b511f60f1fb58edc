"""The papermill runner on a throw-away repository: order, resume, failures, parameter checks."""
import json
from pathlib import Path

import nbformat
import pytest

from hac.reproduce import ReproduceError, check_parameters, load_manifest, profile_params, reproduce


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
    from hac.core import atomic_file, atomic_save, atomic_write_json
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
    from hac.core import git_commit
    assert git_commit(tmp_path) == "unknown"                       # not a checkout
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", git_commit())    # this checkout
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q"); (tmp_path / "f.txt").write_text("1")
    run("add", "f.txt"); run("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "x")
    sha = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    (tmp_path / "f.txt").write_text("2")
    assert git_commit(tmp_path) == sha + "+dirty"


# ---------------------------------------------------------------- only declared artifacts in the figures folder

def test_render_prunes_undeclared_files(repo):
    "After a render notebook ran, files of the figures folder that nothing declares are removed; others stay."
    params = "run_dir: str = 'scratch'\nruns_root: str = 'scratch'\nout_dir: str = 'scratch'\nprofile: str = 'quick'\n"
    body = ("import json, pathlib\npathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n"
            "out = pathlib.Path(out_dir); out.mkdir(parents=True, exist_ok=True)\n"
            "for f in ('table_1_main.csv', 'table_1_main.md', 'table_9_extra.csv', 'README.md'): (out / f).write_text('x')\n"
            "pathlib.Path(run_dir, 'metrics.json').write_text(json.dumps({'items': ['table_1_main', 'table_9_extra']}))\n")
    make_nb(repo / "nbs" / "render.ipynb", params, body)
    (repo / "configs" / "reproduce.yaml").write_text(
        "render_outputs: [README.md]\nexperiments:\n  a: {notebook: nbs/a.ipynb, produces: [table_1_main]}\n"
        "  render: {notebook: nbs/render.ipynb, needs: [a], render: true}\n")
    figs = repo / "paper_figures"
    for stale in ("table_5_baselines.csv", "table_5_baselines.tex", "figure_6_tradeoff.png"):
        (figs / stale).parent.mkdir(parents=True, exist_ok=True); (figs / stale).write_text("old")
    logs = []
    s = reproduce("default", root=repo, runs_root=repo / "runs", log=logs.append)
    assert sorted(p.name for p in figs.iterdir()) == ["README.md", "table_1_main.csv", "table_1_main.md", "table_9_extra.csv"]
    assert sorted(Path(p).name for p in s["removed"]) == ["figure_6_tradeoff.png", "table_5_baselines.csv", "table_5_baselines.tex"]
    assert sum("removed" in l and "table_5_baselines" in l for l in logs) == 2
    assert any("warning: the render wrote table_9_extra" in l for l in logs)   # listed by the render, not in the manifest: kept
    # a folder given with --out-dir is never pruned
    other = repo / "elsewhere"; other.mkdir(); (other / "mine.txt").write_text("keep")
    reproduce("default", out_dir=other, root=repo, runs_root=repo / "runs", log=lambda *_: None)
    assert (other / "mine.txt").exists() and (other / "table_1_main.csv").exists()


def test_paper_figures_hold_only_declared_artifacts():
    "Every committed file of paper_figures/ is declared in configs/reproduce.yaml (nothing stale lingers)."
    from hac.reproduce import declared_artifacts, undeclared_files
    root = Path(__file__).parents[1]
    assert undeclared_files(root / "paper_figures", declared_artifacts(root)) == []


def test_render_notebook_writes_only_declared_items():
    "Each table/figure name written literally in the render notebook is declared by some experiment's `produces`."
    import re
    from hac.reproduce import declared_artifacts
    root = Path(__file__).parents[1]
    nb = nbformat.read(str(root / "nbs" / "paper" / "90_render.ipynb"), as_version=4)
    stems = set(re.findall(r"\b(?:table|figure)_\d+[a-z]?(?:_[a-z0-9]+)+", "\n".join(c.source for c in nb.cells)))
    assert stems and stems <= declared_artifacts(root), sorted(stems - declared_artifacts(root))


# ---------------------------------------------------------------- hac reproduce --check

CLAIMS = ("claim,verdict,effect,ci_low,ci_high,p,n,evidence\n"
          "HAC forgets dog,does not hold,-1.5,-10.0,7.0,0.36,3,some text\n"
          "AC keeps retain,holds,3.5,1.0,6.0,0.01,3,more text\n")
TABLE = ("forget,method,forget_acc_mean,forget_acc_std,forget_acc_ci_low,forget_acc_ci_high,seeds,wall_seconds\n"
         "dog,CLIP + AC,50.0,3.0,42.0,58.0,3,12.0\n"
         "dog,MERU + HAC,40.0,0.0,40.0,40.0,3,13.0\n"
         "cat,MERU + HAC,30.0,1.0,27.5,32.5,3,14.0\n")


@pytest.fixture
def figures(tmp_path):
    "A reference figures folder (claims, a table with mean/std/seeds, a figure) and an identical candidate."
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "claims.csv").write_text(CLAIMS)
    (ref / "table_1_main.csv").write_text(TABLE)
    (ref / "figure_1_tsne.png").write_bytes(b"\x89PNG")
    import shutil
    return ref, Path(shutil.copytree(ref, tmp_path / "candidate"))


def _check(capsys, cand, ref):
    from hac.cli import main
    rc = main(["reproduce", "--check", "--out-dir", str(cand), "--reference", str(ref)])
    return rc, capsys.readouterr().out


def test_check_reports_changed_verdict_and_number(figures, capsys):
    ref, cand = figures
    (cand / "claims.csv").write_text(CLAIMS.replace("dog,does not hold", "dog,holds"))
    (cand / "table_1_main.csv").write_text(TABLE.replace("dog,CLIP + AC,50.0", "dog,CLIP + AC,56.0")     # 6 < 3*sqrt(6) = 7.35
                                                .replace("cat,MERU + HAC,30.0", "cat,MERU + HAC,45.0")   # 15 > 3*sqrt(2/3) = 2.45
                                                .replace(",12.0\n", ",99.0\n"))                          # wall time: ignored
    rc, out = _check(capsys, cand, ref)
    assert rc == 1
    rows = {l.split(" | ")[1] + " / " + l.split(" | ")[2]: l for l in out.splitlines() if l.startswith("| ")}
    assert rows["HAC forgets dog / verdict"].rstrip(" |").endswith("verdict differs")
    assert "| 30 | 45 |" in rows["cat / MERU + HAC / forget_acc_mean"] and rows["cat / MERU + HAC / forget_acc_mean"].endswith("outside |")
    assert rows["dog / CLIP + AC / forget_acc_mean"].endswith("within |")          # reported, not a failure
    assert not any("wall_seconds" in r for r in rows)
    assert out.strip().splitlines()[-1].startswith("1 verdicts differ, 1 numbers outside tolerance (")


def test_check_identical_folders_pass(figures, capsys):
    rc, out = _check(capsys, *reversed(figures))
    assert rc == 0 and "no differences" in out and "0 verdicts differ, 0 numbers outside tolerance" in out


def test_check_missing_file_row_and_claim_fail(figures, capsys):
    ref, cand = figures
    (cand / "figure_1_tsne.png").unlink()
    (cand / "table_1_main.csv").write_text("\n".join(TABLE.splitlines()[:3]) + "\n")   # the cat row lost
    (cand / "claims.csv").write_text("\n".join(CLAIMS.splitlines()[:2]) + "\n")        # a claim lost
    rc, out = _check(capsys, cand, ref)
    assert rc == 1 and out.count("| missing |") == 3 and "3 files, rows or columns missing" in out


def test_check_tolerates_new_claim_columns(figures):
    "claims.csv's columns may change: only `claim` and `verdict` must be on both sides."
    from hac.reproduce import check_failed, check_reproduction
    ref, cand = figures
    (cand / "claims.csv").write_text(CLAIMS.replace("claim,verdict,effect,ci_low,ci_high,p,n,evidence",
                                                    "claim,verdict,effect,ci_low,ci_high,p,n_units,evidence")
                                           .replace(",0.36,", ",0.04,"))   # p is judged through the verdict only
    assert not check_failed(check_reproduction(cand, ref))


def test_check_leaves_unit_records_to_the_claims(figures):
    "claim_units.csv must be on both sides, but which units pair may differ: its rows are not compared."
    from hac.reproduce import UNIT_RECORDS, check_failed, check_reproduction
    ref, cand = figures
    assert "claim_units.csv" in UNIT_RECORDS
    (ref / "claim_units.csv").write_text("claim,key,direction,concept,seed,effect\nAC keeps retain,k,greater,dog,0,1.0\n")
    (cand / "claim_units.csv").write_text("claim,key,direction,concept,seed,effect\nAC keeps retain,k,greater,cat,1,9.0\n")
    assert not check_failed(check_reproduction(cand, ref))
    (cand / "claim_units.csv").unlink()
    assert check_failed(check_reproduction(cand, ref))                # a file on one side only still fails


def test_check_default_reference_is_git_head(tmp_path):
    "Without --reference, the candidate (default: <repo>/paper_figures) is compared with paper_figures/ at git HEAD."
    import subprocess
    from hac.reproduce import reference_from_git, run_check
    figs = tmp_path / "paper_figures"; figs.mkdir()
    (figs / "claims.csv").write_text(CLAIMS); (figs / "table_1_main.csv").write_text(TABLE)
    logs = []
    with pytest.raises(FileNotFoundError, match="is not a git checkout: pass --reference FOLDER"):
        run_check(root=tmp_path, log=logs.append)
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    run("init", "-q"); run("add", "paper_figures"); run("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "figures")
    assert run_check(root=tmp_path, log=logs.append) == 0 and "at git HEAD" in logs[-2]
    (figs / "claims.csv").write_text(CLAIMS.replace("dog,does not hold", "dog,holds"))
    assert run_check(root=tmp_path, log=logs.append) == 1 and "1 verdicts differ" in logs[-1]
    assert run_check(reference="HEAD", root=tmp_path, log=logs.append) == 1   # a revision given by name
    # the folder is found relative to the repository root, also when that root is a sub-folder of the git checkout
    sub = tmp_path / "proj" / "paper_figures"; sub.mkdir(parents=True); (sub / "table_1_main.csv").write_text(TABLE)
    with pytest.raises(FileNotFoundError, match="no paper_figures/ at git revision 'HEAD'"):
        reference_from_git(tmp_path / "proj")
    run("add", "proj"); run("-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "project in a sub-folder")
    assert [p.name for p in reference_from_git(tmp_path / "proj").iterdir()] == ["table_1_main.csv"]
    assert run_check(root=tmp_path / "proj", log=logs.append) == 0


def test_check_on_the_committed_figures():
    "The real tables parse, every column gets a kind, and a folder checked against itself passes."
    from hac.reproduce import check_counts, check_failed, check_reproduction
    figs = Path(__file__).parents[1] / "paper_figures"
    findings = check_reproduction(figs, figs)
    assert not check_failed(findings) and check_counts(findings)["compared"] > 1000
    assert {f["kind"] for f in findings} >= {"verdict", "count", "points", "unit", "text"}


def test_every_paper_item_has_one_producer():
    "configs/reproduce.yaml: no paper item is in the `produces` of two experiments (load_manifest refuses that too)."
    import yaml
    from hac.reproduce import item_producers
    root = Path(__file__).parents[1]
    raw = yaml.safe_load((root / "configs" / "reproduce.yaml").read_text())["experiments"]
    owners = {}
    for name, e in raw.items():
        for item in e.get("produces") or []: owners.setdefault(item, []).append(name)
    assert {i: ns for i, ns in owners.items() if len(ns) > 1} == {}
    assert item_producers(load_manifest(root)) == owners


def test_render_reads_only_declared_outputs():
    "The render opens no run folder: every file it reads through art() is declared in the manifest's `outputs`."
    import re
    from hac.reproduce import experiment_output
    root = Path(__file__).parents[1]
    nb = nbformat.read(str(root / "nbs" / "paper" / "90_render.ipynb"), as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    reads = set(re.findall(r"""\b(?:art|csv|json)\(["'](\w+)["'], ["']([\w.]+)["']""", src))   # R.art / R.csv / R.json
    assert len(reads) > 30
    for exp, name in sorted(reads):   # ValueError naming the fix if undeclared
        experiment_output(exp, name, profile="quick", runs_root=root / "runs", root=root, missing_ok=True)
    assert not re.findall(r"\.run_dir\b|history\.json|model\.pt|\bR / ", src)


def test_render_notebook_is_slim():
    "The render only calls the library (hac.paper): no code cell over 25 lines, no function, lambda or class defined in it."
    import ast
    root = Path(__file__).parents[1]
    nb = nbformat.read(str(root / "nbs" / "paper" / "90_render.ipynb"), as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code and max(len(s.splitlines()) for s in code) <= 25, [len(s.splitlines()) for s in code]
    defs = [type(n).__name__ for s in code for n in ast.walk(ast.parse(s))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))]
    assert defs == [], defs


def test_experiments_write_what_they_declare():
    "Each experiment notebook's files written into its folder (`out / \"name\"`) are exactly its declared `outputs`."
    import re
    root = Path(__file__).parents[1]
    for exp in load_manifest(root).values():
        if exp.render: continue
        nb = nbformat.read(str(root / exp.notebook), as_version=4)
        written = set(re.findall(r'out / "([^".][^"]*)"', "\n".join(c.source for c in nb.cells)))
        assert written == set(exp.outputs), (exp.name, sorted(written ^ set(exp.outputs)))


def test_long_profile_is_the_default_with_the_benchmark_on_every_leaf():
    "configs/long.yaml: the default's experiments and parameters, the benchmark's units on every protocol leaf; all valid."
    exps = load_manifest()
    runs_in = {p: [n for n, e in exps.items() if e.profiles is None or p in e.profiles] for p in ("default", "long")}
    assert runs_in["long"] == runs_in["default"]
    long, default = profile_params("long"), profile_params("default")
    assert {k: v for k, v in long.items() if k != "benchmark"} == {k: v for k, v in default.items() if k != "benchmark"}
    b = long["benchmark"]
    assert b["concepts"] == default["protocol"]["concepts"] and set(b["gap_concepts"]) <= set(b["concepts"])
    assert set(b["gap_concepts"]) == {fs[0] for fs in default["pretrain"]["forget_sets"]}   # references the pretraining makes
    root = Path(__file__).parents[1]
    for n in runs_in["long"]:
        extra = {"out_dir": "o", "profile": "long"} if exps[n].render else {}
        check_parameters(root / exps[n].notebook, {**long.get(n, {}), "run_dir": "r", "runs_root": "r", **extra})
