"""The pipeline's stages and their one-way imports (ARCHITECTURE.md), held by the code.

Every module of the package belongs to one stage; a module may import modules of its own stage
and of earlier stages only (imports inside functions count too). A new module must be placed in
``STAGES`` (and in ARCHITECTURE.md) before this test passes.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "igcv_nas"

# stage order = data flow: spec -> validate -> cost -> build -> evaluate -> search -> run store
# -> export; base holds what every stage may use; cli comes last.
STAGES: dict[str, list[str]] = {
    "base": ["errors", "units", "fileio", "compat"],
    "arch": ["blocks", "spec", "perm", "validation", "cost", "zoo", "space", "sources",
             "inspection"],
    "nn": ["build"],
    "evaluate": ["data", "train", "zero_cost", "proxy", "latency", "latency_model",
                 "latency_run", "training_run"],
    "search": ["trials", "evolution", "nsga", "search", "session", "raytune", "runstore",
               "progress"],
    "artifacts": ["crosscheck", "export", "deploy", "report"],
    "cli": ["cli"],
}
RANK = {mod: i for i, (_, mods) in enumerate(STAGES.items()) for mod in mods}
TORCH_FREE = STAGES["base"] + STAGES["arch"]  # the core: no torch, optuna or ray at import


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def package_imports(path: Path, depth: int | None = None) -> set[str]:
    """The top-level package modules (``spec``, ``cli``, ...) that ``path`` imports; ``depth``:
    1 for igcv_nas/x.py, 2 for igcv_nas/cli/x.py (default: from the path)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    depth = depth or len(path.relative_to(PKG).parts)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "igcv_nas" and len(parts) > 1:
                    out.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 0:
                parts = mod.split(".")
                if parts[0] != "igcv_nas":
                    continue
                rest = parts[1:]
            elif node.level == depth:  # relative to the package root
                rest = mod.split(".") if mod else []
            elif node.level < depth:  # inside a subpackage (cli): same stage
                rest = ["cli"]
            else:
                continue
            if rest:
                out.add(rest[0])
            else:  # from . import a, b
                out.update(a.name for a in node.names)
    out.discard("__version__")
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def test_every_module_has_a_stage():
    names = {module_name(p) for p in MODULES}
    unplaced = sorted(names - set(RANK))
    assert not unplaced, f"place these modules in STAGES and ARCHITECTURE.md: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PKG)) for p in MODULES])
def test_imports_flow_one_way(path):
    me = module_name(path)
    if me not in RANK:
        pytest.skip("unplaced (test_every_module_has_a_stage fails)")
    later = sorted(m for m in package_imports(path) if RANK.get(m, -1) > RANK[me])
    assert not later, f"{me} (stage {RANK[me]}) imports a later stage: {later}"


def test_the_import_parser_sees_relative_absolute_and_nested_imports(tmp_path):
    # the checker itself: a module that imports a later stage in each of the three forms
    src = ("from .build import IGCNet\nimport igcv_nas.search\n"
           "def f():\n    from . import export, report\n")
    fake = tmp_path / "probe.py"
    fake.write_text(src)
    assert package_imports(fake, depth=1) == {"build", "search", "export", "report"}
    nested = tmp_path / "nested.py"
    nested.write_text("from ..spec import NetworkSpec\nfrom ._common import run_cli\n")
    assert package_imports(nested, depth=2) == {"spec", "cli"}


def test_the_core_imports_without_torch_optuna_or_ray():
    code = ("import sys\n"
            + "".join(f"import igcv_nas.{m}\n" for m in TORCH_FREE if m != "compat")
            + "heavy = sorted(m for m in ('torch', 'optuna', 'ray') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


PRIVATE = [r"\._storage\b", r"\._trial_id\b", r"\._study_id\b", r"\._get_trials\b",
           r"_ot_study", r"\boptuna\._[a-z]", r"\bray\._[a-z]"]  # optuna.__version__ is public


def test_private_optuna_and_ray_api_only_in_compat():
    import re
    used = {str(p.relative_to(PKG)): [w for w in PRIVATE if re.search(w, p.read_text())]
            for p in MODULES if p.name != "compat.py"}
    assert {k: v for k, v in used.items() if v} == {}
    assert "._storage" in (PKG / "compat.py").read_text()  # the checker looks at real text
