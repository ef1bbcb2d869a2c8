"""report.html in a real browser (Debian's headless Chromium): what a person would check.

`.ci/run` installs Chromium when it is missing, so in CI this runs; on a machine without
it the test skips. The page is opened as a user opens it (a file URL), with a probe script
appended to a copy: after the page's ``load`` event it records, for every figure, whether
the browser decoded it and laid it out with a real size, and for every table its rows,
empty cells and size. A screenshot checks that the top of the page is not blank.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import HANG_S

from reports.page import build_report

PROBE = """
<script>
window.addEventListener('load', () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
      natural: [i.naturalWidth, i.naturalHeight], shown: box(i)})),
    tables: [...document.querySelectorAll('table')].map(t => ({
      rows: t.querySelectorAll('tbody tr').length,
      heads: t.querySelectorAll('thead th').length,
      empty: [...t.querySelectorAll('td')].filter(c => !c.textContent.trim()).length,
      shown: box(t)})),
    headings: [...document.querySelectorAll('h1,h2')].map(h => h.textContent.trim()),
    text: document.body.innerText.length,
  };
  const pre = document.createElement('pre');
  pre.id = 'lrbench-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium package is not installed (.ci/run installs it)")
    return found


def browse(chromium: str, page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with a fresh profile."""
    return subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=HANG_S)


@pytest.mark.parametrize("kind", ["smoke", "ablations"])
def test_report_renders_every_table_and_figure(chromium, smoke_store, tmp_path, kind):
    """The smoke matrix's report, and one with ablation variants (their own table and
    figure)."""
    if kind == "ablations":
        from test_reports import ABLATION, ablation_store

        store = ablation_store(tmp_path / "store", ABLATION)
    else:
        store = smoke_store
    report = build_report([store], tmp_path / "report", formats=["html", "png"])
    assert bool(report.ablations) == (kind == "ablations")
    n_figures = sum(len([p for p in files if p.suffix == ".png"])
                    for files in report.figures.values())
    assert n_figures >= 4
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "report" / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    proc = browse(chromium, probed, tmp_path, "--dump-dom")
    found = re.search(r"<pre id=\"lrbench-probe\">(.*?)</pre>", proc.stdout, re.S)
    assert found, f"the page's load event never ran: {proc.stderr[-2000:]}"
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))

    # every figure the report made is on the page, decoded, and drawn with a real size
    assert len(seen["images"]) == n_figures
    for img in seen["images"]:
        assert img["complete"] and min(img["natural"]) > 100, img  # decoded, not broken
        assert min(img["shown"]) > 100, img  # laid out, not collapsed
        assert img["alt"], img
    # every table has a header, body rows, no empty cell, and takes space on the page
    assert seen["tables"], "no table rendered"
    for table in seen["tables"]:
        assert table["heads"] >= 2 and table["rows"] >= 1, table
        assert table["empty"] == 0, table
        assert min(table["shown"]) > 10, table
    assert seen["text"] > 500 and seen["headings"], seen["headings"]

    shot = tmp_path / "shot.png"
    browse(chromium, tmp_path / "report" / "report.html", tmp_path,
           f"--screenshot={shot}", "--window-size=1200,1600")
    from PIL import Image, ImageStat

    with Image.open(shot) as img:  # the first screen a reader sees is not blank
        grey = img.convert("L")
        assert grey.size == (1200, 1600)
        assert ImageStat.Stat(grey).stddev[0] > 10
        assert len(grey.getcolors(1 << 16) or []) > 50
