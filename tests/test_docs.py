"""The docs cannot rot: every command block of docs/*.md marked `<!-- runnable -->` (or
`<!-- runnable slow -->`, in the slow set) runs as written, from a folder laid out like the
repository root with the shared data at ../shared/data, and exits 0; README.md links every page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, shared

DOCS = REPO / "docs"
MARKER = re.compile(r"^<!-- runnable( slow)? -->$")


def runnable_blocks():
    """(page name, block number on the page, slow, the block's text) for every marked block."""
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        number = 0
        for i, line in enumerate(lines):
            match = MARKER.match(line)
            if not match:
                continue
            assert lines[i + 1].startswith("```"), f"{page.name}:{i + 1}: a marker not before a block"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            number += 1
            yield page.name, number, bool(match.group(1)), "\n".join(lines[i + 2:end])


BLOCKS = [pytest.param(text, id=f"{page}-{number}", marks=[pytest.mark.slow] if slow else [])
          for page, number, slow, text in runnable_blocks()]


def sandbox(tmp_path: Path) -> Path:
    """tmp/repo: the repository's files (symlinked) without its outputs; tmp/shared/data: the
    shared data; tmp/bin/python: runs this interpreter."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("output", ".venv", ".git") and not entry.name.startswith("."):
            (repo / entry.name).symlink_to(entry)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(Path(shared()).resolve())
    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python"  # a script, not a link: a venv is found by its path
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return repo


def test_the_pages_have_runnable_blocks_and_the_marker_is_read():
    pages = {page for page, *_ in runnable_blocks()}
    assert {"fine-tuning.md", "pretraining.md", "azure.md", "checkpoints.md"} <= pages
    assert any(slow for _, _, slow, _ in runnable_blocks())


@pytest.mark.parametrize("text", BLOCKS)
def test_runnable_block_runs_as_written(tmp_path, text):
    repo = sandbox(tmp_path)  # skips when the shared data is not here
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{text}\n--- stderr ---\n{proc.stderr[-3000:]}"


def test_the_readme_links_every_page_and_every_link_resolves():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", readme))
    assert {f"docs/{p.name}" for p in DOCS.glob("*.md")} <= links
    for link in links:
        assert (REPO / link).exists(), link
    for page in DOCS.glob("*.md"):
        for link in re.findall(r"\]\(([\w./-]+\.md)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).exists(), f"{page.name} links {link}"
