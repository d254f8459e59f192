"""The Ray Tune side of the search: a thin adapter over :class:`igcv_nas.search.engine.Engine`.

Ray is used through its public API only: a :class:`ray.tune.search.Searcher` that asks the
engine what to start and hands it every result, the trainable that runs one proxy evaluation
in a Ray worker (it knows nothing of Optuna), ASHA where the settings ask for it, and a
callback for the progress display and the time budget.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from .engine import FINISHED, Engine
from .settings import ASHA_REDUCTION, SearchError


@dataclass
class Cluster:
    """What the driver knows of the Ray cluster it runs on: the total resources, each alive
    node's (``{"id", "host", "CPU", "GPU"}``), the address joined (None: a local instance) and
    the dashboard's URL (None when there is none)."""
    resources: dict
    nodes: list[dict]
    address: str | None = None
    dashboard_url: str | None = None

    def slots(self, cpus: float, gpus: float) -> list[int]:
        """How many trials of ``cpus`` CPUs and ``gpus`` GPUs each node holds at once (a trial
        runs on one node: Ray never splits its resources across nodes)."""
        out = []
        for n in self.nodes:
            k = int(n["CPU"] // cpus) if cpus > 0 else 0
            if gpus > 0:
                k = min(k, int(n["GPU"] // gpus))
            out.append(k)
        return out

    def table(self) -> str:
        """The nodes' resources in one line (for refusals)."""
        return "; ".join(f"node {n['id'][:8]} ({n['host']}): {n['CPU']:g} CPU, {n['GPU']:g} GPU"
                         for n in self.nodes) or "no alive node"


# what a worker needs to reach an s3:// Tune storage the way the driver does (pyarrow reads them)
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
               "AWS_EC2_METADATA_DISABLED")


def storage_env(storage_path: str | None) -> dict[str, str]:
    """The driver's AWS_* variables that an ``s3://`` Tune storage needs on every worker (sent
    as the job's ``runtime_env``: a worker node started without them reaches the same store)."""
    if not storage_path or not storage_path.startswith("s3://"):
        return {}
    return {k: os.environ[k] for k in STORAGE_ENV if os.environ.get(k)}


def connect(address: str | None, quiet: bool = True,
            env_vars: dict[str, str] | None = None) -> Cluster:
    """Start a local Ray instance (all CPUs and GPUs of this machine) or join ``address``
    (``HOST:PORT``, ``auto`` or ``ray://...``); returns the cluster. ``env_vars`` are set in
    every worker of this job (Ray's ``runtime_env``)."""
    url = None
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        kw: dict[str, Any] = dict(include_dashboard=False,
                                  log_to_driver=not quiet, logging_level=logging.ERROR,
                                  configure_logging=True)
        if env_vars:
            kw["runtime_env"] = {"env_vars": dict(env_vars)}
        if address and address != "local":
            use_token_if_there_is_one()
        # without an address always a new local instance: ray.init() alone would join a cluster
        # that `ray start` left running on this machine (or RAY_ADDRESS names)
        ctx = ray.init(address=address or "local", **kw)
        url = getattr(ctx, "dashboard_url", None) or None
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return Cluster(ray.cluster_resources(), alive_nodes(), address, url if address else None)


def use_token_if_there_is_one() -> str | None:
    """Before joining a cluster: Ray's token authentication (on by default for clusters that
    Ray 2.5x started, whenever ``~/.ray/auth_token`` exists) lets a client in only when
    ``RAY_AUTH_MODE=token`` is set, even where the token is there; ``ray start --address``
    turns it on when it finds a token, and so does this (a cluster without authentication
    accepts a client that sends one). ``RAY_AUTH_MODE`` given by the user is left as it is.
    Returns where the token was found (None: not turned on)."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return None
    where = None
    if os.environ.get("RAY_AUTH_TOKEN"):
        where = "RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH") and os.path.isfile(os.environ[
            "RAY_AUTH_TOKEN_PATH"]):
        where = os.environ["RAY_AUTH_TOKEN_PATH"]
    elif os.path.isfile(os.path.expanduser("~/.ray/auth_token")):
        where = os.path.expanduser("~/.ray/auth_token")
    if where is not None:
        os.environ["RAY_AUTH_MODE"] = "token"
        from .compat import reload_ray_config
        reload_ray_config()
    return where


def alive_nodes() -> list[dict]:
    """Each alive node of the connected cluster: id, host (address), CPUs and GPUs."""
    return [{"id": n["NodeID"], "host": n.get("NodeManagerAddress", "?"),
             "CPU": float(n.get("Resources", {}).get("CPU", 0)),
             "GPU": float(n.get("Resources", {}).get("GPU", 0))}
            for n in ray.nodes() if n.get("Alive")]


def check_fit(cluster: Cluster, cpus: float, gpus: float) -> int:
    """How many trials the cluster runs at once; SearchError (one line with the nodes'
    resources) when a trial fits no single node -- Ray would wait for one forever."""
    slots = cluster.slots(cpus, gpus)
    if sum(slots) < 1:
        ask = f"{cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus > 0 else "")
        raise SearchError(f"a trial asks for {ask} on one node, and no node of the Ray cluster "
                          f"has that ({cluster.table()}); lower --cpus-per-trial or "
                          f"--gpus-per-trial, or add a node that fits")
    return sum(slots)


def node_label() -> str:
    """This worker's node: Ray's node id (as ``ray list nodes`` shows it)."""
    return ray.get_runtime_context().get_node_id()


def storage_fs(storage: str):
    """``(pyarrow filesystem, path)`` of a Tune storage path or URI (``s3://``, ``gs://``, a
    local or NFS folder)."""
    import pyarrow.fs as pafs
    if "://" not in storage:
        return pafs.LocalFileSystem(), os.path.abspath(storage)
    return pafs.FileSystem.from_uri(storage)


@ray.remote(num_cpus=0)
def _sees(storage: str, marker: str) -> bool:
    import pyarrow.fs as pafs
    try:
        fs, _ = storage_fs(storage)
        return fs.get_file_info(marker).type == pafs.FileType.File
    except Exception:  # noqa: BLE001 - an unreachable store is a 'no', whatever it raises
        return False


def nodes_without(storage: str, cluster: Cluster, timeout_s: float = 30.0) -> list[dict]:
    """The alive nodes that cannot see the Tune storage ``storage``: a marker file is written
    there from the driver and looked for from one task pinned to each node."""
    import uuid

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    fs, root = storage_fs(storage)
    fs.create_dir(root)
    marker = f"{root.rstrip('/')}/.igcv-storage-probe-{uuid.uuid4().hex[:12]}"
    with fs.open_output_stream(marker) as f:
        f.write(b"igcv-nas storage probe\n")
    try:
        refs = [_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["id"], soft=False)).remote(storage, marker) for n in cluster.nodes]
        seen = ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise SearchError(f"the Ray nodes did not answer within {timeout_s:g} s whether they "
                          f"can see the Tune storage {storage}") from None
    finally:
        fs.delete_file(marker)
    return [n for n, ok in zip(cluster.nodes, seen) if not ok]


def release_memory() -> None:
    """Hand freed heap back to the OS. A reused Ray worker trains one architecture after
    another; glibc keeps the freed activation buffers of each in its arenas, so without this the
    worker grows by hundreds of MB per trial (measured: 0.15 GB per 3-step trial in-process,
    5 GB per worker after 3 CPU-budget trials) until the machine runs out of memory. Once per
    trial (about 0.1 s); epochs of one trial reuse the same buffers."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


CHECKPOINT_NAME = "checkpoint.pt"


def trainable(config: dict, splits: Any = None) -> None:
    """One proxy evaluation (an architecture at the first rung, or a ladder training), where
    Ray placed it. It reads nothing of the driver's disk: the spec and budget come in
    ``config``, the data through the object store, the checkpoint from Ray Tune's storage (its
    own retry after a worker died, or ``config["restore"]`` after the driver restarted); scores
    and checkpoints go back through ``tune.report``. The device is decided here: a GPU budget
    on a node whose CUDA fails is reported as that node's failure, in one line."""
    import torch

    from ..arch.spec import from_dict
    from ..evaluate.proxy import ProxyBudget, evaluate
    from ..evaluate.train import plan
    from ..errors import IGCVError

    torch.set_num_threads(max(1, int(config["threads"])))
    spec = from_dict(config["spec"])
    budget = ProxyBudget.from_dict(config["budget"])
    _, total, epochs = plan(len(splits.train), budget.train)
    node = node_label()
    notes: list[str] = []
    base = {"node": node, "final": False, "macs": config["macs"]}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="igcv-trial-") as work:
        keep = budget.mode != "zero-cost" and bool(config.get("checkpoints"))
        ckpt = os.path.join(work, CHECKPOINT_NAME) if keep else None
        if ckpt:
            _fetch_checkpoint(config, work, notes)
        resumed = bool(ckpt and os.path.exists(ckpt))
        base["resumed"] = resumed

        def on_epoch(rep) -> None:
            if rep.steps < total:  # the last epoch is reported with every score below
                r = {"epoch": rep.epoch, "train_loss": rep.train_loss, **base}
                if not math.isnan(rep.val_acc):
                    r["val_acc"] = rep.val_acc
                tune.report(r, checkpoint=tune.Checkpoint.from_directory(work) if ckpt
                            else None)

        def failed(reason: str) -> None:
            # a failed report still carries the score key (0.0): Ray checks every result for it
            tune.report({**base, config["score"]: 0.0, "failed": reason, "epoch": 0,
                         **({"notes": "; ".join(notes)} if notes else {})})

        try:
            scores = evaluate(spec, splits, budget, on_epoch, checkpoint=ckpt, resume=resumed,
                              on_damaged=notes.append)
        except FloatingPointError as e:  # NonFiniteLoss, non-finite accuracy or score
            failed(f"{type(e).__name__}: {e}")
            return
        except (IGCVError, RuntimeError) as e:
            if budget.train.device.startswith("cuda"):  # the node's CUDA, not the search
                import socket
                failed(f"on node {node[:8]} ({socket.gethostname()}): device "
                       f"{budget.train.device} failed "
                       f"({' '.join(str(e).split())[:200]})")
                return
            raise
        finally:
            release_memory()
    bad = [k for k, v in scores.items() if not math.isfinite(v)]
    if bad:
        failed(f"score {bad[0]} is {scores[bad[0]]}")
        return
    tune.report({**scores, **base, "final": True, "epoch": epochs,
                 "wall_seconds": time.perf_counter() - t0,
                 **({"notes": "; ".join(notes)} if notes else {})})


def _fetch_checkpoint(config: dict, work: str, notes: list[str]) -> None:
    """Bring the checkpoint to continue from into ``work``: Ray's own (this trial was retried
    after its worker died) or the one a previous driver attempt recorded (``restore``). One
    that cannot be fetched is noted and the training starts from the beginning."""
    c = tune.get_checkpoint()
    if c is None and config.get("restore"):
        r = config["restore"]
        try:
            fs, _ = storage_fs(r["storage"])
            c = tune.Checkpoint(r["path"], filesystem=fs)
        except Exception as e:  # noqa: BLE001 - a store this node cannot reach
            notes.append(f"checkpoint {r['path']} cannot be reached from this node "
                         f"({type(e).__name__}: {e}); trained from the start")
            return
    if c is None:
        return
    try:
        c.to_directory(work)
    except Exception as e:  # noqa: BLE001 - gone, or the store is down: start again
        notes.append(f"checkpoint {c.path} could not be fetched ({type(e).__name__}: "
                     f"{' '.join(str(e).split())[:160]}); trained from the start")
        for f in os.listdir(work):
            os.unlink(os.path.join(work, f))


class EngineSearcher(Searcher):
    """Ray Tune's view of the engine: suggestions and results, nothing else."""

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine

    def suggest(self, trial_id: str) -> dict | None:
        cfg = self.engine.next_config(trial_id)
        return Searcher.FINISHED if cfg == FINISHED else cfg

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.engine.on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.engine.on_complete(trial_id, result, error)

    def __getstate__(self) -> dict:
        # Ray pickles its Tuner state; the study journal is this searcher's state
        return {"journal": str(self.engine.run.journal)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            f.write(f"state: {self.engine.run.journal}\n")

    def restore(self, checkpoint_path: str) -> None:
        raise RuntimeError("resume a search with igcv-search --resume, not Tuner.restore")


class RecordingASHA(ASHAScheduler):
    """ASHA that tells the engine which trials it stopped (PRUNED, reason asha)."""

    def __init__(self, engine: Engine, **kw: Any):
        super().__init__(**kw)
        self._stopped = engine.asha_stopped

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and not result.get("final"):
            self._stopped.add(trial.trial_id)
        return action

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_stopped"}


def asha(engine: Engine, epochs: int) -> RecordingASHA:
    """Grace period past the learning-rate warm-up (at least one epoch after it), reduction
    factor 3."""
    warm = math.ceil(engine.budget.train.warmup * epochs)
    return RecordingASHA(engine, time_attr="epoch", metric="val_acc", mode="max", max_t=epochs,
                         grace_period=min(epochs, warm + 1), reduction_factor=ASHA_REDUCTION)


class Progress(Callback):
    def __init__(self, engine: Engine):
        self.engine = engine

    def _tell(self) -> None:
        if self.engine.on_change:
            self.engine.on_change(self.engine.summary())

    def on_trial_start(self, iteration, trials, trial, **info):
        self._tell()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._tell()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.engine.on_checkpoint(trial.trial_id, checkpoint.path)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.engine.on_retry(trial.trial_id)

    def on_step_end(self, iteration, trials, **info):
        e = self.engine
        ts = e.settings.time_budget_s
        if ts and e._elapsed() >= ts:
            e.stopping_reason = "time-budget"

    def __getstate__(self) -> dict:
        return {}


class HeadWatch:
    """Watches the Ray head (its GCS) from the driver: a TCP connection to the GCS address every
    ``every_s`` seconds; after ``misses`` failures in a row, ``on_lost(gcs_address)`` is called
    (from the watching thread). Ray's own reaction to a lost head is to end the driver process
    after 60 s (``gcs_rpc_server_reconnect_timeout_s``) from C++, with a log line and nothing
    Python could catch; this comes first and lets the run be closed properly."""

    def __init__(self, on_lost: Callable[[str], None], every_s: float = 2.0, misses: int = 3):
        import threading
        self.on_lost, self.every_s, self.misses = on_lost, every_s, misses
        self.gcs = ray.get_runtime_context().gcs_address
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="igcv-head-watch", daemon=True)

    def __enter__(self) -> HeadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()

    def _answers(self) -> bool:
        import socket
        host, _, port = self.gcs.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=self.every_s):
                return True
        except (OSError, ValueError):
            return False

    def _watch(self) -> None:
        missed = 0
        while not self._stop.wait(self.every_s):
            missed = 0 if self._answers() else missed + 1
            if missed >= self.misses and not self._stop.is_set():
                self.on_lost(self.gcs)
                return


def run(engine: Engine, splits: Any, cluster: Cluster, epochs: int,
        on_lost: Callable[[str], None] | None = None) -> bool:
    """Run the engine's trainings on Ray Tune; True when interrupted (Ctrl-C, or trainings left
    unfinished for a resume). The Tune storage is ``engine.storage`` (trial checkpoints go
    there when ``engine.checkpoints``). ``on_lost(gcs_address)``: called when the Ray head stops
    answering while the trainings run (:class:`HeadWatch`); it is expected not to return."""
    s = engine.settings
    remaining = engine.remaining()
    time_left = None if s.time_budget_s is None else s.time_budget_s - engine.elapsed_before
    if remaining <= 0 or (time_left is not None and time_left <= 0):
        return False
    per_trial = {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}
    slots = check_fit(cluster, s.cpus_per_trial, s.gpus_per_trial)
    concurrent = min(s.max_concurrent or slots, remaining)
    fn = tune.with_resources(tune.with_parameters(trainable, splits=splits), per_trial)
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(EngineSearcher(engine), max_concurrent=concurrent),
            scheduler=asha(engine, epochs) if s.uses_asha(epochs) else None,
            num_samples=remaining, time_budget_s=time_left, reuse_actors=True,
            trial_name_creator=lambda t: t.config.get("name", t.trial_id),
            trial_dirname_creator=lambda t: t.config.get("name", t.trial_id)),
        run_config=tune.RunConfig(
            name=f"attempt-{engine.attempt}", storage_path=engine.storage, verbose=0,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[Progress(engine)]))
    engine.publish()
    interrupted = False
    try:
        if on_lost is None:
            tuner.fit()
        else:
            with HeadWatch(on_lost):
                tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    if (s.time_budget_s is not None and not interrupted
            and engine._elapsed() >= s.time_budget_s - 1):
        engine.stopping_reason = "time-budget"
        engine.stop_live()
    return bool(interrupted or (engine.live and engine.stopping_reason is None))
