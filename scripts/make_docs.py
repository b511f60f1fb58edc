"""Lay out the docs site's sources in docs/ (gitignored) for mkdocs (`make docs` runs this, then `mkdocs build`).

Pages: the README (from nbs/index.ipynb) as the home page; one page per library notebook, executed here at build
time (`execute_notebook`: the lessons' answers and figures appear, the committed notebooks stay without outputs;
a notebook that fails stops the build with its name), then nbdev directives removed and `#| hide` cells dropped;
one API page per module, generated here from the docstrings and
docments (fastcore.docments, the nbdev 2 convention, which a static parser cannot read); the experiment and render
notebooks, executed copies from runs/<exp>/<profile>/executed.ipynb when `make reproduce` left them (else the
committed notebook, without outputs); and paper_figures/ (every figure and table). Run with the project's .venv.
The maths (`$...$`, `$$...$$`) stays TeX here: mkdocs typesets it at build time as MathML through the hook
docs-support/mathml_hook.py (mkdocs.yml), so the site needs no MathJax and works offline.
"""
import argparse
import configparser
import importlib
import inspect
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]   # this checkout's hac (API pages) even where .venv is another's
from make_readme import render  # noqa: E402

DOCS = ROOT / "docs"


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


SKIP_TAG = "hac-docs-skip"   # nbclient's skip tag, set in memory on the cells nbdev_test would not run


def tst_flags(root: Path = ROOT) -> set[str]:
    "settings.ini `tst_flags` (space separated, e.g. notest slow cuda): cells marked with one are not run, as in nbdev_test."
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(root / "settings.ini", encoding="utf-8")
    return set(cfg["DEFAULT"].get("tst_flags", "").split())


def directives(text: str) -> dict[str, str]:
    "The leading `#|` lines of a cell as {name: args}, parsed as nbdev 2 does (`#| eval: false` -> {'eval:': 'false'})."
    out = {}
    for line in text.splitlines():
        if not line.strip() or re.match(r"^\s*%%\w+", line): continue      # nbdev passes over blank lines and cell magics
        if not re.match(r"^\s*#\s*\|", line): break
        d = re.sub(r"^\s*#\s*\|", "", line).strip()
        if d.endswith(":"): d = d.replace(":", "")                          # `#| hide:` (Quarto style) is `#| hide`
        parts = d.replace(":", ": ").split()
        if parts: out[parts[0]] = " ".join(parts[1:])
    return out


def _skipped(text: str, flags: set[str]) -> bool:
    "nbdev_test's rule: never `nbdev_export()` (it would rewrite hac/), `#| eval: false`, or a cell with a skipped flag."
    d = directives(text)
    return "nbdev_export" + "(" in text or d.get("eval:", "").lower() == "false" or bool(flags & d.keys())


def kernel_env() -> dict:
    "Environment of the notebook kernel: offline, this checkout's `hac` first, matplotlib's inline backend."
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               # figures as image/png outputs (Agg, which `make` exports for the tests, would draw them and show none);
               # like Agg it needs no display
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def execute_notebook(src: Path, # the notebook; it runs with its own folder as working directory
                     flags: set[str] | None = None, # skip cells with these nbdev flags (default: settings.ini tst_flags)
                     kernel: str = "python3", # the project venv's kernel (`make install` registers it)
                     timeout: int = 900, # seconds a cell may run
                     ) -> dict:
    "The notebook `src` run top to bottom in a fresh kernel (in memory; `src` is not written); raises naming `src` if a cell fails."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    nb = nbformat.read(src, as_version=4)
    flags = tst_flags() if flags is None else set(flags)
    fm = getattr(NBProcessor(src, procs=FrontmatterProc, process=True).nb, "frontmatter_", {})
    if str(fm.get("skip_exec", False)).lower() in ("true", "1", "yes"): return nb   # frontmatter: never run (as nbdev_test)
    for c in nb.cells:
        if c.cell_type == "code" and _skipped(c.source, flags): c.metadata.setdefault("tags", []).append(SKIP_TAG)
    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, skip_cells_with_tag=SKIP_TAG, record_timing=False,
                            resources={"metadata": {"path": str(src.parent)}})
    try:
        client.execute(env=kernel_env())
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        raise RuntimeError(f"make_docs: {src.name} failed to execute, so the docs were not built:\n{e}") from None
    for c in nb.cells:
        tags = c.metadata.get("tags", [])
        if SKIP_TAG in tags:
            tags.remove(SKIP_TAG)
            if not tags: del c.metadata["tags"]
    return nb


def clean(nb: dict) -> dict:
    "The notebook without `#| hide` cells and without `#|` directive lines (what a reader should not see)."
    cells = []
    for c in nb["cells"]:
        text = _src(c)
        if c["cell_type"] == "code":
            if re.search(r"^#\|\s*hide\b", text, re.M): continue
            text = "\n".join(l for l in text.splitlines() if not l.startswith("#|")).strip("\n")
            if not text and not c.get("outputs"): continue
        c = {**c, "source": text}
        cells.append(c)
    return {**nb, "cells": cells}


def write_notebook(nb: dict, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def clean_notebook(src: Path, dst: Path):
    "Copy a notebook (its stored outputs as they are) through `clean`."
    write_notebook(clean(json.loads(src.read_text(encoding="utf-8"))), dst)


def _default_exp(nb: Path) -> str | None:
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        m = re.search(r"^#\|\s*default_exp\s+(\S+)", _src(c), re.M)
        if m: return m.group(1)
    return None


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def api_page(modname: str) -> str:
    "Markdown for `hac.<modname>`: every public name with its signature, docstring and docments table."
    from fastcore.docments import docments
    mod = importlib.import_module(f"hac.{modname}")
    out = [f"# hac.{modname}", "", (mod.__doc__ or "").strip(), ""]
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name, None)
        if obj is None: continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            kind = "class" if inspect.isclass(obj) else "def"
            try: sig = str(inspect.signature(obj))
            except (TypeError, ValueError): sig = "(...)"
            out += [f"## `{name}`", "", f"```python\n{kind} {name}{sig}\n```", "", inspect.getdoc(obj) or "", ""]
            try: dm = docments(obj, full=True)
            except Exception: dm = {}
            rows = [(k, v) for k, v in dm.items() if isinstance(v, dict) and (v.get("docment") or k != "return")
                    and k not in ("self", "cls")]
            if rows:
                out += ["| | type | default | |", "|---|---|---|---|"]
                for k, v in rows:
                    anno = v.get("anno"); anno = "" if anno is inspect._empty else getattr(anno, "__name__", anno)
                    dflt = v.get("default"); dflt = "" if dflt is inspect._empty else repr(dflt)
                    out.append(f"| `{k}` | {_md_escape(anno)} | {_md_escape(dflt)} | {_md_escape(v.get('docment') or '')} |")
                out.append("")
            if inspect.isclass(obj):
                for mname, m in inspect.getmembers(obj, inspect.isfunction):
                    if mname.startswith("_") or m.__qualname__.split(".")[0] != obj.__name__ or not inspect.getdoc(m): continue
                    out += [f"### `{name}.{mname}`", "", f"```python\n{mname}{inspect.signature(m)}\n```", "",
                            inspect.getdoc(m), ""]
        else:
            r = repr(obj)
            out += [f"## `{name}`", "", f"```python\n{name} = {r if len(r) < 300 else r[:300] + ' ...'}\n```", ""]
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flags", default="", help="space-separated tst_flags whose cells run anyway (as nbdev_test --flags)")
    args = p.parse_args(argv)
    if DOCS.exists(): shutil.rmtree(DOCS)
    DOCS.mkdir()
    (DOCS / "index.md").write_text(render().split("\n", 2)[2], encoding="utf-8")  # without the generated-file comment
    lib = sorted(p for p in (ROOT / "nbs").glob("[0-9]*.ipynb"))
    flags, t_all = tst_flags() - set(args.flags.split()), time.perf_counter()
    for nb in lib:
        t0 = time.perf_counter()
        try: executed = execute_notebook(nb, flags)
        except RuntimeError as e: raise SystemExit(str(e)) from None
        write_notebook(clean(executed), DOCS / "notebooks" / nb.name)
        print(f"executed {nb.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"executed {len(lib)} library notebooks in {time.perf_counter() - t_all:.0f} s (cells flagged "
          f"{' '.join(sorted(flags)) or 'nothing'} not run)", flush=True)
    mods = [m for m in (_default_exp(nb) for nb in lib) if m]
    for m in mods: (DOCS / "api" / f"{m}.md").parent.mkdir(exist_ok=True); (DOCS / "api" / f"{m}.md").write_text(api_page(m), encoding="utf-8")
    for sub in ("experiments", "paper"):
        for nb in sorted((ROOT / "nbs" / sub).glob("[0-9]*.ipynb")):
            runs = sorted((ROOT / "runs").glob(f"*/*/executed.ipynb")) if (ROOT / "runs").exists() else []
            executed = [r for r in runs if json.loads(r.read_text()).get("metadata", {}).get("papermill", {})
                        .get("input_path", "").endswith(f"{sub}/{nb.name}")]
            best = next((r for r in executed if r.parent.name == "default"), executed[0] if executed else nb)
            clean_notebook(best, DOCS / sub / nb.name)
    figs = DOCS / "paper_figures"
    shutil.copytree(ROOT / "paper_figures", figs)
    page = ["# paper_figures", "", "Every table and figure `make reproduce` rendered (`nbs/paper/90_render.ipynb`).", ""]
    for f in ("README.md", "CLAIMS.md"):
        if (figs / f).exists(): page += [(figs / f).read_text(encoding="utf-8").replace("# ", "## ", 1), ""]
    for t in sorted(figs.glob("table_*.md")): page += [f"## {t.stem}", "", t.read_text(encoding="utf-8"), ""]
    for p in sorted(figs.glob("figure_*.png")): page += [f"## {p.stem}", "", f"![{p.stem}]({p.name})", ""]
    (figs / "index.md").write_text("\n".join(page), encoding="utf-8")
    for f in ("README.md", "CLAIMS.md", "RESULTS.md"): (figs / f).unlink(missing_ok=True)
    n = sum(1 for _ in DOCS.rglob("*") if _.is_file())
    print(f"docs/: {len(lib)} library notebooks, {len(mods)} API pages, {n} files")


if __name__ == "__main__":
    main()
