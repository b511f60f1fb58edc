"""Write README.md from nbs/index.ipynb (nbdev's README renderer needs Quarto, which cannot be installed here).

    python scripts/make_readme.py           # write README.md
    python scripts/make_readme.py --check   # exit 1 if README.md differs from what this script makes (make test)

Rules: markdown cells verbatim, except that a line `<!-- include: PATH -->` (PATH relative to the repository root) is
replaced by that file's content (the results section comes from `paper_figures/RESULTS.md`, written by the render
notebook); code cells become ```python blocks followed by their stored text outputs; cells whose first directive is
`#| hide` are left out, and `#|` directive lines are dropped. Plain json, no Jupyter import: runs with any Python 3.
"""
import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"^<!--\s*include:\s*(\S+)\s*-->\s*$")
HEADER = "<!-- generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, then run the script -->\n"


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _markdown(text: str, root: Path) -> str:
    out = []
    for line in text.splitlines():
        m = INCLUDE.match(line.strip())
        if m:
            path = root / m.group(1)
            if not path.is_file():
                raise SystemExit(f"make_readme: {path} (included by nbs/index.ipynb) does not exist; "
                                 "run the render notebook (hac reproduce --only render) or fix the include line")
            out.append(path.read_text(encoding="utf-8").strip("\n"))
        else:
            out.append(line)
    return "\n".join(out)


def _text_outputs(cell) -> list[str]:
    texts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            texts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        elif o.get("output_type") in ("execute_result", "display_data") and "text/plain" in o.get("data", {}):
            t = o["data"]["text/plain"]
            texts.append("".join(t) if isinstance(t, list) else t)
    return [t.rstrip("\n") for t in texts if t.strip()]


def _code(cell) -> str | None:
    lines = _src(cell).splitlines()
    directives = [l for l in lines if l.startswith("#|")]
    if any(re.match(r"#\|\s*hide\b", d) for d in directives): return None
    code = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
    parts = [f"```python\n{code}\n```"]
    parts += [f"```\n{t}\n```" for t in _text_outputs(cell)]
    return "\n\n".join(parts)


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb", root: Path = ROOT) -> str:
    "The README text for `nb_path`."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    blocks = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown": blocks.append(_markdown(_src(cell), root).strip("\n"))
        elif cell["cell_type"] == "code":
            b = _code(cell)
            if b: blocks.append(b)
    return HEADER + "\n" + "\n\n".join(b for b in blocks if b) + "\n"


def write_or_check(path: Path, # the generated file
                   text: str, # what it must hold
                   check: bool, # compare instead of writing
                   made_from: str, # its source, for the messages
                   command: str, # the command that regenerates it
                  ) -> int: # 0: written or up to date; 1: stale
    "Write `text` to `path`, or with `check` compare them and print the first lines of the difference."
    if not check:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old == text:
        print(f"{path.name} is up to date with {made_from}")
        return 0
    diff = difflib.unified_diff(old.splitlines(), text.splitlines(), path.name, f"from {made_from}", lineterm="", n=1)
    print("\n".join(list(diff)[:60]))
    print(f"{path.name} differs from {made_from}: run `{command}` (never edit {path.name} by hand)", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with README.md instead of writing it")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    a = p.parse_args(argv)
    return write_or_check(Path(a.readme), render(), a.check, "nbs/index.ipynb", "python scripts/make_readme.py")


if __name__ == "__main__":
    sys.exit(main())
