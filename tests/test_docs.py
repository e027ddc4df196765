"""The documentation: the site builds in strict mode (a broken link, anchor or a page left out of the nav fails),
the README stays short and keeps the two commands, and every command block on a page is either run by a test
that the page names or marked with what it needs that the tests do not have (network, GPU, SLURM, W&B, time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
#: a command block: ```bash (or ```sh, ```console), perhaps indented inside a list
_BLOCK = re.compile(r"^( *)```(?:bash|sh|console|shell)\s*$")
_MARK = re.compile(r"^\s*<!-- (tested|needs): (.+?) -->\s*$")
_TEST = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def unmarked_blocks(path: Path) -> list[str]:
    """The command blocks of ``path`` without a mark on the line before, or whose mark names a missing test."""
    problems = []
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not _BLOCK.match(line):
            continue
        mark = _MARK.match(lines[i - 1]) if i else None
        if mark is None:
            problems.append(f"{where}:{i + 1}: no <!-- tested: tests/…::… --> or <!-- needs: … --> above")
            continue
        tests = _TEST.findall(mark.group(2))
        if mark.group(1) == "tested" and not tests:
            problems.append(f"{where}:{i + 1}: 'tested' names no test")
        for file, name in tests:
            source = ROOT / file
            if not source.is_file() or not re.search(rf"^def {name}\(", source.read_text(), re.M):
                problems.append(f"{where}:{i + 1}: {file}::{name} does not exist")
    return problems


@pytest.mark.parametrize("path", [README, *PAGES, *sorted(ROOT.glob("experiments/*/README.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_block_is_run_by_a_test_or_says_what_it_needs(path: Path) -> None:
    assert not unmarked_blocks(path), "\n".join(unmarked_blocks(path))


def test_the_mark_check_finds_an_unmarked_block_and_a_missing_test(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n```bash\nmake x\n```\n<!-- tested: tests/test_docs.py::no_such_test -->\n```bash\nmake y\n```\n"
                    "<!-- needs: a GPU -->\n  ```bash\n  make z\n  ```\n")
    found = unmarked_blocks(page)
    assert len(found) == 2 and "no <!--" in found[0] and "no_such_test does not exist" in found[1]


def test_the_readme_is_short_keeps_the_two_commands_and_links_the_pages() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 200
    assert "make study" in text and "make test" in text
    for page in PAGES:
        assert f"docs/{page.name}" in text, f"the README links no docs/{page.name}"
    assert "../shared/" not in text and "../shared/" not in "".join(p.read_text() for p in PAGES), "a link out of the repository"


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    assert not [p.name for p in PAGES if f": {p.name}" not in nav]


def test_the_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "your-project" / "index.html").is_file()
