"""The documentation: the site builds from the repository with one command and no warning, and
the README's links lead somewhere.

Known answers: mkdocs' own verdict in --strict mode (shown to fail on a broken link), the pages
the nav names, a docstring read with ``inspect`` that the API reference must show, and the files
the README links to on disk.
"""

from __future__ import annotations

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=300)


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in nav_pages(v)]
    return [p for v in node for p in nav_pages(v)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = build(ROOT / "mkdocs.yml", out)
    return out, proc


def test_site_builds_without_a_warning(site):
    out, proc = site
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log and "ERROR" not in log, log[-4000:]


def test_every_nav_page_is_built_and_the_api_shows_docstrings(site):
    import yaml

    out, _ = site
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(cfg["nav"])
    assert {"index.md", "guide/own-data.md", "results/replicate.md", "design/estimators.md",
            "api/flow.md"} <= set(pages)
    for page in pages:
        stem = page.removesuffix(".md")  # a/b.md -> a/b/index.html, a/index.md -> a/index.html
        built = out / (stem.removesuffix("index") if stem.endswith("index") else stem + "/")
        built = built / "index.html"
        assert built.is_file(), page
    from bayesiamp_jax import flow

    text = html.unescape(re.sub(r"<[^>]+>", "", (out / "api/flow/index.html").read_text()))
    first = inspect.getdoc(flow.sample).splitlines()[0].replace("``", "")  # code spans
    assert first in text


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The check above can fail: the same mkdocs in --strict mode refuses a dangling link."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n[gone](nowhere.md)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "nowhere.md" in proc.stdout + proc.stderr


def test_readme_is_short_and_its_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
    # the two set-up commands: install + main job, install + tests (what .ci/run runs)
    commands = [line for line in text.splitlines() if line.startswith("python3 -m venv")]
    assert commands == [
        "python3 -m venv .venv && . .venv/bin/activate && python -m pip install -e . && "
        "bayesiamp paper --preset quick",
        "python3 -m venv .venv && . .venv/bin/activate && python -m pip install -e \".[test]\" "
        "&& python -m pytest"]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
