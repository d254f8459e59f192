"""Every use of a private Optuna or Ray API, in one place (Ray is otherwise used through its
public ``Searcher``/``Tuner`` API only; the one private Ray call, :func:`reload_ray_config`,
imports Ray when called).

Tested against the versions bounded in ``pyproject.toml``; when Optuna changes one of these,
this is the only file to mend.
"""
from __future__ import annotations

from typing import Any

import optuna


def trial_by_number(study: optuna.Study, number: int) -> optuna.Trial:
    """A live :class:`optuna.Trial` handle for the RUNNING trial ``number`` of ``study`` (Optuna
    hands one out only from ``ask``; a resumed driver needs one for trials asked before it)."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)



def set_trial_system_attr(study: optuna.Study, trial: optuna.trial.FrozenTrial, key: str,
                          value: Any) -> None:
    """Write a system attribute on a RUNNING trial from inside a sampler (samplers receive a
    :class:`~optuna.trial.FrozenTrial`, which has no public setter; Optuna's own NSGA-II sampler
    records its generation the same way)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def reload_ray_config() -> None:
    """Make this process's Ray re-read its configuration from the environment (Ray caches it at
    import; ``ray start`` calls the same after turning on ``RAY_AUTH_MODE=token``). Without it a
    variable set after ``import ray`` is not seen by ``ray.init``. A Ray without this hook reads
    the environment at ``ray.init``: nothing to do."""
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]
        Config.initialize("")
    except (ImportError, AttributeError):
        pass
