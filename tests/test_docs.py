"""The documentation a newcomer reads: the front page stays short, and no relative link is broken."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = [ROOT / f for f in out] or sorted(ROOT.glob("**/*.md"))  # outside a git checkout: every file
    return [f for f in files if ".venv" not in f.parts and f.exists()]


def broken_links(md: Path) -> list[str]:
    bad = []
    for target in LINK.findall(md.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # web addresses and anchors on the same page
        path = target.split("#", 1)[0]
        if not (md.parent / path).exists():
            bad.append(target)
    return bad


def test_every_relative_link_in_the_markdown_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "recipes.md" in files
    broken = {str(f.relative_to(ROOT)): b for f in files if (b := broken_links(f))}
    assert not broken, broken


def test_a_broken_link_is_seen(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](missing.md#part) [web](https://example.org) [here](#top)")
    assert broken_links(page) == ["missing.md#part"]


def test_the_front_page_stays_short_and_links_the_detail():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 12_000
    for page in ("docs/recipes.md", "docs/reliability.md", "docs/kaggle.md", "docs/library.md", "bench/README.md"):
        assert f"]({page})" in text, page
