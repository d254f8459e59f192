"""Property-based fuzzing of the input readers (hypothesis): valid spec JSON files and space YAML
files are mutated (keys deleted, types changed, huge / negative numbers, deep nesting, unicode,
truncated text) and loading must either succeed or raise the package's one-line error (a
ValueError subclass: SpecError, SpaceError, ZooError) -- never another exception. What loads
must also check / sample cleanly. A subprocess check runs ``igcv-inspect`` on mutated files.

Default tier: a few dozen examples per property (seconds); ``-m slow`` runs many more."""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FixedTrial

from igcv_nas.arch import zoo
from igcv_nas.arch.space import load_space
from igcv_nas.arch.spec import from_json
from igcv_nas.arch.validation import check

from .conftest import tiny_dict

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))

SPEC_SEEDS = [tiny_dict(), zoo.get("igcv3_d_0.25_cifar").to_dict(),
              zoo.get("igcv2_0.25_cifar").to_dict(), zoo.get("mobilenet_v2_0.25_cifar").to_dict()]
SPACE_SEEDS = [yaml.safe_load(textwrap.dedent(t)) for t in (
    """
    complementary: relaxed
    target: {input_size: 64, num_classes: 10}
    act: relu6
    stem: {out_chs: 16, kernel: 3, stride: 2}
    head_chs: 64
    block: {kind: igcv3, expand: [2, 4], kernel: [3, 5], g1: [1, 2], g2: [1, 2]}
    stages:
      - {width: 16, depth: 1, stride: 1, expand: 1}
      - {width: [16, 24], depth: [1, 2], stride: 2}
      - {width: [32, 48], depth: [1, 2], stride: 2}
    """,
    """
    complementary: relaxed
    stem: {out_chs: 32}
    head_chs: 0
    block: {kind: [igc, dwsep, mbconv], kernel: 3, expand: [3, 6], K: [8, 16], L: [min, min+1],
            residual: [true, false]}
    stages:
      - {width: [32, 64], depth: [1, 2], stride: 2}
      - {width: 64, depth: 2, stride: 1}
    """,
    """
    complementary: relaxed
    stem: {out_chs: 32}
    block: {kind: igcv3, expand: 4, g1: [2, [1, 3]], g2: [[1, 3], [3, 5]]}
    stages:
      - {width: [32, 64], depth: [1, 2], stride: 2}
    """)]

SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2**70, 2**70),
    st.sampled_from([0, -1, 1, 2, 3, 8, 32, 2**14, 2**14 + 1, 10**9, 10**30, -10**30, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "igc", "igcv3", "relu", "min", "min+1", "complement", "\u2603", "\ud800",
                     "a\nb", "\x00", "9" * 60, "x" * 300]),
)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _parent(obj: Any, path: tuple) -> tuple[Any, Any] | None:
    for k in path[:-1]:
        try:
            obj = obj[k]
        except (KeyError, IndexError, TypeError):
            return None
    return (obj, path[-1]) if isinstance(obj, (dict, list)) else None


MUTATIONS = st.tuples(st.sampled_from(["delete", "replace", "add_key", "wrap", "scale", "dup"]),
                      st.integers(0, 10**6), VALUES, st.integers(1, 200),
                      st.sampled_from([-1, 0, 2, 10**6, 10**40]))


def _mutate(seed: Any, muts: list) -> Any:
    d = copy.deepcopy(seed)
    for op, pick, value, depth, factor in muts:
        paths = [p for p in _paths(d) if p]
        if not paths:
            return value
        path = paths[pick % len(paths)]
        pk = _parent(d, path)
        if pk is None:
            continue
        parent, key = pk
        try:
            cur = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = value
        elif op == "add_key" and isinstance(cur, dict):
            cur[f"k{pick % 7}" if pick % 2 else "stages"] = value
        elif op == "wrap":
            for _ in range(depth):
                cur = [cur]
            parent[key] = cur
        elif op == "scale" and isinstance(cur, int) and not isinstance(cur, bool):
            parent[key] = cur * factor
        elif op == "dup" and isinstance(cur, list):
            parent[key] = cur * (1 + pick % 50)
    return d


def _one_line(e: BaseException) -> None:
    assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"
    assert "\n" not in str(e), repr(str(e))


# ---------------------------------------------------------------------------------------------
# specs

def _load_spec_text(text: str | bytes) -> None:
    try:
        spec = from_json(text)
    except Exception as e:  # noqa: BLE001 -- the property: only one-line ValueErrors
        _one_line(e)
        return
    rep = check(spec)  # never raises
    assert all("\n" not in str(v) for v in rep.violations)


def _spec_text(seed: int, muts: list, cut: int | None, junk: str) -> str:
    text = json.dumps(_mutate(SPEC_SEEDS[seed % len(SPEC_SEEDS)], muts))
    if cut is not None:
        text = text[:cut % (len(text) + 1)] + junk
    return text


SPEC_CASES = st.tuples(st.integers(0, 3), st.lists(MUTATIONS, min_size=1, max_size=3),
                       st.none() | st.integers(0, 10**6), st.text(max_size=3))


@FAST
@given(SPEC_CASES)
def test_mutated_specs_load_or_raise_one_line(case):
    _load_spec_text(_spec_text(*case))


@pytest.mark.slow
@MANY
@given(SPEC_CASES)
def test_mutated_specs_load_or_raise_one_line_many(case):
    _load_spec_text(_spec_text(*case))


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_as_spec(raw):
    _load_spec_text(raw)


# ---------------------------------------------------------------------------------------------
# spaces

def _load_space_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.yaml"
        p.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            sp = load_space(p)
        except Exception as e:  # noqa: BLE001
            _one_line(e)
            return
    try:
        params = sp.extreme_params("min")
    except Exception as e:  # noqa: BLE001 -- the bounds may refuse, in one line
        _one_line(e)
        return
    spec = sp.sample(FixedTrial(params))
    assert check(spec).violations == [], "a space that loads must sample valid networks"


def _space_text(seed: int, muts: list) -> str | None:
    d = _mutate(SPACE_SEEDS[seed % len(SPACE_SEEDS)], muts)
    try:
        return yaml.safe_dump(d)
    except (yaml.YAMLError, ValueError, RecursionError):
        return None


SPACE_CASES = st.tuples(st.integers(0, 2), st.lists(MUTATIONS, min_size=1, max_size=3))


@FAST
@given(SPACE_CASES)
def test_mutated_spaces_load_or_raise_one_line(case):
    text = _space_text(*case)
    if text is not None:
        _load_space_text(text)


@pytest.mark.slow
@MANY
@given(SPACE_CASES)
def test_mutated_spaces_load_or_raise_one_line_many(case):
    text = _space_text(*case)
    if text is not None:
        _load_space_text(text)


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_as_space(text):
    _load_space_text(text)


# ---------------------------------------------------------------------------------------------
# the command line: exit 0 or 2, one stderr line, never a traceback

def _inspect_cases() -> list[str]:
    rng = random.Random(13)
    texts = ["[" * 100_000, '{"input_size": ' + "9" * 5000 + "}", "\ud800"]
    for _ in range(9):
        muts = [(rng.choice(["delete", "replace", "wrap", "scale", "dup"]), rng.randrange(10**6),
                 rng.choice([None, -1, 10**30, "x", [[[]]], {"a": 1}, 1.5, "\u2603"]),
                 rng.choice([1, 100]), rng.choice([-1, 10**6])) for _ in range(rng.randint(1, 2))]
        texts.append(_spec_text(rng.randrange(4), muts, None, ""))
    return texts


def test_igcv_inspect_on_mutated_files(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    for i, text in enumerate(_inspect_cases()):
        p = tmp_path / f"m{i}.json"
        p.write_bytes(text.encode("utf-8", "surrogatepass"))
        r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.inspect", str(p), "--json"],
                           capture_output=True, text=True, timeout=60, env=env)
        assert "Traceback" not in r.stderr, (text[:200], r.stderr[-2000:])
        assert r.returncode in (0, 2), (text[:200], r.returncode, r.stderr[-2000:])
        if r.returncode == 2:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("igcv-inspect: error: "), r.stderr
