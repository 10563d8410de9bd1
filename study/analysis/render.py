"""Markdown tables and a self-contained HTML page for the report, without a templating dependency.

``report.html`` uses the ``markdown`` package when it is installed; otherwise a small converter that knows
exactly the constructs ``report.md`` uses (headings, paragraphs, bullet lists, pipe tables, images, inline
code and bold). Either way the HTML carries the same content as the markdown.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import pandas as pd

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #999;padding:2px 6px}"
       "th{background:#eee}img{max-width:100%}code{background:#f3f3f3;padding:0 2px}")


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
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _table(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    head = "".join(f"<th>{_inline(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells(line)) + "</tr>" for line in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def simple_markdown(text: str) -> str:
    """HTML for the subset of markdown ``report.md`` uses."""
    out: list[str] = []
    blocks = re.split(r"\n\s*\n", text.strip())
    for block in blocks:
        lines = block.splitlines()
        first = lines[0]
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            out.append(f"<h{level}>{_inline(first[level:].strip())}</h{level}>")
            if lines[1:]:
                out.append(simple_markdown("\n".join(lines[1:])))
        elif first.startswith("|"):
            out.append(_table(lines))
        elif all(line.startswith(("- ", "  ")) for line in lines):
            items = "\n".join(lines).split("\n- ")
            out.append("<ul>" + "".join(f"<li>{_inline(i.removeprefix('- ').strip())}</li>" for i in items) + "</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def to_html(markdown_text: str, title: str) -> str:
    """A standalone HTML page of ``markdown_text`` (figures referenced by relative path, as in the markdown)."""
    try:
        import markdown

        body = markdown.markdown(markdown_text, extensions=["tables"])
    except ImportError:
        body = simple_markdown(markdown_text)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
