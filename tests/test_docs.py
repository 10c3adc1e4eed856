"""The links between the README and docs/: each relative link names a file that exists, and each
``#anchor`` one of that file's headings (as GitHub makes anchors), so that a number the
README or a doc points at stays findable when a page is split or moved."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "scripts" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered; lines in code fences are not headings."""
    seen: dict[str, int] = {}
    out, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        anchor = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(anchor, 0)
        seen[anchor] = n + 1
        out.add(anchor if n == 0 else f"{anchor}-{n}")
    return out


def test_anchors_follow_githubs_rule():
    page = ROOT / "docs" / "benchmarks-log.md"
    assert "a-framepack-video-start-to-finish-h100-80gb-hbm3-2026-12-07" in anchors(page)
    assert "backend-auto-on-the-real-width-profile-h200-2026-11-27" in anchors(page)


def test_links_between_pages_resolve():
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken, checked = [], 0
    for page in PAGES:
        for target in link.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            checked += 1
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert checked > 20
    assert not broken, "\n".join(broken)
