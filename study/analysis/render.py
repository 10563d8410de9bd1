"""Markdown tables, and report.html: the report as a page people read, without a templating dependency.

``report.html`` is written by a small converter that knows exactly the constructs ``report.md`` uses
(headings, paragraphs, bullet lists, pipe tables, images, inline code, bold and links), so the page carries the
same content as the markdown and looks the same wherever it is built. On top of the markdown it adds what a
reader of a long report needs: a table of contents, each figure with its caption, tables that sort by any
column (a few lines of plain JavaScript inside the page: it works offline, from a file), and every column
header that the "Table contracts" section defines linked to its definition there (and showing it on hover).
A table's headers link to the contract whose columns they match best, so ``gain_mean`` in the reference lines
points at ``reference.csv``'s meaning, not ``summary.csv``'s.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

CSS = ("body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;line-height:1.5;"
       "color:#222}h1,h2,h3{line-height:1.25}h2{margin-top:2em;border-bottom:1px solid #ddd}"
       "nav.toc{background:#f7f7f7;padding:.5em 1em;border-radius:4px}nav.toc ul{columns:2;margin:.3em 0}"
       ".table-wrap{overflow-x:auto;margin:1em 0}table{border-collapse:collapse;font-size:88%}"
       "th,td{border:1px solid #bbb;padding:2px 6px;vertical-align:top}th{background:#eee;position:sticky;top:0}"
       "td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafafa}"
       "th a{color:inherit;text-decoration:underline dotted}button.sort{border:0;background:none;cursor:pointer;"
       "padding:0 0 0 3px;font-size:85%;color:#666}th[aria-sort] button.sort{color:#000}"
       "tr:target{background:#fff3b0}figure{margin:1.5em 0}figure img{max-width:100%;height:auto}"
       "figcaption{font-size:92%;color:#333}code{background:#f3f3f3;padding:0 2px}")

SORT_JS = """
(function () {
  function key(cell) {
    var t = cell.textContent.trim();
    if (t === "" || t === "\u2014") return null;
    var n = Number(t);
    return isFinite(n) ? n : t.toLowerCase();
  }
  function compare(a, b) {
    if (a === null || b === null) return (a === null) - (b === null);
    if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  function sortBy(table, th, col) {
    var up = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r) { return [key(r.cells[col]), r]; });
    rows.sort(function (a, b) {
      if (a[0] === null || b[0] === null) return compare(a[0], b[0]);
      return up ? compare(a[0], b[0]) : compare(b[0], a[0]);
    });
    rows.forEach(function (r) { body.appendChild(r[1]); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = "\u21c5";
      button.title = "sort by this column (again: reverse)";
      button.addEventListener("click", function () { sortBy(table, th, col); });
      th.appendChild(button);
    });
  });
  var buttons = document.querySelectorAll("button.sort").length;
  document.documentElement.setAttribute("data-tables-sortable", String(buttons));
})();
"""
"""Sorts a table by a column when its header's button is clicked (again: reversed); numbers as numbers, the
em dash of a missing value last either way. Sets ``data-tables-sortable`` on the page to the number of
buttons, so a test (or a reader's console) sees that the script ran."""


def fmt_value(value: Any, digits: int = 4) -> str:
    """A cell of a markdown table: floats to ``digits`` decimals, missing values as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A pipe table of ``frame`` (no index); an empty frame is said in words."""
    if frame.empty:
        return "_(no rows)_"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt_value(v, digits) for v in row) + " |")
    return "\n".join(lines)


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', text)
    text = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])_([^_]+)_(?![\w*])", r"<em>\1</em>", text)


def slug(text: str) -> str:
    """An id for a heading or a definition: lower case, runs of anything but letters, digits, ``_`` as ``-``."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


MIN_SHARED = 3


class Definitions:
    """Every column the "Table contracts" section defines: contract name (its ``###`` heading) -> column ->
    meaning. A contract row may name several columns (``gain_ci_low, gain_ci_high``)."""

    def __init__(self, markdown_text: str) -> None:
        self.by_contract: dict[str, dict[str, str]] = {}
        heading = ""
        for block in re.split(r"\n\s*\n", markdown_text.strip()):
            lines = block.splitlines()
            if lines[0].startswith("#"):
                heading = lines[0].lstrip("#").strip()
                lines = lines[1:]
            if lines and lines[0].startswith("|") and _cells(lines[0])[:2] == ["column", "meaning"]:
                table = self.by_contract.setdefault(heading, {})
                for line in lines[2:]:
                    names, meaning = _cells(line)[:2]
                    for name in (n.strip() for n in names.split(",")):
                        table.setdefault(name, meaning)

    @staticmethod
    def anchor(contract: str, column: str) -> str:
        return f"def-{slug(contract)}-{slug(column)}"

    def linker(self, headers: list[str]) -> dict[str, tuple[str, str]]:
        """For a table with ``headers``: header -> (anchor, meaning) in the contract that defines most of them,
        if it defines at least ``MIN_SHARED`` (a design table that merely has a ``base`` column is not one of
        the measure tables, and its ``checkpoints`` is a count, not the contract's JSON list)."""
        if not self.by_contract:
            return {}
        best = max(self.by_contract, key=lambda c: len(set(headers) & set(self.by_contract[c])))
        defined = self.by_contract[best]
        if len(set(headers) & set(defined)) < MIN_SHARED:
            return {}
        return {h: (self.anchor(best, h), defined[h]) for h in headers if h in defined}


    def link_code(self, body: str) -> str:
        """``<code>summary.csv</code>`` -> a link to that contract; ``<code>small_n</code>`` -> a link to the
        first contract defining that column: the prose's mentions of tables and measures lead to them too."""
        first: dict[str, str] = {}
        for contract, columns in self.by_contract.items():
            for column in columns:
                first.setdefault(column, self.anchor(contract, column))

        def link(match: re.Match[str]) -> str:
            name = html.unescape(match.group(1))
            target = slug(name) if name in self.by_contract else first.get(name)
            return f'<a href="#{target}">{match.group(0)}</a>' if target else match.group(0)

        return re.sub(r"<code>([^<]+)</code>", link, body)


def _table(lines: list[str], definitions: Definitions | None = None, contract: str | None = None) -> str:
    """A sortable table. Headers that a contract defines link to the definition; in a contract's own table
    (``contract`` given) each row carries the anchors of the columns it defines."""
    head_cells = _cells(lines[0])
    links = definitions.linker(head_cells) if definitions is not None and contract is None else {}
    head = "".join(f'<th title="{html.escape(links[c][1])}"><a href="#{links[c][0]}">{_inline(c)}</a></th>'
                   if c in links else f"<th>{_inline(c)}</th>" for c in head_cells)
    rows = []
    for line in lines[2:]:
        cells = _cells(line)
        tds = [f'<td class="num">{_inline(c)}</td>' if _is_number(c) else f"<td>{_inline(c)}</td>" for c in cells]
        anchors = ""
        if contract is not None:
            names = [n.strip() for n in cells[0].split(",")]
            anchors = f' id="{Definitions.anchor(contract, names[0])}"'
            tds[0] = "<td>" + "".join(f'<span id="{Definitions.anchor(contract, n)}"></span>'
                                      for n in names[1:]) + f"{_inline(cells[0])}</td>"
        rows.append(f"<tr{anchors}>{''.join(tds)}</tr>")
    return (f'<div class="table-wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def display_width(path: Path) -> int | None:
    """CSS pixels (96 per inch) of a figure shown at its printed size: the PNG's width over its dpi (which
    matplotlib records); None when the file or its dpi is missing. A one-panel figure is then not blown up to
    the page's width, and a wide one still shrinks to fit it."""
    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi")
            return round(image.width * 96 / float(dpi[0])) if dpi and dpi[0] else None
    except OSError:
        return None


def simple_markdown(text: str, definitions: Definitions | None = None, root: Path | None = None) -> str:
    """HTML for the subset of markdown ``report.md`` uses: headings with ids, an image followed by its
    "Figure N." paragraph as a figure with a caption (at its printed size where ``root``, the directory the
    images are relative to, is given), and tables as ``_table`` writes them."""
    out: list[str] = []
    heading, figure_open = "", False
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        first = lines[0]
        if figure_open:
            caption = " ".join(lines) if first.startswith("Figure ") else ""
            out.append(f"<figcaption>{_inline(caption)}</figcaption></figure>" if caption else "</figure>")
            figure_open = False
            if caption:
                continue
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            heading = first[level:].strip()
            out.append(f'<h{level} id="{slug(heading)}">{_inline(heading)}</h{level}>')
            if lines[1:]:
                out.append(simple_markdown("\n".join(lines[1:]), definitions, root))
        elif first.startswith("|"):
            is_contract = _cells(first)[:2] == ["column", "meaning"]
            out.append(_table(lines, definitions, heading if is_contract else None))
        elif len(lines) == 1 and re.fullmatch(r"!\[[^\]]*\]\([^)]+\)", first):
            stem, src = re.match(r"!\[([^\]]*)\]\(([^)]+)\)", first).groups()
            width = display_width(root / src) if root is not None else None
            style = f' style="max-width:{width}px"' if width else ""
            out.append(f'<figure id="figure-{slug(stem)}"{style}>{_inline(first)}')
            figure_open = True
        elif all(line.startswith(("- ", "  ")) for line in lines):
            items = "\n".join(lines).split("\n- ")
            out.append("<ul>" + "".join(f"<li>{_inline(i.removeprefix('- ').strip())}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    if figure_open:
        out.append("</figure>")
    return "\n".join(out)


def _contents(markdown_text: str) -> str:
    items = [line[3:].strip() for line in markdown_text.splitlines() if line.startswith("## ")]
    links = "".join(f'<li><a href="#{slug(h)}">{_inline(h)}</a></li>' for h in items)
    return f'<nav class="toc"><strong>Contents</strong><ul>{links}</ul></nav>' if items else ""


def to_html(markdown_text: str, title: str, root: Path | None = None) -> str:
    """A standalone HTML page of ``markdown_text``: contents, figures with captions (referenced by relative
    path, as in the markdown; ``root``: where they are, to show each at its printed size), sortable tables,
    column headers linked to their definitions."""
    definitions = Definitions(markdown_text)
    body = definitions.link_code(simple_markdown(markdown_text, definitions, root))
    first_break = body.find("\n")  # the contents go after the title
    body = body[:first_break + 1] + _contents(markdown_text) + body[first_break:] if first_break > 0 else body
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
            f"<script>{SORT_JS}</script>\n</body></html>\n")
