"""The docs' execution step (scripts/make_docs.py, issue 23): library notebooks are run at build time, so the site shows
the lessons' outputs and figures while the committed notebooks stay clean. A tiny synthetic notebook, run in a fresh
kernel of the project venv (a few seconds): outputs are written, the cells nbdev_test would skip are skipped, `#| hide`
cells run but are not shown, and a failing notebook stops the build with its name."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for mod in ("nbclient", "nbformat", "ipykernel", "nbdev", "matplotlib_inline"):
    if importlib.util.find_spec(mod) is None: pytest.skip(f"{mod} is not installed (make install)", allow_module_level=True)
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel  # noqa: E402

try: KernelSpecManager().get_kernel_spec("python3")
except NoSuchKernel: pytest.skip("no Jupyter kernel 'python3' (make install registers the venv's)", allow_module_level=True)

sys.path.insert(0, str(ROOT / "scripts"))
import make_docs  # noqa: E402


def _nb(path: Path, *sources: str) -> Path:
    cells = [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Tiny\n> a synthetic lesson"}]
    cells += [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
              for i, s in enumerate(sources)]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                "display_name": "Python 3"}}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def _text(cell) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def test_directives_as_nbdev_reads_them():
    assert make_docs.directives("#| eval: false\nx = 1") == {"eval:": "false"}
    assert make_docs.directives("#|eval:false\n#| slow\n\nx = 1\n#| cuda") == {"eval:": "false", "slow": ""}
    assert make_docs.directives("#| hide:\nx") == {"hide": ""}
    assert {"slow", "cuda"} <= make_docs.tst_flags()       # settings.ini


def test_execute_writes_outputs_and_skips_what_nbdev_test_skips(tmp_path):
    src = _nb(tmp_path / "00_tiny.ipynb",
              "#| hide\nx = 41",                                           # plumbing: runs, is not shown
              "#| export\ndef answer(): return x + 1",
              "answer()",
              "#| eval: false\nraise SystemExit('an eval: false cell ran')",
              "#| slow\nraise RuntimeError('a slow cell ran')",
              "import os; os.getcwd()",
              "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(1, 1)); ax.plot([0, 1]); fig",
              "#| hide\nimport nbdev; nbdev.nbdev_export()")                # would fail here (no settings.ini)
    before = src.read_bytes()
    nb = make_docs.execute_notebook(src, {"slow", "cuda", "notest"})
    assert src.read_bytes() == before                                       # the committed notebook stays clean
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert _text(code[2]) == "42"
    assert not code[3].outputs and not code[4].outputs and not code[7].outputs
    assert _text(code[5]).strip("'") == str(tmp_path)                     # cwd = the notebook's folder
    assert "image/png" in code[6].outputs[0]["data"]                        # figures come out as images
    assert all("tags" not in c.metadata for c in code)
    shown = make_docs.clean(nb)
    srcs = [c["source"] for c in shown["cells"] if c["cell_type"] == "code"]
    assert srcs[0] == "def answer(): return x + 1" and not any("x = 41" in s or "nbdev_export" in s for s in srcs)
    assert any(_text(c) == "42" for c in shown["cells"])


def test_a_failing_notebook_fails_with_its_name(tmp_path):
    src = _nb(tmp_path / "05_broken.ipynb", "1 + 1", "raise ValueError('the lesson is wrong')")
    with pytest.raises(RuntimeError, match=r"05_broken\.ipynb failed to execute(.|\n)*the lesson is wrong"):
        make_docs.execute_notebook(src, set())
