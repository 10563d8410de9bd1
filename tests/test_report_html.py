"""report.html as a page people read: figures with captions, sortable tables, measures linked to their
definitions, nothing fetched from the network; checked with an HTML parser, and in a real headless browser
(Chromium from Debian's ``chromium`` package) where one is installed.

The browser test loads the hand-made study's report three times: as written (no console message at all, and
the sorting script ran), with a probe script appended (every figure loaded; a click on a header's sort
button orders the column ascending, a second click descending), and for a screenshot, written into the
test's tmp directory and printed. Without a browser it is skipped, unless ``MERGE_STUDY_REQUIRE_BROWSER`` is
set (for a CI that installs one): then it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from study.analysis.render import to_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROME_NOISE = ("dbus", "bluez", "vaapi", "sandbox_linux", "idle_linux", "unexpected operator")


class Page(HTMLParser):
    """Ids, internal links, external references, tables, figures and their captions of one page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.external: list[str] = []
        self.tables: list[str] = []
        self.figures: list[dict[str, str]] = []
        self.header_links: dict[str, list[str]] = {}
        self._th: str | None = None
        self._in_caption = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            value = a.get(key, "")
            if value.startswith("#"):
                self.links.append(value[1:])
            elif re.match(r"^[a-z]+://|^//", value):
                self.external.append(value)
        if tag == "table":
            self.tables.append(a.get("class", ""))
        elif tag == "figure":
            self.figures.append({"id": a.get("id", ""), "img": "", "caption": ""})
        elif tag == "img" and self.figures:
            self.figures[-1]["img"] = a.get("src", "")
        elif tag == "figcaption":
            self._in_caption = True
        elif tag == "th":
            self._th = ""
        elif tag == "a" and self._th is not None:
            self._th_href = a.get("href", "")

    def handle_data(self, data: str) -> None:
        if self._in_caption:
            self.figures[-1]["caption"] += data
        if self._th is not None:
            self._th += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False
        elif tag == "th" and self._th is not None:
            href = getattr(self, "_th_href", "")
            self.header_links.setdefault(self._th.strip(), []).append(href)
            self._th, self._th_href = None, ""


def test_the_page_parses_links_resolve_and_nothing_is_fetched(fake_report):
    _, out, _ = fake_report
    page = Page((out / "report.html").read_text())
    assert not page.external, page.external  # offline: no CDN, no remote font or script
    assert page.links and not [link for link in page.links if link not in page.ids]
    assert page.tables and all(c == "sortable" for c in page.tables)
    assert "<script>" in (out / "report.html").read_text()
    stems = [line[2:].split("]")[0] for line in (out / "report.md").read_text().splitlines() if line.startswith("![")]
    assert [f["id"] for f in page.figures] == [f"figure-{s}" for s in stems]
    for fig in page.figures:
        assert fig["caption"].startswith("Figure ") and (out / fig["img"]).is_file(), fig
    assert "design" in page.ids and "table-contracts" in page.ids  # the contents' targets


def test_every_measure_column_links_to_its_definition(fake_report):
    _, out, _ = fake_report
    page = Page((out / "report.html").read_text())
    summary_columns = [c for c in (out / "summary.csv").read_text().splitlines()[0].split(",")
                       if not c.startswith(("p_beat_base_ci", "normalised_ci", "method", "params"))]
    for column in summary_columns:
        assert f"#def-summary-csv-{column}" in page.header_links[column], column
    # the reference lines' gain_mean is reference.csv's, not summary.csv's
    assert "#def-reference-csv-gain_mean" in page.header_links["gain_mean"]
    assert "#def-reference-csv-base_rel_gain_best_single" in page.header_links["base_rel_gain_best_single"]
    # a design table that merely has a base column is not linked
    assert page.header_links["checkpoint ids"] == [""]


def test_contract_rows_naming_several_columns_anchor_each():
    md = ("## Reference lines\n\n| base | k | gain_ci_low | gain_ci_high |\n|---|---|---|---|\n"
          "| b | 2 | 0.1 | 0.2 |\n\n"
          "## Table contracts\n\n### reference.csv\n\n| column | meaning |\n|---|---|\n| base, k | base and size |\n"
          "| gain_ci_low, gain_ci_high | interval |\n\nSee `reference.csv` and `gain_ci_high`.")
    page = Page(to_html(md, "t"))
    assert {"def-reference-csv-base", "def-reference-csv-k", "def-reference-csv-gain_ci_high"} <= page.ids
    assert page.header_links["gain_ci_high"] == ["#def-reference-csv-gain_ci_high"]
    assert "reference-csv" in page.links and "def-reference-csv-gain_ci_high" in page.links  # prose mentions too
    assert not [link for link in page.links if link not in page.ids]


def _browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chrome(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


PROBE = """<script>
window.addEventListener("load", function () {
  var out = {images: document.images.length, broken: []};
  Array.prototype.forEach.call(document.images, function (i) {
    if (!(i.complete && i.naturalWidth > 0)) out.broken.push(i.getAttribute("src"));
  });
  var th = document.querySelector('th a[href="#def-summary-csv-gain_mean"]').closest("th");
  var table = th.closest("table"), col = Array.prototype.indexOf.call(th.parentNode.children, th);
  function column() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return Number(r.cells[col].textContent); });
  }
  th.querySelector("button.sort").click(); out.up = column(); out.after_one = th.getAttribute("aria-sort");
  th.querySelector("button.sort").click(); out.down = column(); out.after_two = th.getAttribute("aria-sort");
  document.documentElement.setAttribute("data-probe", JSON.stringify(out));
});
</script>"""


@pytest.mark.browser
def test_report_html_in_a_headless_browser(fake_report, tmp_path):
    browser = _browser()
    if browser is None and os.environ.get("MERGE_STUDY_REQUIRE_BROWSER"):
        pytest.fail("MERGE_STUDY_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
    if browser is None:
        pytest.skip("no headless browser installed (apt-get install chromium); the HTML parser tests above still run")
    _, out, _ = fake_report
    site = tmp_path / "report"
    shutil.copytree(out, site)
    page = site / "report.html"

    loaded = _chrome(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert not _console(loaded.stderr), _console(loaded.stderr)  # no error, no warning, no log at all
    buttons = re.search(r'data-tables-sortable="(\d+)"', loaded.stdout)
    assert buttons and int(buttons.group(1)) > 0  # the page's script ran to its end

    probed = site / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "\n</body>"))
    run = _chrome(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert not _console(run.stderr), _console(run.stderr)
    found = re.search(r'data-probe="([^"]*)"', run.stdout)
    assert found, run.stdout[:500]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["images"] >= 5 and not probe["broken"], probe
    assert len(probe["up"]) > 2 and probe["up"] == sorted(probe["up"]) and probe["down"] == sorted(probe["up"])[::-1]
    assert (probe["after_one"], probe["after_two"]) == ("ascending", "descending")

    shot = tmp_path / "report.png"
    taken = _chrome(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert taken.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"report.html screenshot: {shot}")
