"""The documents hold together: every relative link and every repository path that README.md and
docs/*.md cite exists (anchors included), every document a code comment cites exists, the README
stays short, and no page speaks of "the spec" or "(issue)" a reader does not have.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import gunicorn, service_env
from tests.support import ROOT

# Pages other branches write; they arrive when the lead merges those branches (the lead widens this test).
ELSEWHERE: set[str] = set()  # docs pages written on branches not merged yet
PAGES = [ROOT / "README.md", ROOT / "CHANGES.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED_PATH = re.compile(r"`((?:app|scripts|tests|docs)/[\w./-]+|[\w.-]+\.(?:py|md|yaml|json|toml)|Makefile)`")
RUNTIME = ("var/", "backups/", "coze-import/", "bench-results/")  # made when the service runs, never committed
NOT_REPO_FILES = {  # file names the pages mention that are not this repository's files
    "cart.schema.json",
    "ai_plugin.json",
    "migrate.jsonl",
    "user_123.jsonl",
}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")}


def pointing_elsewhere(target: Path) -> bool:
    return target.parent == ROOT / "docs" and target.name in ELSEWHERE


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_its_anchor_exists(page):
    missing = []
    for link in LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://|^mailto:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if pointing_elsewhere(target):
            continue
        if not target.exists():
            missing.append(link)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            missing.append(f"{link} (no such heading)")
    assert missing == [], f"{page.name}: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_a_page_cites_exists(page):
    missing = []
    for cited in CITED_PATH.findall(page.read_text()):
        if cited.startswith(RUNTIME) or cited in NOT_REPO_FILES:
            continue
        candidates = [ROOT / cited, page.parent / cited]
        if not any(c.exists() or pointing_elsewhere(c.resolve()) for c in candidates):
            missing.append(cited)
    assert missing == [], f"{page.name}: {missing}"


def test_every_document_a_code_comment_cites_exists():
    cited = re.compile(r"\b(docs/[\w-]+\.md|[A-Z][A-Z_]+\.md)\b")
    missing = []
    for source in [*ROOT.glob("*.py"), *ROOT.glob("app/**/*.py"), *ROOT.glob("scripts/*.py"), *ROOT.glob("tests/*.py")]:
        for name in cited.findall(source.read_text()):
            if not (ROOT / name).exists() and not pointing_elsewhere(ROOT / name):
                missing.append(f"{source.relative_to(ROOT)}: {name}")
    for name in cited.findall((ROOT / "Makefile").read_text()):
        if not (ROOT / name).exists():
            missing.append(f"Makefile: {name}")
    assert missing == []


def test_the_readme_is_short_and_links_every_page_of_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in text, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_page_speaks_of_the_spec_or_an_issue_the_reader_does_not_have(page):
    text = page.read_text()
    assert not re.search(r"\(issue\b|\bissue \d|\bthe spec\b|\bspec's\b", text), page.name


@pytest.mark.slow
def test_the_readmes_try_it_works_as_pasted_on_the_port_of_the_service(tmp_path, mongo_uri, db_name):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Try it") : text.index("## The tools")]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env = service_env(mongo_uri, db_name, SERVICE_TOKEN="", APP_ENV="development", VAR_DIR=str(tmp_path / "var"))
    with gunicorn(env, workers=1) as base:
        port = base.rsplit(":", 1)[1]
        shell = {**os.environ, "PORT": port}
        run = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=shell, capture_output=True, text=True, timeout=120
        )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"^sess_[0-9a-f]{32}$", out, re.M), out
    assert "False [2]\nTrue [2]" in out
    assert "SESSION_LOCKED" in out and '"error_code":"INVALID_ARGUMENT"' not in out.replace(" ", "")
