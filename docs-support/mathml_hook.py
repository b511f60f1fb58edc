r"""mkdocs hook (mkdocs.yml `hooks:`): typeset the site's maths at build time as MathML, so pages need no script.

MathJax came from a CDN, which an offline reader (and this build machine) cannot reach, so `$...$` showed raw.
Instead every formula is converted here with latex2mathml (pure Python, nothing downloaded at install or build
time) into MathML Core, which browsers draw natively (Chromium/Chrome/Edge >= 109, Firefox, Safari).

Where the maths is found:
- notebook pages (mkdocs-jupyter -> nbconvert): nbconvert's markdown renderer leaves `$...$`, `$$...$$`, `\(...\)`
  and `\[...\]` as plain text inside rendered markdown (`.jp-RenderedMarkdown`, markdown/LaTeX outputs);
- Markdown pages (index, API, paper_figures): pymdownx.arithmatex (generic mode) marks the maths as
  `<span class="arithmatex">\(...\)</span>` / `<div class="arithmatex">\[...\]</div>`, protected from Markdown.
Text inside `code`, `pre`, `script` and `style` is never touched, so `$HAC_CACHE` in code stays as it is.
The notebook pages' MathJax loader and configuration (from mkdocs-jupyter's template) are removed, and so is the
Mermaid loader (it imports Mermaid from a CDN) on pages without a Mermaid diagram.
"""
import html
import logging
import re

from bs4 import BeautifulSoup, Comment, NavigableString
from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

TARGETS = ".jp-RenderedMarkdown, .jp-RenderedLatex, .arithmatex"
SKIP = {"code", "pre", "script", "style", "textarea", "math"}
# display first (`$$` before `$`); `\$` is a literal dollar; inline `$` must not open/close on a space (as Jupyter)
MATH = re.compile(r"""
    (?<!\\)\$\$(?P<d1>.+?)(?<!\\)\$\$
  | \\\[(?P<d2>.+?)\\\]
  | \\\((?P<i1>.+?)\\\)
  | (?<![\\$])\$(?P<i2>[^\s$](?:[^$]*?[^\s\\$])?)\$(?!\$)
""", re.S | re.X)
# latex2mathml copies `\text{...}` verbatim into <mtext>, so `\text{logit\_scale}` would show the backslash
TEXT, TEXT_ESC = re.compile(r"\\text\{[^{}]*\}"), re.compile(r"\\([_%&#$])")
PUNCT = re.compile(r"[.,;:!?)\]]+")
MATH_CSS = """<style>
/* MathML typeset at build time (docs-support/mathml_hook.py) */
.md-typeset math { font-size: 1.05em;
  font-family: "STIX Two Math", "Latin Modern Math", "Cambria Math", "DejaVu Math TeX Gyre", "STIXMath", math; }
.md-typeset .math-nowrap { white-space: nowrap; }
.md-typeset math[display="block"] { margin: .6em 0; overflow-x: auto; overflow-y: hidden; }
.md-typeset .math-error { color: var(--md-code-fg-color); }
</style>"""


def tex2mathml(tex: str, display: bool) -> str:
    "MathML for one formula (`display` for `$$`/`\\[`); on a LaTeX error, the source as code and a warning."
    try:
        tex = TEXT.sub(lambda m: TEXT_ESC.sub(r"\1", m.group()), tex.strip())
        # `/` is an ordinary symbol in TeX (`1/c`), but an operator with space around it in MathML's dictionary
        return convert(tex, display="block" if display else "inline").replace(
            "<mo>&#x0002F;</mo>", '<mo lspace="0em" rspace="0em">&#x0002F;</mo>')
    except Exception as e:  # latex2mathml raises several exception types (and IndexError on unbalanced input)
        log.warning("mathml: cannot convert %r (%s: %s); left as source", tex, type(e).__name__, e)
        d = "$$" if display else "$"
        return f'<code class="math-error">{html.escape(d + tex + d)}</code>'


def _typeset_string(s: NavigableString) -> int:
    "Replace the formulas in one text node by MathML; the number replaced."
    text, parts, last, n = str(s), [], 0, 0
    for m in MATH.finditer(text):
        display = m.group("d1") is not None or m.group("d2") is not None
        tex = next(g for g in m.group("d1", "d2", "i1", "i2") if g is not None)
        mml, end = tex2mathml(tex, display), m.end()
        if not display and (p := PUNCT.match(text, end)):  # no line break between a formula and its `.`/`,`
            mml, end = f'<span class="math-nowrap">{mml}{html.escape(p.group(), quote=False)}</span>', p.end()
        parts += [html.escape(text[last:m.start()], quote=False), mml]
        last, n = end, n + 1
    if n:
        parts.append(html.escape(text[last:], quote=False))
        frag = BeautifulSoup("".join(parts), "html.parser")
        s.replace_with(*list(frag.contents))
    return n


def typeset(page_html: str) -> tuple[str, int]:
    "The page's HTML with its maths as MathML and without the MathJax (and unused Mermaid) loaders; and a count."
    soup = BeautifulSoup(page_html, "html.parser")
    for sc in soup.find_all("script"):
        src, body = sc.get("src"), sc.string or ""
        if (sc.get("type") == "text/x-mathjax-config" or src == "" or "mathjax" in (src or "").lower()
                or ("mermaid" in body and "cdnjs" in body and not soup.select_one(".jp-Mermaid"))):
            sc.decompose()
    for c in soup.find_all(string=lambda t: isinstance(t, Comment) and "mathjax" in t.lower()):
        c.extract()
    n = 0
    for el in soup.select(TARGETS):
        for s in list(el.find_all(string=True)):
            if s.__class__ is not NavigableString or "$" not in s and "\\" not in s: continue
            if any(p.name in SKIP for p in s.parents): continue
            n += _typeset_string(s)
    return str(soup), n


def on_page_content(html_: str, page, config, files) -> str:
    if not any(k in html_ for k in ("$", "\\(", "\\[", "mathjax", "mermaid")): return html_
    out, n = typeset(html_)
    if n: out = MATH_CSS + out
    log.debug("mathml: %s: %d formulas", page.file.src_uri, n)
    return out
