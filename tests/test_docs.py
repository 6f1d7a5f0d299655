"""The documentation that ships: README.md and docs/*.md link only to files and sections
that exist, and cite no document that does not ship."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(m) for m in re.findall(r"^#+ (.*)$", text, re.M)}


def test_the_documents_ship():
    names = {p.name for p in DOCS}
    assert {"README.md", "language.md", "semantics.md", "neural-tangents.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_and_sections_that_exist(doc):
    checked = 0
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = doc if not path else (doc.parent / path).resolve()
        assert file.exists(), f"{doc.name}: link to missing {target}"
        if anchor:
            assert anchor in anchors(file), f"{doc.name}: no section #{anchor} in {file.name}"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_citation_of_a_document_that_does_not_ship(doc):
    assert "SPEC §" not in doc.read_text()


def table_first_column(path, header: str) -> set[str]:
    """The `keywords` in the first column of the markdown table whose header row starts
    with `header`."""
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header} |"))
    words = set()
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        first = ln.split("|")[1]
        words |= {w.split()[0] for w in re.findall(r"`([^`]+)`", first)}
    return words


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "docs" / "language.md"],
                         ids=["README", "language"])
def test_the_layer_tables_list_every_layer_of_the_registry(path):
    from infinet.layers import BLOCKS, LAYERS
    listed = table_first_column(path, "layer")
    assert set(LAYERS) <= listed, sorted(set(LAYERS) - listed)
    if path.name == "README.md":
        assert set(BLOCKS) <= listed, sorted(set(BLOCKS) - listed)
    assert listed <= set(LAYERS) | set(BLOCKS), sorted(listed - set(LAYERS) - set(BLOCKS))
