"""A search as two library calls: :func:`prepare_search` checks everything,
:meth:`PreparedSearch.run` runs it. ``igcv-search`` is parse -> these calls -> print, so a search
started from Python gets exactly the command's guarantees::

    from igcv_nas.search.session import prepare_search

    with prepare_search({"space": "igcv3", "macs": 300_000_000, "trials": 20},
                        run_dir="runs/igcv3-300M") as prepared:
        outcome = prepared.run()
    print(outcome.best["number"], outcome.best["val_acc"])

:func:`prepare_search` applies every rule in the command's order and starts nothing: the resume
rules (lock, the run directory checked whole, which settings may change, the recorded space),
resources against this machine, an ``address`` that answers, the target against the space, the proxy
budget, the budgets against the space (:func:`igcv_nas.search.settings.check_budgets`), a given
latency LUT against its device, and the data set loaded with the test split held out. A refusal is
an :class:`igcv_nas.errors.IGCVError` (one line; ``SearchError``, ``RunError``, ``SpaceError``,
``DataError`` ...) raised before Ray starts, with no run directory created or changed.
:meth:`PreparedSearch.run` then starts (or joins) Ray, fills in the defaults that depend on the
cluster (one GPU per trial where there are GPUs, the device's proxy budget), creates the run
directory (or updates the resumed one), builds a missing LUT and runs
:func:`igcv_nas.search.engine.run_search`. The run lock is held as a context manager
(:meth:`igcv_nas.search.runstore.RunDir.locked`): every exit, an exception or Ctrl-C included,
releases it; leaving the ``with`` block releases a lock that a resume took in :func:`prepare_search`
when :meth:`~PreparedSearch.run` never ran.
"""
from __future__ import annotations

import logging
import os
import platform
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import __version__
from ..arch.cost import human
from ..errors import IGCVError
from .runstore import RunDir, RunError
from .engine import Outcome, Summary, engine_record
from .settings import (RESUME_MUTABLE, SearchError, Settings, check_budgets, check_latency_budget,
                       check_target)

log = logging.getLogger("igcv_nas.search.session")

DEFAULT_SPACE = "igcv3"  # contains IGCV3-D
# what ``proxy_budget`` may override in the device's default proxy budget
PROXY_BUDGET_KEYS = ("epochs", "steps", "batch_size", "lr", "train_fraction", "val_size")
# the settings a caller gives (Settings' fields; the proxy budget goes through proxy_budget)
CLUSTER_LOST_EXIT = 4  # the process's exit status when the Ray head was lost mid-search
SETTING_KEYS = tuple(f.name for f in fields(Settings) if f.name != "budget")
ADDRESS_TIMEOUT_S = 5.0  # an address that does not answer within this is refused
VAL_SIZE = 5000  # validation images split off the training set (class-stratified)
PHASES = ("prepared", "connecting", "starting", "searching", "done")

__all__ = ["ADDRESS_TIMEOUT_S", "DEFAULT_SPACE", "PROXY_BUDGET_KEYS", "PreparedSearch",
           "budget_label", "check_local_resources", "check_reachable", "prepare_search",
           "search", "startup_lines"]


# ---------------------------------------------------------------------------------------------
# preparing

def prepare_search(settings: Mapping[str, Any] | None = None, *,
                   resume: str | os.PathLike | None = None,
                   run_dir: str | os.PathLike | None = None, force: bool = False,
                   proxy_budget: Mapping[str, Any] | None = None,
                   command: Sequence[str] | None = None,
                   log: Callable[[str], None] | None = None) -> PreparedSearch:
    """Check a search completely and return it prepared (nothing started, nothing created).

    ``settings``: the :class:`igcv_nas.search.settings.Settings` fields given (``macs``, ``params``,
    ``latency_ms``, ``space``, ``target``, ``trials``, ``sampler``, ``seed``, ...); a field not
    given takes its default (for a new search) or the recorded value (on a resume). ``resume``: a
    run directory to continue (its lock is taken here, so a live search on it is refused at once);
    only :data:`igcv_nas.search.settings.RESUME_MUTABLE` may differ from the recorded settings
    unless ``force``. ``run_dir``: where a new search is recorded (default
    ``runs/<time>-<space>-<budget>``; an existing non-empty directory is refused). ``proxy_budget``:
    overrides of the device's proxy budget (:data:`PROXY_BUDGET_KEYS`). ``command``: recorded in
    ``run.json`` (default ``sys.argv``). ``log``: where progress messages go (using or building a
    latency LUT; default: this module's logger).

    Raises an :class:`igcv_nas.errors.IGCVError` for anything the search cannot use, in the
    order ``igcv-search`` checks it, before Ray starts and with nothing written."""
    say = log or _log
    given = _given(settings)
    if "address" not in given and os.environ.get("RAY_ADDRESS"):
        # inside `ray job submit`, or a shell pointed at a cluster: join it (Ray's convention)
        given["address"] = os.environ["RAY_ADDRESS"]
    over = _overrides(proxy_budget)
    stack = ExitStack()
    try:
        run: RunDir | None = None
        if resume is not None:
            if run_dir is not None:
                raise SearchError("give either --resume RUN_DIR or --run-dir, not both")
            run = RunDir.open(resume)
            stack.enter_context(run.locked())  # before anything else: a live search is refused
            run.check_resumable()
            s = resume_settings(run, given, force)
        else:
            if given.get("storage") and "scheduler" not in given:
                given["scheduler"] = "asha"  # the ladder is one driver's: not for a shared study
            s = Settings.from_dict({"space": DEFAULT_SPACE, **given})
        if s.storage:
            from .studystore import check_url
            check_url(s.storage)
        check_local_resources(s)  # every setting is checked before Ray starts
        if s.address:
            check_reachable(s.address)
        space = load_space_for(run, given, force)
        check_target(space, s.target)
        if run is None:
            apply_proxy_budget(s, over)  # bad overrides fail here, before any work
            if run_dir is not None:
                RunDir.check_new(run_dir)
        elif over:
            new = apply_proxy_budget(s, over)
            if new != s.budget and not force:
                raise RunError(f"--resume {run.path}: the proxy budget differs from the run's; "
                               f"pass --force to change it")
            s = replace(s, budget=new)
        s = check_budgets(s, space)
        lut = lut_path = None
        if s.latency_ms is not None and s.lut:  # a given LUT is checked up front
            lut, lut_path = latency_lut(s, space, None, say)
            check_latency_budget(s, space, lut)
        from ..evaluate.data import load_splits, resolve_data_dir
        splits = load_splits(s.dataset, resolve_data_dir(s.data_dir), val_size=VAL_SIZE, seed=0,
                             download_ok=True)
        n_test = len(splits.test)
        # the test split never reaches a trial: the search sees an empty one
        search_splits = replace(splits, test=splits.test.subset(splits.test.y[:0].astype(int)))
        return PreparedSearch(s, space, search_splits, n_test, run, run_dir, given, over, lut,
                              lut_path, list(sys.argv if command is None else command), say,
                              stack)
    except BaseException:
        stack.close()  # a refused resume leaves its run directory unlocked
        raise


def search(settings: Mapping[str, Any] | None = None, *,
           on_change: Callable[[Summary], None] | None = None, **kw: Any) -> Outcome:
    """:func:`prepare_search` (same keywords) and :meth:`PreparedSearch.run` in one call.

    Args:
        settings: the :class:`igcv_nas.search.settings.Settings` fields given
            (:func:`prepare_search`).
        on_change: called with the search's :class:`~igcv_nas.search.engine.Summary` as it
            progresses.
        **kw: the other keywords of :func:`prepare_search` (``resume``, ``run_dir``,
            ``force``, ``proxy_budget``, ``command``, ``log``).

    Returns:
        The :class:`~igcv_nas.search.engine.Outcome` (summary, trial rows, best, Pareto front,
        ``interrupted``).

    Raises:
        SearchError: an unknown setting or proxy-budget key, a setting the search cannot use
            (a budget below every network of the space, a target the space cannot serve),
            local resources or a Ray address that cannot serve it, Ray that cannot be started
            or reached, a trial that fits no node of the cluster.
        RunError: a resume that cannot continue (not a run directory, changed settings, space
            or budget without ``force``, damaged files); ``RunLocked`` when a live search holds
            it; a run directory that cannot be created.
        SpaceError: a space that cannot be read.
        DataError: the data set cannot be found, downloaded or read.
        KeyboardInterrupt: Ctrl-C, or SIGTERM, during the search (the run is marked
            interrupted)."""
    with prepare_search(settings, **kw) as prepared:
        return prepared.run(on_change)


def _log(message: str) -> None:
    log.info(message)


def _given(settings: Mapping[str, Any] | None) -> dict:
    given = dict(settings or {})
    for k in given:
        if k not in SETTING_KEYS:
            hint = " (give the proxy budget as proxy_budget=...)" if k == "budget" else ""
            raise SearchError(f"unknown setting {k!r}{hint}; accepted: {', '.join(SETTING_KEYS)}")
    given = {k: v for k, v in given.items() if v is not None}
    for k in ("data_dir", "lut"):  # recorded in run.json: not relative to where it was run
        if isinstance(given.get(k), (str, os.PathLike)):
            given[k] = os.path.abspath(given[k])
    return given


def _overrides(proxy_budget: Mapping[str, Any] | None) -> dict:
    over = {k: v for k, v in dict(proxy_budget or {}).items() if v is not None}
    for k in over:
        if k not in PROXY_BUDGET_KEYS:
            raise SearchError(f"unknown proxy budget key {k!r}; accepted: "
                              f"{', '.join(PROXY_BUDGET_KEYS)}")
    return over


def apply_proxy_budget(settings: Settings, over: Mapping[str, Any]) -> dict | None:
    """``settings.budget`` with the overrides ``over`` applied to the search's proxy budget
    (as a dict; the recorded budget when there are none). SearchError for a bad value."""
    if not over:
        return settings.budget
    b = settings.proxy_budget()
    train_over = {k: v for k, v in over.items() if k != "val_size"}
    if "val_size" in over:
        v = over["val_size"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= VAL_SIZE:
            raise SearchError(f"--val-size {v!r}; accepted: an integer from 1 to {VAL_SIZE:,} "
                              f"(the validation split held out of the training set)")
    try:
        train = replace(b.train, **train_over)
        b = replace(b, train=train, **({"val_size": over["val_size"]}
                                       if "val_size" in over else {}))
    except IGCVError as e:
        raise SearchError(f"proxy budget: {e}") from None
    return b.to_dict()


def resume_settings(run: RunDir, given: Mapping[str, Any], force: bool) -> Settings:
    """The settings of a resume: the recorded ones with ``given`` on top; RunError when a setting
    outside :data:`igcv_nas.search.settings.RESUME_MUTABLE` changes (unless ``force``) or the
    recorded settings cannot be read."""
    stored = run.meta.get("settings")
    if not isinstance(stored, dict):
        raise RunError(f"{run.path}/run.json has no search settings; it is not a search run")
    changed = [k for k, v in given.items()
               if k not in RESUME_MUTABLE and k != "space" and stored.get(k) != v]
    if changed and not force:
        k = changed[0]
        raise RunError(f"--resume {run.path}: {k} was {stored.get(k)!r}, now {given[k]!r}; "
                       f"only {', '.join(RESUME_MUTABLE)} may change (or pass --force)")
    try:
        return Settings.from_dict({**stored, **given, "space": stored["space"]})
    except (TypeError, KeyError) as e:
        raise RunError(f"{run.path}/run.json: the recorded settings cannot be read ({e})") from None


def load_space_for(run: RunDir | None, given: Mapping[str, Any], force: bool):
    """The space searched: the given (or default) one for a new search; on a resume the run's
    copy, or a given different one only with ``force`` (RunError otherwise)."""
    from ..arch.space import load_space
    if run is None:
        return load_space(given.get("space", DEFAULT_SPACE))
    space = load_space(run.space_file)
    if "space" in given:
        other = load_space(given["space"])
        if other.sha256 != space.sha256:
            if not force:
                raise RunError(f"--space {given['space']!r} differs from the space of "
                               f"{run.path} (sha256 {space.sha256[:12]} vs {other.sha256[:12]}); "
                               f"pass --force to continue with the new one")
            return other
    return space


def latency_lut(settings: Settings, space, run_path: Path | None,
                say: Callable[[str], None] = _log):
    """The LUT used to predict latency (loaded, or built and calibrated on space samples) and
    its file; ``(None, None)`` without a latency budget. SearchError for a LUT of another
    device or one that cannot be measured here."""
    if settings.latency_ms is None:
        return None, None
    from ..evaluate.latency import LatencyError
    try:
        return _latency_lut(settings, space, run_path, say)
    except LatencyError as e:
        raise SearchError(str(e)) from None


def _latency_lut(settings: Settings, space, run_path: Path | None, say: Callable[[str], None]):
    import optuna

    from ..evaluate.latency import LUT, build_lut, resolve_device
    from .settings import at_target
    path = (Path(settings.lut) if settings.lut
            else None if run_path is None else run_path / "latency_lut.json")
    if path is not None and path.is_file():
        lut = LUT.load(path)
        if lut.device != str(resolve_device(settings.latency_device)):
            raise SearchError(f"--lut {path} was measured on {lut.device}, not on "
                              f"--device {settings.latency_device}; give a LUT of that device "
                              f"or a new file name to build one")
        say(f"using latency LUT {path} ({len(lut)} entries, {lut.device})")
        return lut, path
    where = "for the new run directory" if path is None else f"at {path}"
    say(f"building a latency LUT on {settings.latency_device} {where} "
        f"(12 sampled networks, calibrated on 8) ...")
    sampler = optuna.samplers.RandomSampler(seed=settings.seed)
    study = optuna.create_study(sampler=sampler)
    specs = [at_target(space.sample(study.ask()), settings.target) for _ in range(12)]
    t0 = time.perf_counter()
    lut = build_lut(specs, settings.latency_device, threads=1, calibrate=8,
                    progress=lambda i, n: say(f"latency LUT: measured {i}/{n} networks "
                                              f"({time.perf_counter() - t0:.0f} s)"))
    return lut, path


def check_reachable(address: str) -> None:
    """Refuse an address whose host:port does not accept a connection within
    :data:`ADDRESS_TIMEOUT_S` (ray.init would otherwise wait a long time)."""
    import socket
    host, _, port = address.rpartition(":")
    if address in ("auto", "local"):
        return
    if not host or not port.isdigit():
        raise SearchError(f"--address {address!r}; accepted: HOST:PORT of a Ray head "
                          f"(ray start --head --port 6379), auto or local")
    try:
        socket.create_connection((host.removeprefix("ray://"), int(port)),
                                 timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        raise SearchError(f"--address {address}: no Ray head answers there within "
                          f"{ADDRESS_TIMEOUT_S:g} s ({e.strerror or e})") from None


def check_local_resources(settings: Settings) -> None:
    """Without an address the search starts its own Ray instance on this machine: a trial's
    CPUs and GPUs must exist here (checked before Ray starts)."""
    if settings.address:
        return
    cpus = os.cpu_count() or 1
    if settings.cpus_per_trial > cpus:
        raise SearchError(f"--cpus-per-trial {settings.cpus_per_trial:g}; this machine has "
                          f"{cpus} CPUs")
    if settings.gpus_per_trial > 0:
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if settings.gpus_per_trial > n:
            raise SearchError(f"--gpus-per-trial {settings.gpus_per_trial:g}; this machine has "
                              f"{n} CUDA GPUs (use --address for a cluster with GPUs)")


# ---------------------------------------------------------------------------------------------
# running

class PreparedSearch:
    """A search that passed every check of :func:`prepare_search`; :meth:`run` runs it (once).

    ``settings`` (final once :meth:`run` has connected to Ray), ``space``, ``splits`` (train and
    validation; the test split is empty: it never reaches a trial), ``test_held_out`` (its
    size, recorded in ``run.json``), ``run_dir`` (the :class:`igcv_nas.search.runstore.RunDir`: the
    resumed one, or the new one once :meth:`run` created it), ``resuming``, ``phase`` (one of
    :data:`PHASES`: where :meth:`run` is, or where it stopped) and ``terminated`` (a SIGTERM
    stopped it). A context manager: leaving the block releases any run lock still held.

    Made by :func:`prepare_search` only (its constructor arguments are its checked state).

    Attributes:
        settings: the search's :class:`~igcv_nas.search.settings.Settings`.
        space: the search space (:class:`igcv_nas.arch.space.SearchSpace`).
        splits: train and validation (the test split is empty).
        test_held_out: the size of the held-out test split.
        run_dir: the :class:`~igcv_nas.search.runstore.RunDir`; None for a new search until
            :meth:`run` created it.
        resuming: whether it continues a run directory.
        lut: the latency LUT (None until one is given, loaded or built).
        lut_path: where the LUT is saved (None until known).
        phase: one of :data:`PHASES`.
        terminated: whether a SIGTERM stopped it.
    """

    def __init__(self, settings: Settings, space, splits, test_held_out: int,
                 run: RunDir | None, new_run_dir, given: dict, over: dict, lut, lut_path,
                 command: list[str], say: Callable[[str], None], stack: ExitStack):
        self.settings, self.space, self.splits = settings, space, splits
        self.test_held_out = test_held_out
        self.run_dir, self.resuming = run, run is not None
        self.lut, self.lut_path = lut, lut_path
        self.phase = "prepared"
        self.terminated = False
        self._on_lost: Callable[[str], None] | None = None
        self._new_run_dir, self._given, self._over = new_run_dir, given, over
        self._command, self._say, self._stack = command, say, stack
        self._closed = False

    def __enter__(self) -> PreparedSearch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the run lock if this object still holds it (idempotent)."""
        self._closed = True
        self._stack.close()

    def describe(self) -> list[str]:
        """What the search will actually do, in words (:func:`startup_lines`)."""
        return startup_lines(self.settings, self.space, self.splits)

    def run(self, on_change: Callable[[Summary], None] | None = None,
            on_start: Callable[[PreparedSearch], None] | None = None, *, quiet: bool = True,
            handle_sigterm: bool = True,
            on_lost: Callable[[str], None] | None = None) -> Outcome:
        """Run the search: start (or join) Ray, apply the defaults the cluster decides, create
        or update the run directory under its lock, build a missing latency LUT, call
        ``on_start(self)`` (the run directory exists then), and run
        :func:`igcv_nas.search.engine.run_search` with ``on_change`` for progress. The lock is
        released on every exit. Ctrl-C (and SIGTERM with ``handle_sigterm``, in the main
        thread) during the search marks the run ``interrupted`` and raises KeyboardInterrupt,
        or returns an :class:`~igcv_nas.search.engine.Outcome` with ``interrupted`` when Ray Tune
        stopped it; ``phase`` says where it happened.

        Args:
            on_change: called with the :class:`~igcv_nas.search.engine.Summary` as the search
                progresses.
            on_start: called with this object once the run directory exists.
            quiet: keep Ray's and Ray Tune's own output quiet.
            handle_sigterm: handle SIGTERM like Ctrl-C (in the main thread only).
            on_lost: told in one line when the Ray head stops answering (default stderr); the
                process then ends with :data:`CLUSTER_LOST_EXIT`.

        Returns:
            The :class:`~igcv_nas.search.engine.Outcome` of
            :func:`~igcv_nas.search.engine.run_search`.

        Raises:
            SearchError: it has already run or was closed; Ray cannot be started or reached; a
                trial fits no node or ``storage_path`` is not seen by every node; a latency LUT
                that cannot be used or a latency budget no network meets.
            RunError: the run directory cannot be created or updated.
            KeyboardInterrupt: Ctrl-C or SIGTERM outside Ray Tune's loop."""
        if self._closed or self.phase != "prepared":
            raise SearchError("this prepared search has already run or was closed; prepare it "
                              "again (a resume continues it)")
        previous = None
        try:
            self.phase = "connecting"
            ours = handle_sigterm and threading.current_thread() is threading.main_thread()
            if ours:  # a SIGTERM while Ray starts is a clean stop too
                previous = signal.signal(signal.SIGTERM, self._terminate)
            cluster = self._connect(quiet)
            if ours:
                signal.signal(signal.SIGTERM, self._terminate)  # after ray.init's own
            self.phase = "starting"
            if cluster.dashboard_url:
                self._say(f"Ray dashboard: {cluster.dashboard_url}")
            self._defaults(cluster)
            self._check_cluster(cluster)
            if self.settings.storage:  # another driver's study must be this search's
                from .studystore import check_shared_study
                check_shared_study(self.settings, self.space.sha256, self.settings.study_name)
            if self.lut is None and self.run_dir is None:
                # a new run measures its LUT before its directory exists, so that a latency
                # budget below every network is refused with nothing created
                self.lut, _ = latency_lut(self.settings, self.space, None, self._say)
                check_latency_budget(self.settings, self.space, self.lut)
            run = self._open_run()
            if self.lut is None:
                self.lut, self.lut_path = latency_lut(self.settings, self.space, run.path,
                                                      self._say)
                check_latency_budget(self.settings, self.space, self.lut)
            elif self.lut_path is None:
                self.lut_path = run.path / "latency_lut.json"
            storage, checkpoints = self._tune_storage(run, cluster)
            if on_start is not None:
                on_start(self)
            self.phase = "searching"
            self._on_lost = on_lost
            out = self._search(run, on_change, quiet, storage, checkpoints)
            self.phase = "done"
            return out
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.close()

    def _connect(self, quiet: bool):
        from .raytune import connect
        try:
            from .raytune import storage_env
            return connect(self.settings.address, quiet=quiet,
                           env_vars=storage_env(self.settings.storage_path))
        except SystemExit as e:  # ray.init's own SIGTERM handler exits with the signal number
            if e.code == signal.SIGTERM:
                self.terminated = True
                raise KeyboardInterrupt from None
            raise
        except Exception as e:  # noqa: BLE001 - any connection failure is the caller's address
            where = f" at {self.settings.address}" if self.settings.address else ""
            raise SearchError(f"cannot start or reach Ray{where}: {e}") from None

    def _check_cluster(self, cluster) -> None:
        """Before anything is created: a trial must fit one node of the cluster (per-node CPUs
        and GPUs; the driver's own CUDA does not matter), and a given ``storage_path`` must be
        visible from every node."""
        from .raytune import check_fit, nodes_without
        s = self.settings
        check_fit(cluster, s.cpus_per_trial, s.gpus_per_trial)
        if s.storage_path:
            blind = nodes_without(s.storage_path, cluster)
            if blind:
                which = "; ".join(f"{n['id'][:8]} {n['host']}" for n in blind)
                raise SearchError(
                    f"--storage-path {s.storage_path}: {len(blind)} of {len(cluster.nodes)} Ray "
                    f"nodes cannot see it ({which}); give a folder every node mounts (NFS) or a "
                    f"URI such as s3://bucket/path")

    def _tune_storage(self, run: RunDir, cluster) -> tuple[str, bool]:
        """Ray Tune's storage and whether trials checkpoint into it. The default (under the run
        directory) serves a cluster only where every node sees the driver's disk; otherwise
        trials run without checkpoints (a trial whose worker dies trains again from the start)
        and the search says so."""
        from .raytune import nodes_without
        s = self.settings
        if s.storage_path:
            return s.storage_path, True
        storage = str(run.ray_dir())
        if not s.address:
            return storage, True
        blind = nodes_without(storage, cluster)
        if not blind:
            return storage, True
        self._say(f"trial checkpoints off: {len(blind)} of {len(cluster.nodes)} Ray nodes cannot "
                  f"see the run directory's Tune storage {storage}; a trial whose worker dies is "
                  f"trained again from the start (give --storage-path on a shared folder or "
                  f"s3://... to keep checkpoints)")
        return storage, False

    def _terminate(self, signum, frame) -> None:
        """SIGTERM is handled like Ctrl-C: trainings stop, the run is marked interrupted. While
        Ray Tune runs, its own SIGINT handler stops the experiment at a safe point; raising
        KeyboardInterrupt here instead could land inside the study journal's file lock and
        leave it half released (seen in CI: the lock's ``.rename`` file missing)."""
        self.terminated = True
        handler = signal.getsignal(signal.SIGINT)
        if self.phase == "searching" and callable(handler) and \
                handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt

    def _defaults(self, cluster) -> None:
        """One GPU per trial where the cluster has GPUs (with each GPU node's CPUs shared among
        its GPUs: the smallest share over the GPU nodes, so that every GPU can hold a trial),
        and the device's proxy budget with the overrides: for a new search, once GPUs are
        known."""
        s, given = self.settings, self._given
        if self.resuming:
            return
        if "gpus_per_trial" not in given and cluster.resources.get("GPU", 0) > 0:
            s = replace(s, gpus_per_trial=1.0)
        if "cpus_per_trial" not in given and s.gpus_per_trial > 0:
            shares = [n["CPU"] // (n["GPU"] // s.gpus_per_trial) for n in cluster.nodes
                      if n["GPU"] >= s.gpus_per_trial]
            s = replace(s, cpus_per_trial=max(1.0, min(shares, default=1.0)))
        s = replace(s, budget=None)
        self.settings = replace(s, budget=apply_proxy_budget(s, self._over)
                                or s.proxy_budget().to_dict())

    def _open_run(self) -> RunDir:
        """The new run directory (created whole, then locked) or the resumed one updated."""
        s, space, splits = self.settings, self.space, self.splits
        try:
            if self.run_dir is None:
                name = self._new_run_dir or os.path.join(
                    "runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{space.name}-{budget_label(s)}")
                meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": self._command,
                        "settings": s.to_dict(),
                        "space": {"name": space.name, "source": space.source,
                                  "sha256": space.sha256},
                        "seed": s.seed, "versions": versions(), "status": "created",
                        "data": {"dataset": s.dataset, "train": len(splits.train),
                                 "val": len(splits.val), "test_held_out": self.test_held_out,
                                 "classes": splits.num_classes}, "attempts": [], "elapsed_s": 0.0}
                run = RunDir.create(name, meta, space.raw)
                self._stack.enter_context(run.locked())
                self.run_dir = run
            else:
                from ..fileio import write_bytes
                self.run_dir.update_meta(settings=s.to_dict())
                if "space" in self._given:
                    write_bytes(self.run_dir.space_file, space.raw)
        except OSError as e:
            raise RunError(str(e)) from None
        return self.run_dir

    def _cluster_lost(self, run: RunDir, gcs: str) -> None:
        """The Ray head stopped answering during the search: ``run.json`` says interrupted, one
        line says what happened and how to continue (``on_lost``, default stderr), and the
        process ends with :data:`CLUSTER_LOST_EXIT` -- Ray would end it 60 s later from C++
        anyway, with nothing recorded. The study and the trials are as after a kill: a resume
        continues every trial that was running (from its checkpoint where there is one)."""
        try:
            run.update_meta(status="interrupted")
        except Exception as e:  # noqa: BLE001 - the line below must still be said
            log.warning("could not mark %s interrupted: %s", run.path, e)
        addr = self.settings.address
        where = f" at {addr}" if addr else ""
        again = f"igcv-search --resume {run.path}" + (f" --address {addr}" if addr else "")
        msg = (f"lost the Ray cluster{where}: its head (GCS {gcs}) stopped answering; "
               f"{run.path / 'run.json'} says interrupted; when the cluster is back, continue "
               f"with: {again}")
        (self._on_lost or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)
        sys.stdout.flush()
        os._exit(CLUSTER_LOST_EXIT)

    def _search(self, run: RunDir, on_change, quiet: bool, storage: str,
                checkpoints: bool) -> Outcome:
        from .engine import run_search
        try:
            return run_search(run, self.settings, self.space, self.splits, on_change, self.lut,
                              quiet=quiet, storage=storage, checkpoints=checkpoints,
                              on_lost=lambda gcs: self._cluster_lost(run, gcs))
        except KeyboardInterrupt:  # outside Ray's loop (start-up, writing results)
            run.update_meta(status="interrupted")
            raise
        finally:
            if self.lut is not None and self.lut_path is not None:
                self.lut.save(self.lut_path)


# ---------------------------------------------------------------------------------------------
# words

def budget_label(settings: Settings) -> str:
    """The budgets in a few characters (``300M-p3.5M-lat15ms``; run directory names)."""
    parts = []
    for key, pre in (("macs", ""), ("params", "p"), ("latency_ms", "lat")):
        v = getattr(settings, key)
        if v is not None:
            parts.append(f"{pre}{v:g}ms" if key == "latency_ms" else
                         pre + human(v).replace(".00", ""))
    return "-".join(parts) or "nobudget"


def versions() -> dict:
    import optuna
    import ray
    import torch
    return {"igcv_nas": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "ray": ray.__version__, "python": platform.python_version()}


def startup_lines(settings: Settings, space, splits) -> list[str]:
    """What the search will actually do, in words (proxy images, epochs, ladder, ASHA)."""
    from ..evaluate.train import plan
    b = settings.proxy_budget(space.name)
    _, steps, epochs = plan(len(splits.train), b.train)
    e = engine_record(settings, b, len(splits.train), epochs, steps)
    band = f", MACs band floor {human(e['flops_min'])}" if e["flops_min"] else ""
    out = [f"space {space.name} ({space.sha256[:12]}), budgets at target {settings.target}: "
           f"{budget_label(settings)}{band}; sampler {settings.sampler}"]
    if settings.proxy == "zero-cost":
        out.append(f"proxy: zero-cost score {settings.score} of the untrained {settings.dataset} "
                   f"variant on one batch of {b.zc_batch} training images; nothing is trained")
    else:
        out.append(f"proxy: trains the {settings.dataset} variant (32x32: stem stride 1, stage 2 "
                   f"not downsampling, {splits.num_classes} classes) on {e['proxy_images']:,} of "
                   f"{len(splits.train):,} training images, {epochs} epoch(s), {steps} steps of "
                   f"batch {b.train.batch_size}, no dropout; scored once by {settings.score} on "
                   f"{min(e['val_images'], len(splits.val)):,} held-out validation images; seeds "
                   f"init {b.train.seed}, data {b.train.data_seed} for every candidate; the test "
                   f"split is not used")
        if e["ladder"]:
            r1, r2 = e["ladder"]
            out.append(f"ladder: the best {r1['keep']} trained again on {r1['factor']}x the "
                       f"images, the best {r2['keep']} of those re-trained with "
                       f"{len(r2['seeds'])} fresh seeds each; the reported best is the confirmed "
                       f"one (about {e['ladder_cost_units']:g} first-rung trainings in all)")
        out.append("early stopping: ASHA on (reduction factor 3, grace period past the warm-up)"
                   if e["asha"] else "early stopping: none (ASHA off)")
        if settings.proxy == "both":
            out.append(f"zero-cost beside training: {', '.join(b.zero_cost)}" if b.mode == "both"
                       else f"zero-cost beside training: none (no zero-cost proxy ranked "
                            f"positively in the fidelity benchmark for space {space.name}; "
                            f"README 'Fidelity')")
    return out
