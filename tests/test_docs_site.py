"""The documentation site: ``mkdocs build --strict`` (what ``make docs`` runs) passes, the
strategies reference lists every registered strategy with its fields, nothing the README
once held is lost, and the built pages render in headless Chromium (as the report's
browser test does; it skips where Chromium is absent)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_S
from test_report_browser import FLAGS

from strategies import available_strategies

REPO = Path(__file__).resolve().parents[1]


def registered() -> dict:
    """The strategies of ``strategies/`` (not the test-only ones other tests register in
    this process, which the site's build does not see)."""
    return {n: s for n, s in available_strategies().items()
            if s.cls.__module__.startswith("strategies.")}

#: every heading the README had before it became a front page, and where it lives now
#: (a page of docs/, reachable from the site's navigation)
MOVED_HEADINGS = {
    "Install": "install.md", "Datasets": "datasets.md", "synth-fg": "datasets.md",
    "Streams and protocols": "streams.md", "Metrics": "metrics.md",
    "Strategies": "strategies.md", "Add a strategy": "add-a-strategy.md",
    "Run a matrix": "run.md", "Tracking (MLflow)": "tracking.md",
    "Tracking (Weights & Biases)": "tracking.md", "Clusters (SLURM, Ray)": "clusters.md",
    "Tuning": "tuning.md", "Report": "reports.md", "Checking claims": "claims.md",
    "Command line": "cli.md", "Results on real data": "results.md",
    "Performance": "performance.md", "Development": "development.md",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built with ``--strict`` into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
         "-d", str(out)], cwd=REPO, capture_output=True, text=True, timeout=HANG_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_site_builds_strictly_with_every_strategy(site):
    page = (site / "reference" / "strategies.html").read_text(encoding="utf-8")
    for name, spec in registered().items():
        assert f'id="{name}"' in page, name
        for field in spec.config_cls.model_fields:
            assert f"<code>{field}</code>" in page, (name, field)
    assert (site / "index.html").is_file() and (site / "reference" / "api.html").is_file()


def test_no_heading_the_readme_held_is_lost(site):
    """Each former README heading is (in) a heading of its page, and each page is in the
    site's navigation (linked from the index page)."""
    index = (site / "index.html").read_text(encoding="utf-8")
    for heading, page in MOVED_HEADINGS.items():
        text = (REPO / "docs" / page).read_text(encoding="utf-8")
        assert re.search(rf"^#+ .*{re.escape(heading)}", text, flags=re.M), (heading, page)
        assert f'href="{page[:-3]}.html"' in index, page


def test_the_readme_lists_every_strategy():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Strategies"):]
    missing = [n for n in registered() if f"`{n}`" not in table]
    assert not missing, missing
    assert len(readme.splitlines()) <= 150


@pytest.fixture(scope="module")
def chromium() -> str:
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian's chromium package is not installed (.ci/run installs it)")
    return found


def dom(chromium: str, page: Path, tmp: Path) -> str:
    """The page's DOM after load, as headless Chromium dumps it."""
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp / 'profile'}",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_site_opens_in_a_browser(chromium, site, tmp_path):
    """The index and the strategies reference, opened from disk as a reader opens them:
    the index has its title and navigation, the reference every strategy's name."""
    index = dom(chromium, site / "index.html", tmp_path)
    assert "<title>lrbench</title>" in index and "Strategies reference" in index
    reference = dom(chromium, site / "reference" / "strategies.html", tmp_path)
    text = re.sub(r"<[^>]+>", " ", reference)
    missing = [n for n in registered() if not re.search(rf"\b{n}\b", text)]
    assert not missing, missing
