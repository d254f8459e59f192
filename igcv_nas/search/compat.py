"""Every use of a private Optuna or Ray API, in one place (Ray is otherwise used through its
public ``Searcher``/``Tuner`` API only; the one private Ray call, :func:`reload_ray_config`,
imports Ray when called).

Tested against the versions bounded in ``pyproject.toml``; when Optuna changes one of these,
this is the only file to mend.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import optuna
from optuna.storages import JournalStorage


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


class BatchedJournalStorage(JournalStorage):
    """Optuna's journal storage whose appends can be held and written as one record batch
    (:func:`batched_writes`): one lock, one write and one fsync for an architecture's proposal
    (Optuna appends every suggested parameter and attribute on its own, ~1.6 ms each here:
    about 240 ms of an igcv3 proposal's 375 ms). Held records are applied to the storage's own
    replay at once, so reads see them; this is right only where this process is the journal's
    one writer, as the search driver is (it holds the run's lock). A crash while records are
    held loses them: they only describe a proposal that was not yet handed to Ray."""

    def __init__(self, backend: Any) -> None:
        self._held: list[dict] | None = None  # before Optuna's __init__, which syncs
        self._applied = 0
        super().__init__(backend)

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        if self._held is None:
            super()._write_log(op_code, extra_fields)
            return
        self._held.append({"op_code": op_code, "worker_id": self._replay_result.worker_id,
                           **extra_fields})

    def _sync_with_backend(self) -> None:
        if self._held is None:
            super()._sync_with_backend()
            return
        self._replay_result.apply_logs(self._held[self._applied:])
        self._applied = len(self._held)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._held is not None:  # nested: the outer hold writes
            yield
            return
        self._held, self._applied = [], 0
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self._backend.append_logs(held)


def batched_writes(study: optuna.Study) -> contextlib.AbstractContextManager:
    """Hold the journal appends of ``study``'s storage until the block ends (a no-op for other
    storages)."""
    storage = study._storage
    if isinstance(storage, BatchedJournalStorage):
        return storage.hold()
    return contextlib.nullcontext()
