"""NSGA-II whose crossover reaches the conditional parameters of a define-by-run space.

Optuna's :class:`~optuna.samplers.NSGAIISampler` crosses over only the parameters in the
*intersection* search space (those every COMPLETE trial has) and draws every other parameter at
random. In an igcv-nas space a block asks only the keys of its kind and a stage only its depth's
blocks, so the intersection is a handful of stage-level choices: most of a child was random, not
inherited. :class:`ConditionalNSGAII` keeps NSGA-II's generations and its elite selection
(non-dominated sorting and crowding distance, Optuna's own) and replaces how a child is made:

- **Parents**: two binary tournaments (two distinct members drawn uniformly, the dominating one
  wins, a tie is a coin flip) in the generation's parent population. With probability
  ``1 - crossover_prob`` the second parent is the first (the child is a mutated copy).
- **Uniform crossover, parameter by parameter, as the child asks them**: a parameter that both
  parents have (with a value inside the child's distribution) comes from the first parent, or
  from the second with probability ``swapping_prob``; one that only one parent has comes from it;
  one that neither has (a block neither parent reached) is drawn at random.
- **Mutation**: each inherited parameter is instead drawn at random with probability
  ``mutation_prob`` (default 1 / the number of distinct parameters of the two parents).
- **Generation 0** (until ``population_size`` trials are COMPLETE): uniform random samples.
- **accept** (optional), as in :class:`igcv_nas.search.evolution.EvolutionSampler`:
  candidate children are built (new tournaments, crossover and mutation each time) and handed to
  ``accept`` until one is accepted (at most ``max_tries``); the real trial then gets that child
  label for label.

Every draw of a trial comes from a generator seeded by ``(seed, trial number)``, so a resumed study
proposes what it would have proposed. The first parent of each child is kept in memory and in the
trial's system attribute :data:`PARENTS_KEY` (both parents' numbers), read by :meth:`parent_of`.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import NSGAIISampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .compat import set_trial_system_attr
from ..errors import InputError
from .evolution import _MISSING, Candidate, _in_dist, _Plan

if TYPE_CHECKING:
    from optuna.study import Study

__all__ = ["PARENTS_KEY", "ConditionalNSGAII"]

PARENTS_KEY = "igcv_nas:nsga2:parents"  # trial system attribute: [first, second] or None


def dominates(a: Sequence[float], b: Sequence[float],
              directions: Sequence[StudyDirection]) -> bool:
    """Pareto dominance: ``a`` is no worse than ``b`` in every objective and better in one."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == StudyDirection.MINIMIZE:
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


class _CrossPlan(_Plan):
    """How one child answers: inherited from its two parents, mutated, or drawn at random."""

    def __init__(self, parents: tuple[FrozenTrial, FrozenTrial] | None, rng: np.random.Generator,
                 swapping_prob: float, mutation_prob: float | None):
        super().__init__(parent=None if parents is None else parents[0], target=None, rng=rng)
        self.parents = parents
        self.swapping_prob = swapping_prob
        if parents is None:
            self.mutation_prob = 0.0
        elif mutation_prob is None:
            names = set(parents[0].params) | set(parents[1].params)
            self.mutation_prob = 1.0 / max(1, len(names))
        else:
            self.mutation_prob = mutation_prob

    @property
    def parent_numbers(self) -> list[int] | None:
        return None if self.parents is None else [p.number for p in self.parents]

    def answer(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
        if name in self.answers:
            v = _in_dist(dist, self.answers[name])
            if v is not _MISSING:
                return v
        inherited = []
        if self.parents is not None:
            first, second = self.parents
            for p in (first,) if first is second else (first, second):
                if name in p.params:
                    v = _in_dist(dist, p.params[name])
                    if v is not _MISSING:
                        inherited.append(v)
        # one draw per question whatever the branch, so a child's answers depend only on the
        # labels asked so far (not on which branch an earlier question took)
        u_mutate, u_swap = self.rng.random(), self.rng.random()
        if not inherited or u_mutate < self.mutation_prob:
            v = self.random(study, trial, name, dist)
        elif len(inherited) == 2 and u_swap < self.swapping_prob:
            v = inherited[1]
        else:
            v = inherited[0]
        self.answers[name] = v
        return v


class ConditionalNSGAII(NSGAIISampler):
    """NSGA-II with parameter-wise crossover of conditional spaces (see the module docs).

    Args:
        population_size: trials per generation (>= 2).
        seed: seeds every draw (None: a fresh random seed).
        crossover_prob: probability that a child has two parents rather than one.
        swapping_prob: probability that a parameter both parents have comes from the second.
        mutation_prob: probability that an inherited parameter is redrawn (None: 1 / the number
            of distinct parameters of the parents).
        accept: ``accept(candidate) -> bool`` before the real trial samples (see
            :class:`igcv_nas.search.evolution.Candidate`); the first accepted candidate is used.
        max_tries: candidates tried per trial when ``accept`` is given.
    """

    def __init__(self, *, population_size: int = 50, seed: int | None = None,
                 crossover_prob: float = 0.9, swapping_prob: float = 0.5,
                 mutation_prob: float | None = None,
                 accept: Callable[[Any], bool] | None = None, max_tries: int = 200):
        if population_size < 2:
            raise InputError(f"ConditionalNSGAII: population_size must be >= 2, "
                             f"got {population_size}")
        for label, p in (("crossover_prob", crossover_prob), ("swapping_prob", swapping_prob),
                         ("mutation_prob", mutation_prob)):
            if p is not None and not 0.0 <= p <= 1.0:
                raise InputError(f"ConditionalNSGAII: {label} must be in [0, 1], got {p}")
        if max_tries < 1:
            raise InputError(f"ConditionalNSGAII: max_tries must be >= 1, got {max_tries}")
        if seed is not None and int(seed) < 0:
            raise InputError(f"ConditionalNSGAII: seed must be >= 0, got {seed}")
        super().__init__(population_size=population_size, seed=seed,
                         crossover_prob=crossover_prob, swapping_prob=swapping_prob,
                         mutation_prob=mutation_prob)
        self._cx_prob, self._swap_prob, self._mut_prob = crossover_prob, swapping_prob, \
            mutation_prob
        self.accept = accept
        self.max_tries = max_tries
        self._seed = int(np.random.SeedSequence().entropy) if seed is None else int(seed)
        self._plans: dict[tuple[str, int], _CrossPlan] = {}
        self._parents: dict[int, list[int] | None] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._seed = int(np.random.SeedSequence().entropy)

    # -- public ---------------------------------------------------------------------------

    def parents_of(self, trial_number: int, study: Study | None = None) -> list[int] | None:
        """Both parents' trial numbers of a child (None: a generation-0 random sample or a trial
        this sampler did not propose); with ``study``, read from :data:`PARENTS_KEY`."""
        if study is not None:
            t = next((x for x in study.get_trials(deepcopy=False) if x.number == trial_number),
                     None)
            if t is not None and PARENTS_KEY in t.system_attrs:
                return t.system_attrs[PARENTS_KEY]
        return self._parents.get(trial_number)

    def parent_of(self, trial_number: int, study: Study | None = None) -> int | None:
        """The first parent's trial number (the search's ``parent`` column), else None."""
        both = self.parents_of(trial_number, study)
        return None if not both else both[0]

    # -- Optuna sampler interface ---------------------------------------------------------

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every parameter is answered by the trial's plan, as the trial asks it

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        super().before_trial(study, trial)
        self._plan_for(study, trial)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._plan_for(study, trial).answer(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        super().after_trial(study, trial, state, values)
        with self._lock:
            self._plans.pop((study.study_name, trial.number), None)

    # -- internals ------------------------------------------------------------------------

    def _plan_for(self, study: Study, trial: FrozenTrial) -> _CrossPlan:
        key = (study.study_name, trial.number)
        with self._lock:
            plan = self._plans.get(key)
        if plan is not None:
            return plan
        rng = np.random.default_rng([self._seed, trial.number])
        generation = self.get_trial_generation(study, trial)
        population = self.get_parent_population(study, generation)
        if self.accept is None:
            plan = self._propose(study, population, rng)
        else:
            for _ in range(self.max_tries):
                plan = self._propose(study, population, rng)
                if self.accept(Candidate(study, trial, plan)):
                    break
        with self._lock:
            self._plans[key] = plan
            self._parents[trial.number] = plan.parent_numbers
        if trial.state == TrialState.RUNNING:
            set_trial_system_attr(study, trial, PARENTS_KEY, plan.parent_numbers)
        return plan

    def _tournament(self, study: Study, population: list[FrozenTrial],
                    rng: np.random.Generator, exclude: FrozenTrial | None = None) -> FrozenTrial:
        pool = [t for t in population if t is not exclude] or population
        if len(pool) == 1:
            return pool[0]
        i, j = rng.choice(len(pool), size=2, replace=False)
        a, b = pool[int(i)], pool[int(j)]
        if dominates(a.values, b.values, study.directions):
            return a
        if dominates(b.values, a.values, study.directions):
            return b
        return a if rng.random() < 0.5 else b

    def _propose(self, study: Study, population: list[FrozenTrial],
                 rng: np.random.Generator) -> _CrossPlan:
        if not population:
            return _CrossPlan(None, rng, self._swap_prob, self._mut_prob)
        first = self._tournament(study, population, rng)
        second = (self._tournament(study, population, rng, exclude=first)
                  if rng.random() < self._cx_prob else first)
        return _CrossPlan((first, second), rng, self._swap_prob, self._mut_prob)
