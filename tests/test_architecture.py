"""The pipeline's stages and their one-way imports (README.md, "Where things go"), held by the code.

The layout is the pipeline: ``igcv_nas/`` holds the base modules every stage may use, and one
sub-package per stage, in data-flow order (``arch`` -> ``nn`` -> ``evaluate`` -> ``search`` ->
``artifacts`` -> ``cli``). A module may import modules of its own stage and of earlier stages
only (imports inside functions count too). A new module, or a new sub-package, fails these tests
until README.md's table names it.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "igcv_nas"

# stage order = data flow: spec -> validate -> cost -> build -> evaluate -> search -> run store
# -> export; "base" is the package root (what every stage may use); cli comes last.
STAGES = ["base", "arch", "nn", "evaluate", "search", "artifacts", "cli"]
RANK = {s: i for i, s in enumerate(STAGES)}
BASE = {"errors", "units", "fileio"}
TORCH_FREE = ("base", "arch")  # the core: no torch, optuna or ray at import


def dotted(path: Path) -> str:
    """igcv_nas/arch/spec.py -> igcv_nas.arch.spec; igcv_nas/arch/__init__.py -> igcv_nas.arch."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    """The stage of a dotted module name inside the package."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE or parts[1] == "__version__":
        return "base"
    return parts[1]


def package_imports(path: Path, me: str | None = None) -> set[str]:
    """The absolute names (``igcv_nas.arch.spec``, ``igcv_nas.search``, ...) that ``path``
    imports from the package, relative imports resolved against the file's own package (``me``:
    the file's dotted name, default from its place in the package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = me or dotted(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "igcv_nas")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "igcv_nas":
                continue
            if mod == "igcv_nas" or mod.count(".") == 1 and mod.split(".")[1] in STAGES:
                # from igcv_nas import errors / from igcv_nas.arch import spec: names may be modules
                out.update(f"{mod}.{a.name}" for a in node.names)
            else:
                out.add(mod)
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layout_is_the_stages():
    subpackages = sorted(p.name for p in PKG.iterdir()
                         if p.is_dir() and (p / "__init__.py").exists())
    assert subpackages == sorted(set(STAGES) - {"base"})
    root = sorted(p.stem for p in PKG.glob("*.py") if p.name != "__init__.py")
    assert root == sorted(BASE)


def test_every_module_is_in_the_readme_table():
    """The "Where things go" table (docs/development.md) names every module in its stage's
    row."""
    text = (REPO / "docs" / "development.md").read_text()
    assert "## Where things go" in text, "docs/development.md lost its 'Where things go' table"
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `(?:igcv_nas/)?(\w*)/?`[^|]*\| ([^|]+) \|", text, re.M)}
    missing = []
    for p in MODULES:
        if p.name == "__init__.py":
            continue
        stage = stage_of(dotted(p))
        key = "" if stage == "base" else stage
        if f"`{p.stem}`" not in rows.get(key, ""):
            missing.append(str(p.relative_to(REPO)))
    assert not missing, f"name these modules in docs/development.md's layout table: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PKG)) for p in MODULES])
def test_imports_flow_one_way(path):
    if path == PKG / "__init__.py":  # the facade: re-exports the torch-free core only
        assert {stage_of(m) for m in package_imports(path)} <= set(TORCH_FREE)
        return
    me = stage_of(dotted(path))
    later = sorted(m for m in package_imports(path) if RANK[stage_of(m)] > RANK[me])
    assert not later, f"{dotted(path)} (stage {me}) imports a later stage: {later}"


def test_the_import_parser_sees_relative_absolute_and_nested_imports(tmp_path):
    # the checker itself, on a fake module placed in the evaluation stage: each import form
    fake = tmp_path / "probe.py"
    fake.write_text("from ..nn.build import IGCNet\nimport igcv_nas.search.engine\n"
                    "from .proxy import evaluate\nfrom .. import errors\n"
                    "def f():\n    from ..artifacts import export, report\n")
    got = package_imports(fake, me="igcv_nas.evaluate.probe")
    assert got == {"igcv_nas.nn.build", "igcv_nas.search.engine", "igcv_nas.evaluate.proxy",
                   "igcv_nas.errors", "igcv_nas.artifacts.export", "igcv_nas.artifacts.report"}
    assert sorted(stage_of(m) for m in got) == ["artifacts", "artifacts", "base", "evaluate",
                                                "nn", "search"]


def test_the_core_imports_without_torch_optuna_or_ray():
    core = [dotted(p) for p in MODULES
            if stage_of(dotted(p)) in TORCH_FREE and p != PKG / "__init__.py"]
    assert len(core) == len(BASE) + 1 + 9  # base, arch/__init__ and the 9 architecture modules
    code = ("import sys\n" + "".join(f"import {m}\n" for m in core)
            + "heavy = sorted(m for m in ('torch', 'optuna', 'ray') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


PRIVATE = [r"\._storage\b", r"\._trial_id\b", r"\._study_id\b", r"\._get_trials\b",
           r"_ot_study", r"\boptuna\._[a-z]", r"\bray\._[a-z]"]  # optuna.__version__ is public
COMPAT = PKG / "search" / "compat.py"


def test_private_optuna_and_ray_api_only_in_compat():
    used = {str(p.relative_to(PKG)): [w for w in PRIVATE if re.search(w, p.read_text())]
            for p in MODULES if p != COMPAT}
    assert {k: v for k, v in used.items() if v} == {}
    assert "._storage" in COMPAT.read_text()  # the checker looks at real text


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the absolute imports of ``path`` (``torch``, ``optuna``, ...)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_the_search_does_not_know_how_a_block_is_built():
    """The search stage reaches the network only through the evaluation stage."""
    builds = {str(p.relative_to(PKG)): sorted(m for m in package_imports(p)
                                              if stage_of(m) == "nn")
              for p in MODULES if stage_of(dotted(p)) == "search"}
    assert {k: v for k, v in builds.items() if v} == {}
    assert set(builds) == {f"search/{p.name}" for p in (PKG / "search").glob("*.py")}  # all seen


def test_the_evaluation_stage_knows_nothing_of_ray_and_only_latency_run_of_optuna():
    """The trainer, the proxy and the data know nothing of Optuna or Ray; ``latency_run`` uses
    Optuna's random sampler only to draw a space's networks for a LUT."""
    found = {p.stem: sorted(third_party_imports(p) & {"optuna", "ray"})
             for p in MODULES if stage_of(dotted(p)) == "evaluate"}
    assert {k: v for k, v in found.items() if v} == {"latency_run": ["optuna"]}
    assert "torch" in third_party_imports(PKG / "evaluate" / "train.py")  # the parser sees imports
