"""Where the Optuna study lives: the run directory's journal file, or a storage shared by drivers.

The default is ``RUN_DIR/study.journal`` (Optuna's ``JournalFileBackend``), written by the one
driver that holds the run's lock. ``--storage URL`` puts the study in a storage several drivers
on different machines share: an RDB (``postgresql://``, ``mysql://``, ``sqlite:///``; Optuna's
``RDBStorage``) or Optuna's gRPC storage proxy (``grpc://HOST:PORT``; ``GrpcStorageProxy``, which
needs ``grpcio``). Each driver keeps its own run directory; what sharing allows (one study,
architectures deduplicated across drivers, ``--trials`` counted over the study) is the trial
book's part (:meth:`igcv_nas.search.trials.TrialBook.ask` with ``shared=True``).

A URL that holds a password is refused: the URL is recorded in ``run.json`` (a resume reads it
from there), so the password goes where the database client looks for it (PostgreSQL:
``PGPASSWORD`` or ``~/.pgpass``; MySQL: the client's option file).
"""
from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlsplit

import optuna

from .settings import SearchError, Settings

RDB_SCHEMES = ("postgresql", "mysql", "sqlite")
CONNECT_TIMEOUT_S = 10
# settings that must be equal for two drivers to share one study (the space by its SHA-256)
SHARED_FIELDS = ("target", "macs", "macs_min", "params", "latency_ms", "latency_device",
                 "latency_predictor", "dataset", "objective", "proxy", "zero_cost_metric",
                 "score_by", "scheduler", "budget")


def check_url(url: str) -> None:
    """SearchError (one line) unless ``url`` is a storage URL this project opens."""
    try:
        parts = urlsplit(url)
        password = parts.password
        port = parts.port if parts.scheme == "grpc" else None
    except ValueError as e:
        raise SearchError(f"--storage {url!r}: not a URL ({e})") from None
    scheme = parts.scheme.split("+", 1)[0]
    if parts.scheme == "grpc":
        if not parts.hostname or port is None:
            raise SearchError(f"--storage {url!r}: a gRPC storage proxy is grpc://HOST:PORT")
        return
    if scheme not in RDB_SCHEMES:
        raise SearchError(f"--storage {url!r}; accepted: postgresql://..., mysql://..., "
                          f"sqlite:///PATH (Optuna's RDB storage, SQLAlchemy URLs) or "
                          f"grpc://HOST:PORT (Optuna's gRPC storage proxy)")
    if password:
        raise SearchError("--storage: the URL holds a password, and the URL is recorded in "
                          "run.json; give the password to the database client instead "
                          "(PostgreSQL: PGPASSWORD or ~/.pgpass)")


def is_shared(settings: Settings) -> bool:
    return settings.storage is not None


def driver_seed(seed: int, driver: str) -> int:
    """A shared study's drivers each draw their own stream: the search seed and the driver's id
    (a random sampler with one seed in two drivers would propose the same architectures)."""
    h = int(hashlib.sha256(driver.encode()).hexdigest()[:8], 16)
    return (seed + h) % 2**32


def open_shared(url: str) -> optuna.storages.BaseStorage:
    """The storage at ``url`` (checked by :func:`check_url`). Creating an RDB's tables races when
    two drivers start together (both see no schema): retried a few times."""
    if url.startswith("grpc://"):
        parts = urlsplit(url)
        try:
            from optuna.storages import GrpcStorageProxy
            return GrpcStorageProxy(host=parts.hostname, port=parts.port)
        except ImportError as e:
            raise SearchError(f"--storage {url}: the gRPC storage proxy needs grpcio "
                              f"(pip install grpcio): {e}") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    last: Exception | None = None
    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as e:  # noqa: BLE001 - sqlalchemy's errors, the schema race included
            last = e
            time.sleep(0.5 * (attempt + 1))
    cause = " ".join(str(last).split())[:300]
    raise SearchError(f"--storage {url}: cannot open the study storage ({cause})")


def fingerprint(settings: Settings, space_sha256: str) -> dict:
    """What two drivers of one study must agree on."""
    d = settings.to_dict()
    return {"space_sha256": space_sha256, **{k: d[k] for k in SHARED_FIELDS}}


def check_shared_study(settings: Settings, space_sha256: str, study_name: str) -> None:
    """Before a driver creates anything: the shared study, if it exists, was made by a search
    with the same space and settings (SearchError naming the first field that differs)."""
    storage = open_shared(settings.storage)  # type: ignore[arg-type]
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return  # a new study: this driver creates it
    theirs = study.user_attrs.get("fingerprint")
    if theirs is None:
        raise SearchError(f"--storage {settings.storage}: a study named {study_name!r} exists "
                          f"and was not made by igcv-search; give another --study-name")
    mine = fingerprint(settings, space_sha256)
    for k, v in mine.items():
        if theirs.get(k) != v:
            raise SearchError(f"--storage {settings.storage}: study {study_name!r} was made by a "
                              f"search with {k} {theirs.get(k)!r}, this one has {v!r}; a shared "
                              f"study needs the same space and settings (or another "
                              f"--study-name)")
