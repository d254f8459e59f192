"""ConditionalNSGAII: children inherit conditional parameters from their parents."""
from __future__ import annotations

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from igcv_nas.errors import InputError
from igcv_nas.search.nsga import PARENTS_KEY, ConditionalNSGAII, dominates

optuna.logging.set_verbosity(optuna.logging.WARNING)


def conditional(trial) -> float:
    """A define-by-run space like a block's: the keys asked depend on the kind."""
    kind = trial.suggest_categorical("kind", ["a", "b", "c"])
    x = trial.suggest_categorical(f"x_{kind}", list(range(12)))
    depth = trial.suggest_categorical("depth", [1, 2, 3])
    extra = sum(trial.suggest_categorical(f"w{i}_{kind}", [0, 1, 2, 3]) for i in range(depth))
    return {"a": 0.0, "b": 1.0, "c": 2.0}[kind] + x / 12 + extra / 9


def run(sampler, n: int, study=None, objective=conditional):
    study = study or optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


def test_dominates_exact_cases():
    mx, mn = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    assert dominates([2.0], [1.0], [mx])
    assert not dominates([1.0], [2.0], [mx])
    assert dominates([1.0], [2.0], [mn])
    assert not dominates([1.0], [1.0], [mx])  # equal: neither dominates
    assert dominates([2.0, 1.0], [2.0, 3.0], [mx, mn])
    assert not dominates([3.0, 3.0], [2.0, 1.0], [mx, mn])  # a trade-off


def test_children_inherit_every_parameter_their_parents_have_without_mutation():
    sampler = ConditionalNSGAII(population_size=6, seed=3, mutation_prob=0.0)
    study = run(sampler, 40)
    trials = {t.number: t for t in study.trials}
    children = 0
    inherited_conditional = 0
    for t in study.trials:
        parents = sampler.parents_of(t.number)
        if t.number < 6:
            assert parents is None  # generation 0: random
            continue
        assert parents is not None and len(parents) == 2
        p1, p2 = trials[parents[0]], trials[parents[1]]
        children += 1
        for name, value in t.params.items():
            have = [p.params[name] for p in (p1, p2) if name in p.params]
            if have:
                assert value in have, (t.number, name, value, have)
                if name not in ("kind", "depth"):
                    inherited_conditional += 1
    assert children == 34
    # Optuna's NSGA-II would draw all of these at random (they are outside the intersection)
    assert inherited_conditional >= children


def test_mutation_redraws_some_inherited_parameters():
    sampler = ConditionalNSGAII(population_size=6, seed=3, mutation_prob=1.0)
    study = run(sampler, 30)
    trials = {t.number: t for t in study.trials}
    differs = 0
    for t in study.trials[6:]:
        p1, p2 = (trials[n] for n in sampler.parents_of(t.number))
        differs += any(t.params[k] not in [p.params.get(k) for p in (p1, p2)]
                       for k in t.params)
    assert differs > 0


def test_same_seed_same_proposals_and_a_resumed_sampler_goes_on_identically():
    a = run(ConditionalNSGAII(population_size=5, seed=11), 24)
    b = run(ConditionalNSGAII(population_size=5, seed=11), 24)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]

    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(direction="maximize", storage=storage, study_name="s",
                                sampler=ConditionalNSGAII(population_size=5, seed=11))
    first.optimize(conditional, n_trials=13)
    again = optuna.load_study(study_name="s", storage=storage,
                              sampler=ConditionalNSGAII(population_size=5, seed=11))
    again.optimize(conditional, n_trials=11)
    assert [t.params for t in again.trials] == [t.params for t in a.trials]
    # parents survive the restart in the trials' system attributes
    fresh = ConditionalNSGAII(population_size=5, seed=11)
    t20 = again.trials[20]
    assert fresh.parents_of(20, again) == t20.system_attrs[PARENTS_KEY]
    assert fresh.parent_of(20, again) == t20.system_attrs[PARENTS_KEY][0]


def test_accept_keeps_every_trial_inside_the_rule():
    def even_x(cand) -> bool:
        kind = cand.suggest_categorical("kind", ["a", "b", "c"])
        return cand.suggest_categorical(f"x_{kind}", list(range(12))) % 2 == 0

    sampler = ConditionalNSGAII(population_size=5, seed=2, accept=even_x)
    study = run(sampler, 25)
    xs = [v for t in study.trials for k, v in t.params.items() if k.startswith("x_")]
    assert len(xs) == 25 and all(x % 2 == 0 for x in xs)


def test_failed_trials_never_enter_a_generation():
    def sometimes_fails(trial) -> float:
        v = conditional(trial)
        if trial.params["kind"] == "a":
            raise optuna.TrialPruned() if trial.number % 2 else RuntimeError("over budget")
        return v

    sampler = ConditionalNSGAII(population_size=4, seed=5)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(sometimes_fails, n_trials=30, catch=(RuntimeError,))
    parents = [n for t in study.trials for n in (sampler.parents_of(t.number) or [])]
    by_number = {t.number: t for t in study.trials}
    assert parents and all(by_number[n].state == TrialState.COMPLETE for n in parents)


def test_two_objectives_run_and_parents_come_from_the_front_or_near_it():
    def two(trial):
        v = conditional(trial)
        return v, float(trial.params["depth"])

    sampler = ConditionalNSGAII(population_size=6, seed=1)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(two, n_trials=30)
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 30
    assert all(sampler.parents_of(t.number) for t in study.trials[6:])


@pytest.mark.parametrize("kwargs, word", [
    ({"population_size": 1}, "population_size"),
    ({"crossover_prob": 1.5}, "crossover_prob"),
    ({"swapping_prob": -0.1}, "swapping_prob"),
    ({"mutation_prob": 2.0}, "mutation_prob"),
    ({"max_tries": 0}, "max_tries"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_are_input_errors(kwargs, word):
    with pytest.raises(InputError, match=word):
        ConditionalNSGAII(**kwargs)
