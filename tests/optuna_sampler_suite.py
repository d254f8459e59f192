"""Optuna's own sampler tests, run with our samplers in place of Optuna's:
:class:`~igcv_nas.search.evolution.EvolutionSampler` and
:class:`~igcv_nas.search.nsga.ConditionalNSGAII`.

Not collected by the project's test run (the file name does not match ``test_*.py``); run it with
``benchmarks/run_optuna_sampler_tests.py``, which takes ``tests/samplers_tests/`` from the PyPI
sdist of the *installed* Optuna version into a temporary directory and points
``IGCV_OPTUNA_TESTS`` at it. Nothing of Optuna's test code is copied here: their test modules are
imported from that directory and their test functions and test classes are run with factories of
our sampler in place of their parametrize lists of Optuna samplers.

Applicable (run): ``test_samplers.py`` -- ``TestBasicSampler`` (every case; the sampler draws
int/float parameters too), ``TestSingleOnlySampler``, ``test_reseed_rng_change_sampling``,
``test_reproducible``, ``test_reproducible_in_other_process``; ``test_partial_fixed.py`` --
``test_fixed_sampling``; for ConditionalNSGAII ``TestMultiObjectiveSampler`` too (it is
multi-objective, so ``TestSingleOnlySampler`` is the evolution sampler's only). Not
applicable (reported as skipped, with the reason): the relative sampler cases, the evolution
sampler's multi-objective cases and the tests written for one particular Optuna sampler.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest

from igcv_nas.search.evolution import EvolutionSampler
from igcv_nas.search.nsga import ConditionalNSGAII

_DIR = os.environ.get("IGCV_OPTUNA_TESTS")
if not _DIR or not (Path(_DIR) / "test_samplers.py").is_file():
    pytest.skip("Optuna's tests/samplers_tests not available: run "
                "benchmarks/run_optuna_sampler_tests.py (it sets IGCV_OPTUNA_TESTS)",
                allow_module_level=True)


def _load(name: str) -> Any:
    """Import one of Optuna's test modules from the sdist directory under a private name."""
    mod_name = f"optuna_sdist_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, Path(_DIR) / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


T = _load("test_samplers")
PF = _load("test_partial_fixed") if (Path(_DIR) / "test_partial_fixed.py").is_file() else None

# Our sampler in the configurations worth testing: defaults (P = 20, so the short runs of the
# tests are all start-up), a small population (evolution after 4 COMPLETE trials), evolution
# from the first COMPLETE trial, and the accept path (every candidate accepted).
SEEDED: dict[str, Callable[[int], EvolutionSampler]] = {
    "Evolution-default": lambda seed: EvolutionSampler(seed=seed),
    "Evolution-P4S2": lambda seed: EvolutionSampler(4, 2, seed=seed),
    "Evolution-P4S2-nostartup": lambda seed: EvolutionSampler(4, 2, seed=seed,
                                                              n_startup_trials=0),
    "Evolution-P4S2-accept": lambda seed: EvolutionSampler(4, 2, seed=seed,
                                                           accept=lambda cand: True),
}
EVOLUTION = list(SEEDED)
# ConditionalNSGAII: a small population (generations from the 5th COMPLETE trial), the default
# population (all generation 0 in their short runs) and the accept path.
NSGA: dict[str, Callable[[int], Any]] = {
    "NSGA-P4": lambda seed: ConditionalNSGAII(population_size=4, seed=seed),
    "NSGA-default": lambda seed: ConditionalNSGAII(seed=seed),
    "NSGA-P4-accept": lambda seed: ConditionalNSGAII(population_size=4, seed=seed,
                                                     accept=lambda cand: True),
}
SEEDED.update(NSGA)
UNSEEDED = {name: (lambda make=make: make(None)) for name, make in SEEDED.items()}

_seeded = pytest.mark.parametrize("make_seeded", list(SEEDED.values()), ids=list(SEEDED))
_unseeded = pytest.fixture(params=list(UNSEEDED.values()), ids=list(UNSEEDED))
_unseeded_evolution = pytest.fixture(params=[UNSEEDED[k] for k in EVOLUTION], ids=EVOLUTION)
_unseeded_nsga = pytest.fixture(params=[UNSEEDED[k] for k in NSGA], ids=list(NSGA))


def _their_params(func: Any, argname: str) -> tuple[list, list | None]:
    """The values and ids of ``func``'s own ``pytest.mark.parametrize(argname, ...)``."""
    for mark in getattr(func, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == argname:
            return list(mark.args[1]), mark.kwargs.get("ids")
    raise LookupError(f"{func.__name__} has no parametrize of {argname!r}")


# --- test classes: their cases, our sampler -----------------------------------------------

class TestOurBasicSampler(T.TestBasicSampler):
    @_unseeded
    def sampler(self, request: Any) -> Callable[[], EvolutionSampler]:
        return request.param


class TestEvolutionSingleOnlySampler(T.TestSingleOnlySampler):
    @_unseeded_evolution
    def sampler(self, request: Any) -> Callable[[], EvolutionSampler]:
        return request.param


class TestEvolutionRelativeSampler(T.TestRelativeSampler):
    @pytest.fixture
    def sampler(self) -> Callable[[], EvolutionSampler]:
        pytest.skip("not applicable: EvolutionSampler is not a relative sampler (its "
                    "infer_relative_search_space is empty; each parameter is answered by "
                    "sample_independent, conditional spaces need that), and these cases call "
                    "sample_relative directly expecting a value for every parameter")


class TestEvolutionMultiObjectiveSampler(T.TestMultiObjectiveSampler):
    @pytest.fixture
    def sampler(self) -> Callable[[], EvolutionSampler]:
        pytest.skip("not applicable: EvolutionSampler is single-objective (tournament by the "
                    "study direction); it raises ValueError on multi-objective studies, which "
                    "TestEvolutionSingleOnlySampler checks")


class TestNSGAMultiObjectiveSampler(T.TestMultiObjectiveSampler):
    @_unseeded_nsga
    def sampler(self, request: Any) -> Callable[[], Any]:
        return request.param


class TestNSGARelativeSampler(T.TestRelativeSampler):
    @pytest.fixture
    def sampler(self) -> Callable[[], Any]:
        pytest.skip("not applicable: ConditionalNSGAII answers every parameter in "
                    "sample_independent (its relative search space is empty), as the "
                    "conditional crossover needs")


# --- module-level tests: their functions, called with our factories ------------------------

@_seeded
def test_reseed_rng_change_sampling(make_seeded: Callable[[int], EvolutionSampler]) -> None:
    T.test_reseed_rng_change_sampling(make_seeded)


_objs, _obj_ids = _their_params(T.test_reproducible, "objective_func")


@_seeded
@pytest.mark.parametrize("objective_func", _objs, ids=_obj_ids or ["sum", "zero"])
def test_reproducible(make_seeded: Callable[[int], EvolutionSampler], objective_func: Any) -> None:
    T.test_reproducible(make_seeded, objective_func)


def _run_optimize(k: int, sampler_name: str, sequence_dict: Any, hash_dict: Any) -> None:
    """Their ``run_optimize`` in the spawned process, with our factory registered under
    ``sampler_name`` in their ``sampler_class_with_seed`` table first (top-level: picklable)."""
    T.sampler_class_with_seed[sampler_name] = SEEDED[sampler_name]
    T.run_optimize(k, sampler_name, sequence_dict, hash_dict)


unset_seed_in_test = T.unset_seed_in_test  # their fixture, used by their test below


@pytest.mark.parametrize("sampler_name", list(SEEDED))
def test_reproducible_in_other_process(sampler_name: str, unset_seed_in_test: None) -> None:
    with patch.object(T, "run_optimize", _run_optimize):
        T.test_reproducible_in_other_process(sampler_name, None)


if PF is not None:
    @pytest.mark.parametrize("sampler_class", list(UNSEEDED.values()), ids=list(UNSEEDED))
    def test_partial_fixed_sampling_fixed_sampling(sampler_class: Any) -> None:
        PF.test_fixed_sampling(sampler_class)


# --- not applicable: listed so the report shows them --------------------------------------

@pytest.mark.parametrize("name,reason", [
    ("test_samplers.py::test_sampler_reseed_rng",
     "checks the attribute layout of Optuna's own samplers (a LazyRandomState attribute, a "
     "nested BaseSampler), with expectations listed per Optuna sampler; EvolutionSampler holds "
     "neither (it derives a generator per trial from (seed, trial number)); that reseed_rng "
     "changes sampling is checked by test_reseed_rng_change_sampling"),
    ("test_samplers.py::test_pickle_random_sampler", "RandomSampler only"),
    ("test_samplers.py::test_sample_relative", "tests Optuna's FixedSampler test helper"),
    ("test_partial_fixed.py (other tests)",
     "PartialFixedSampler itself with RandomSampler/TPESampler as the base; no sampler "
     "parameter"),
    ("other files of tests/samplers_tests/",
     "tests of one particular Optuna sampler each (TPE, CMA-ES, GP, NSGA-II/III, QMC, grid, "
     "brute force, GA base)"),
])
def test_not_applicable(name: str, reason: str) -> None:
    pytest.skip(f"not applicable: {name}: {reason}")
