"""Regularized (aging) evolution as an Optuna sampler (Real et al. 2019, arXiv 1802.01548).

:class:`EvolutionSampler` keeps no state of its own between trials: every proposal is a function
of the seed, the trial's number and the study's COMPLETE trials at the moment the trial is asked,
so a resumed study, or several workers sharing one storage, go on exactly where they were.

- **Population**: the ``population_size`` most recent COMPLETE trials (by trial number). Aging:
  when a new trial completes, the oldest member leaves, however good it was. FAIL, PRUNED,
  RUNNING and WAITING trials never enter the population and never count toward start-up (the
  search engine tells duplicates and over-budget samples as FAIL for exactly this reason).
- **Start-up**: until ``n_startup_trials`` (default ``population_size``) trials are COMPLETE,
  every parameter is drawn uniformly at random.
- **Tournament**: ``sample_size`` members drawn uniformly without replacement; the parent is the
  best of them by the study direction (ties: the youngest). Single-objective studies only.
- **Mutation**: the child takes the parent's parameters with exactly one changed: one of the
  parent's parameters whose distribution has more than one choice, chosen uniformly, gets a
  different value, chosen uniformly among the other choices. Define-by-run spaces: a parameter
  the child asks that the parent lacks (e.g. the blocks of a deeper stage), or whose parent value
  is not in the child's distribution, is drawn at random. Numeric (int/float) parameters are
  supported too (not used by igcv-nas spaces): their mutation is a fresh uniform draw from the
  distribution that differs from the parent's value.
- **accept** (optional): before the real trial samples anything, candidate children are built by
  handing ``accept`` a :class:`Candidate` (trial-like: ``suggest_categorical``, ``suggest_int``,
  ``suggest_float``, ``params``, ``number``, ``parent``) that answers with the logic above and
  records the answers; the first candidate for which ``accept(candidate)`` is true, among at
  most ``max_tries`` (a new tournament and mutation each), is what the real trial then gets, label
  for label (a deterministic define-by-run objective asks the same labels in the same order).
  If none is accepted the last candidate is used (the caller is expected to reject it). Start-up
  samples go through ``accept`` as well.

The parent of each trial is kept in memory (:meth:`EvolutionSampler.parent_of`) and in the
trial's system attribute :data:`PARENT_KEY` (so it survives a restart and is visible to other
processes; writing it needs private Optuna API, which lives in
:func:`igcv_nas.search.compat.set_trial_system_attr`).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .compat import set_trial_system_attr as _set_trial_system_attr
from ..errors import InputError

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["PARENT_KEY", "Candidate", "EvolutionSampler"]

PARENT_KEY = "igcv_nas:evolution:parent"  # trial system attribute: parent trial number or None
_NUMERIC_REDRAWS = 64  # a numeric mutation redraws until it differs from the parent, at most this


def _member(choices: Sequence[Any], value: Any) -> Any:
    """The element of ``choices`` equal to ``value`` and of the same type, else ``_MISSING``."""
    for c in choices:
        if type(c) is type(value) and c == value:
            return c
    return _MISSING


_MISSING = object()


def _in_dist(dist: BaseDistribution, value: Any) -> Any:
    """``value`` as a member of ``dist`` (the choice object for categorical), else ``_MISSING``."""
    if isinstance(dist, CategoricalDistribution):
        return _member(dist.choices, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _MISSING
    if isinstance(dist, IntDistribution):
        if value != int(value):
            return _MISSING
        v = int(value)
        ok = dist.low <= v <= dist.high and (v - dist.low) % dist.step == 0
        return v if ok else _MISSING
    if isinstance(dist, FloatDistribution):
        v = float(value)
        if not (dist.low <= v <= dist.high):
            return _MISSING
        if dist.step is not None:
            k = (v - dist.low) / dist.step
            if abs(k - round(k)) > 1e-8:
                return _MISSING
        return v
    return _MISSING


@dataclass
class _Plan:
    """How one trial (or one candidate of it) answers: parent, mutated parameter, answers."""
    parent: FrozenTrial | None
    target: str | None  # the parent's parameter that is mutated
    rng: np.random.Generator
    answers: dict[str, Any] = field(default_factory=dict)
    _random: RandomSampler | None = None

    @property
    def parent_number(self) -> int | None:
        return None if self.parent is None else self.parent.number

    def random(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[int(self.rng.integers(len(dist.choices)))]
        if self._random is None:  # numeric draws: a RandomSampler seeded from this plan's stream
            self._random = RandomSampler(seed=int(self.rng.integers(2 ** 32)))
        return self._random.sample_independent(study, trial, name, dist)

    def mutate(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution,
               old: Any) -> Any:
        if isinstance(dist, CategoricalDistribution):
            others = [c for c in dist.choices if not (type(c) is type(old) and c == old)]
            if not others:
                return dist.choices[0]
            return others[int(self.rng.integers(len(others)))]
        v = self.random(study, trial, name, dist)
        for _ in range(_NUMERIC_REDRAWS):
            if v != old:
                break
            v = self.random(study, trial, name, dist)
        return v

    def answer(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
        if name in self.answers:
            v = _in_dist(dist, self.answers[name])
            if v is not _MISSING:
                return v
        if self.parent is not None and name in self.parent.params:
            old = self.parent.params[name]
            if name == self.target:
                v = self.mutate(study, trial, name, dist, old)
            else:
                v = _in_dist(dist, old)
                if v is _MISSING:
                    v = self.random(study, trial, name, dist)
        else:
            v = self.random(study, trial, name, dist)
        self.answers[name] = v
        return v


class Candidate:
    """Trial-like stand-in handed to ``accept``: answers as the child would, records answers.

    ``params``/``distributions``: what was asked so far; ``parent``: the parent's trial number
    (None for a random start-up sample); ``number``: the real trial's number."""

    def __init__(self, study: Study, trial: FrozenTrial, plan: _Plan):
        self._study, self._trial, self._plan = study, trial, plan
        self.number = trial.number
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}

    @property
    def parent(self) -> int | None:
        return self._plan.parent_number

    def _suggest(self, name: str, dist: BaseDistribution) -> Any:
        if name in self.params:
            v = _in_dist(dist, self.params[name])
            if v is not _MISSING:
                return v
        v = self._plan.answer(self._study, self._trial, name, dist)
        self.params[name] = v
        self.distributions[name] = dist
        return v

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(name, CategoricalDistribution(choices))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int:
        return int(self._suggest(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return float(self._suggest(name, FloatDistribution(low, high, log=log, step=step)))


class EvolutionSampler(BaseSampler):
    """Regularized (aging) evolution: tournament selection + one mutation (see module docs).

    Args:
        population_size: P, the most recent COMPLETE trials that form the population.
        sample_size: S, tournament size (members drawn without replacement), 1 <= S <= P.
        seed: seeds every draw; a proposal depends only on (seed, trial number, COMPLETE trials
            when asked). None: a fresh random seed.
        n_startup_trials: random samples until this many trials are COMPLETE (default P).
        accept: ``accept(candidate) -> bool``, called before the real trial samples (see
            :class:`Candidate`); the first accepted candidate is used.
        max_tries: candidates tried per trial when ``accept`` is given.
    """

    def __init__(self, population_size: int = 20, sample_size: int = 5, *,
                 seed: int | None = None, n_startup_trials: int | None = None,
                 accept: Callable[[Any], bool] | None = None, max_tries: int = 200):
        if population_size < 1:
            raise InputError(f"EvolutionSampler: population_size must be >= 1, "
                             f"got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise InputError(f"EvolutionSampler: sample_size must be in 1..population_size "
                             f"({population_size}), got {sample_size}")
        if n_startup_trials is not None and n_startup_trials < 0:
            raise InputError(f"EvolutionSampler: n_startup_trials must be >= 0, "
                             f"got {n_startup_trials}")
        if max_tries < 1:
            raise InputError(f"EvolutionSampler: max_tries must be >= 1, got {max_tries}")
        if seed is not None and int(seed) < 0:
            raise InputError(f"EvolutionSampler: seed must be >= 0, got {seed}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.n_startup_trials = population_size if n_startup_trials is None else n_startup_trials
        self.accept = accept
        self.max_tries = max_tries
        self._seed = self._fresh_seed() if seed is None else int(seed)
        self._plans: dict[tuple[str, int], _Plan] = {}
        self._parents: dict[int, int | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _fresh_seed() -> int:
        return int(np.random.SeedSequence().entropy)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        self._seed = self._fresh_seed()

    # -- public ---------------------------------------------------------------------------

    def parent_of(self, trial_number: int, study: Study | None = None) -> int | None:
        """The parent trial number of a child; None for a random (start-up) sample, or for a
        trial this sampler did not propose. With ``study``, read from the trial's system
        attribute :data:`PARENT_KEY` (works after a restart / for other workers' trials)."""
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            t = trials[trial_number] if 0 <= trial_number < len(trials) else None
            if t is None or t.number != trial_number:
                t = next((x for x in trials if x.number == trial_number), None)
            if t is not None and PARENT_KEY in t.system_attrs:
                return t.system_attrs[PARENT_KEY]
        return self._parents.get(trial_number)

    # -- Optuna sampler interface ---------------------------------------------------------

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        self._check_single_objective(study)
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._check_single_objective(study)
        self._plan_for(study, trial)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        self._check_single_objective(study)
        return self._plan_for(study, trial).answer(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        with self._lock:
            self._plans.pop((study.study_name, trial.number), None)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_single_objective(study: Study) -> None:
        if len(study.directions) != 1:
            raise InputError("EvolutionSampler supports single-objective studies only; this "
                             f"study has {len(study.directions)} objectives")

    def _plan_for(self, study: Study, trial: FrozenTrial) -> _Plan:
        key = (study.study_name, trial.number)
        with self._lock:
            plan = self._plans.get(key)
        if plan is not None:
            return plan
        rng = np.random.default_rng([self._seed, trial.number])
        complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                          key=lambda t: t.number)
        population = complete[-self.population_size:]
        startup = len(complete) < self.n_startup_trials or not population
        if self.accept is None:
            plan = self._propose(study, population, startup, rng)
        else:
            for _ in range(self.max_tries):
                plan = self._propose(study, population, startup, rng)
                if self.accept(Candidate(study, trial, plan)):
                    break
        with self._lock:
            self._plans[key] = plan
            self._parents[trial.number] = plan.parent_number
        if trial.state == TrialState.RUNNING:
            _set_trial_system_attr(study, trial, PARENT_KEY, plan.parent_number)
        return plan

    def _propose(self, study: Study, population: list[FrozenTrial], startup: bool,
                 rng: np.random.Generator) -> _Plan:
        if startup:
            return _Plan(parent=None, target=None, rng=rng)
        k = min(self.sample_size, len(population))
        drawn = [population[int(i)] for i in rng.choice(len(population), size=k, replace=False)]
        maximize = study.direction == StudyDirection.MAXIMIZE

        def fitness(t: FrozenTrial) -> tuple[float, int]:
            v = float(t.value)  # type: ignore[arg-type]
            if math.isnan(v):
                v = -math.inf if maximize else math.inf
            return (v if maximize else -v, t.number)  # ties: the youngest

        parent = max(drawn, key=fitness)
        mutable = sorted(n for n, d in parent.distributions.items() if not d.single())
        target = mutable[int(rng.integers(len(mutable)))] if mutable else None
        return _Plan(parent=parent, target=target, rng=rng)

