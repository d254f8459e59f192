"""The documentation cannot drift from what it documents.

* The benchmark pages (``docs/benchmarks*.md``) and README.md's figures block are rendered by
  ``benchmarks/render_docs.py`` from ``benchmarks/results/``: re-rendering changes nothing.
* README.md is the front door: at most 250 lines, the two commands first (the install line and
  the test command that .ci/run uses), and it speaks of the product, not of issues.
* Every page under docs/ is in mkdocs.yml's nav and every nav entry exists (``mkdocs build
  --strict`` in .ci/run checks links, anchors and API names on top of this).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"


def _render_module():
    spec = importlib.util.spec_from_file_location("render_docs",
                                                  REPO / "benchmarks" / "render_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rendered_benchmark_pages_are_current():
    pages = _render_module().render()
    assert REPO / "README.md" in pages, "README.md lost its figures block markers"
    assert {p.name for p in pages} >= {"benchmarks.md", "benchmarks-fidelity.md",
                                      "benchmarks-search.md", "benchmarks-latency.md"}
    stale = [str(p.relative_to(REPO)) for p, text in pages.items()
             if not p.is_file() or p.read_text() != text]
    assert not stale, f"stale: {stale}; run: python benchmarks/render_docs.py"


def test_benchmark_pages_are_all_generated():
    # a page under docs/benchmarks*.md that the script does not write would be typed by hand
    mod = _render_module()
    for p in DOCS.glob("benchmarks*.md"):
        assert p.read_text().startswith(mod.GENERATED), f"{p.name} is not rendered"


def test_readme_is_a_short_front_door_whose_commands_come_first():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250
    first = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first and text.index(first.group(0)) < 1500  # in the first screen
    block = first.group(1)
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install -e '.[test]'" in block and "pip install -q -e '.[test]'" in ci
    assert "igcv-search --flops 300M" in block
    test_cmd = [ln for ln in block.splitlines() if ln.startswith("python -m pytest")]
    assert test_cmd == ["python -m pytest"]
    assert re.search(r"^python -m pytest$", ci, re.M), ".ci/run must run README's test command"


def test_readme_and_docs_speak_of_the_product_not_of_issues():
    found = []
    for p in [README, *DOCS.rglob("*.md")]:
        if p.name == "changelog.md":  # includes CHANGELOG.md: history, by design
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"\bissues?\b|#\d+\b", line, re.I):
                found.append(f"{p.relative_to(REPO)}:{i}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for n in node for p in _nav_pages(n)]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return []


def test_every_docs_page_is_in_the_nav():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *a: None)
    cfg = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)
    nav = set(_nav_pages(cfg["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == pages, f"not in the nav: {sorted(pages - nav)}; missing: {sorted(nav - pages)}"
