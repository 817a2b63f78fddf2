"""The README is a front page and docs/ holds the rest: every link in them resolves (a file, and
its heading where the link names one), every repository path they quote exists, and the README
stays short with its two set-up commands near the top."""
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")
QUOTED_PATH = re.compile(r"`((?:pipeline|edge_runtime|models|tests|benchmarks|scripts|docs)/[\w/.\-]*)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # not code comments
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def broken_links(pages: list[Path], root: Path = PROJECT) -> list[str]:
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:: not this repository's
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(root)}: {target} (no such file)")
            elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
                broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def test_every_link_in_readme_and_docs_resolves():
    assert len(PAGES) > 5
    assert broken_links(PAGES) == []


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "guide.md").write_text("# A guide\n\n## Exit codes\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](guide.md#exit-codes) [gone](missing.md) [bad](guide.md#no-such) "
                    "[web](https://example.com)\n")
    assert broken_links([page], root=tmp_path) == ["page.md: missing.md (no such file)",
                                                   "page.md: guide.md#no-such (no such heading)"]


def test_every_quoted_repository_path_exists():
    missing = [f"{page.relative_to(PROJECT)}: {m.group(1)}" for page in PAGES
               for m in QUOTED_PATH.finditer(page.read_text(encoding="utf-8"))
               if not (PROJECT / m.group(1).rstrip(".")).exists()]
    assert missing == []


def test_the_readme_is_a_front_page():
    lines = (PROJECT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert 'pip install -e ".[train]" && pipeline run' in head
    assert 'pip install -e ".[dev]" && python -m pytest -q -p no:cacheprovider' in head
    assert (PROJECT / ".ci" / "run").read_text(encoding="utf-8").count(
        'pip install --quiet -e ".[dev]" && python -m pytest -q -p no:cacheprovider') == 1
