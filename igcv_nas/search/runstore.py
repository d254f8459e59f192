"""The run directory: the single source of truth of one search (no Ray, no training here).

Layout of ``runs/<time>-<space>-<budget>/``::

    run.json         format, arguments, package versions, search-space hash, seed, attempts
    space.yaml       the exact search-space file searched (resume and export read this copy)
    study.journal    the Optuna study (JournalFileBackend: append-only, safe for concurrent writers)
    trials.csv       one row per trial, derived from the study (read with :func:`load_trials`)
    best.json        the best architecture so far: spec, costs, scores
    pareto.json      the non-dominated set (accuracy vs MACs)
    measured_latency.json  measured latency of the final candidates (with --latency)
    latency_lut.json the latency lookup table (with --latency and no --lut)
    trials/<n>/      per-trial files: spec.json and proxy_spec.json (the driver's copies; trials
                     get their spec in their Ray config and never read this directory)
    ray/attempt-<k>/ Ray Tune's storage of each (re)start (experiment state, trial checkpoints)
                     unless --storage-path puts it elsewhere
    .lock            held (flock) by the driver while it runs

Every file is written atomically (:mod:`igcv_nas.fileio`); the directory itself is created by
renaming a fully written temporary sibling, so a failed start leaves nothing behind.
The study journal is authoritative: ``trials.csv``, ``best.json`` and ``pareto.json`` are
recomputed from it after every trial and on resume.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from ..errors import IGCVError
from ..fileio import write_bytes, write_json, write_text
from .trials import LADDER_STUDY, STUDY_NAME, TrialStatus

if TYPE_CHECKING:
    import pandas as pd

RUN_FORMAT = "igcv-nas/run@1"
RUN_JSON, SPACE_FILE, JOURNAL = "run.json", "space.yaml", "study.journal"
TRIALS_CSV, BEST_JSON, PARETO_JSON = "trials.csv", "best.json", "pareto.json"
MEASURED_JSON = "measured_latency.json"
__all__ = ["LADDER_STUDY", "STUDY_NAME", "RunDir", "RunError", "RunLocked", "load_trials",
           "pareto_front", "table"]

# what a trial became (column ``status`` of the trials table; see igcv_nas.search.trials)
COMPLETE, PRUNED, FAILED = (TrialStatus.COMPLETE.value, TrialStatus.PRUNED.value,
                            TrialStatus.FAILED.value)
OVER_BUDGET, DUPLICATE, RUNNING = (TrialStatus.OVER_BUDGET.value, TrialStatus.DUPLICATE.value,
                                   TrialStatus.RUNNING.value)
BELOW_BAND = TrialStatus.BELOW_BAND.value
LOST = TrialStatus.LOST.value  # sampled, but the driver died before it was decided
EVALUATED = (COMPLETE, PRUNED, FAILED)  # trials that were handed to proxy evaluation

# one row per architecture at the first rung (rung 0, the trial's number) and one per ladder
# training (rung >= 1, the architecture's number, seed offset, ladder_trial)
TABLE_COLUMNS = ["number", "rung", "seed", "status", "arch_id", "macs", "params", "latency_ms",
                 "measured_latency_ms", "val_acc", "val_loss", "tse", "best_val_acc", "epochs",
                 "train_seconds", "wall_seconds", "images_per_s", "node", "retries", "attempt",
                 "resumed_in", "driver",
                 "duplicate_of", "parent", "ladder_trial", "reason", "notes", "started", "finished"]


# dtypes of the trials table as load_trials returns it
INT_COLUMNS = ("number", "rung", "seed", "macs", "params", "retries", "attempt", "resumed_in",
               "duplicate_of", "parent", "ladder_trial")
FLOAT_COLUMNS = ("latency_ms", "measured_latency_ms", "val_acc", "val_loss", "tse",
                 "best_val_acc", "epochs", "train_seconds", "wall_seconds", "images_per_s")
TEXT_COLUMNS = ("status", "arch_id", "node", "driver", "reason", "notes")
TIME_COLUMNS = ("started", "finished")


class RunError(IGCVError, ValueError):
    """A run directory that cannot be used as asked (one line: path and what is wrong)."""


class RunLocked(RunError):
    """Another live ``igcv-search`` holds the run directory."""


class RunDir:
    """One run directory. Create with :meth:`create`, open an existing one with :meth:`open`.

    The constructor checks nothing (use :meth:`open` for that).

    Args:
        path: the run directory (it is resolved to an absolute path).

    Attributes:
        path: the run directory, resolved to an absolute path.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()
        self._lock_fd: int | None = None

    # -- creation and opening -----------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, meta: dict, space_raw: bytes) -> RunDir:
        """Write ``run.json`` and ``space.yaml`` into a temporary sibling and rename it to
        ``path``: either the complete directory appears or nothing does. An existing non-empty
        ``path`` is refused (resume it with ``--resume``)."""
        path = cls.check_new(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".creating", dir=path.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a run dir is shared like any other
        try:
            write_bytes(tmp / SPACE_FILE, space_raw)
            write_json(tmp / RUN_JSON, {"format": RUN_FORMAT, **meta})
            (tmp / "trials").mkdir()
            if path.exists():
                path.rmdir()  # empty directory given as --run-dir
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path)

    @staticmethod
    def check_new(path: str | os.PathLike) -> Path:
        """``path`` resolved; RunError when it exists and is not an empty directory."""
        path = Path(path).resolve()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunError(f"run directory {path} already exists and is not empty; "
                           f"continue it with --resume {path} or choose another --run-dir")
        return path

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run directory; RunError when ``path`` is not one."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"run directory {path} does not exist")
        if not (p / RUN_JSON).is_file():
            raise RunError(f"{path} is not an igcv-search run directory (no {RUN_JSON})")
        run = cls(p)
        meta = run.meta
        if meta.get("format") != RUN_FORMAT:
            raise RunError(f"{p / RUN_JSON}: format {meta.get('format')!r}; accepted: {RUN_FORMAT}")
        return run

    def check_resumable(self) -> None:
        """Check the whole run directory before a resume starts or writes anything; RunError
        (one line naming the file and what is wrong) when it cannot be resumed safely:

        * ``run.json``: a JSON object of this format with ``settings`` (an object), ``space``
          (with its ``sha256``), ``attempts`` (a list);
        * ``space.yaml``: present, its SHA-256 equal to the one ``run.json`` recorded;
        * ``study.journal``: present whenever trials were recorded (``trials.csv`` rows or trial
          folders) -- a run directory with trials but no study is never resumed into a new
          study -- and every record but a torn last one (which is repaired) a JSON object with
          an ``op_code``.
        """
        meta = self.meta
        f = self.path / RUN_JSON
        if not isinstance(meta, dict):
            raise RunError(f"{f}: not a JSON object")
        for key, kind in (("settings", dict), ("space", dict), ("attempts", list)):
            if not isinstance(meta.get(key), kind):
                raise RunError(f"{f}: '{key}' is missing or not a {kind.__name__}; "
                               f"this run directory cannot be resumed")
        want = meta["space"].get("sha256")
        if not self.space_file.is_file():
            raise RunError(f"{self.space_file} is missing; the run's space cannot be checked")
        import hashlib
        have = hashlib.sha256(self.space_file.read_bytes()).hexdigest()
        if have != want:
            raise RunError(f"{self.space_file} was changed since the run was created (sha256 "
                           f"{have[:12]}, run.json records {str(want)[:12]}); restore it or "
                           f"start a new run")
        trial_dirs = [d for d in (self.path / "trials").glob("*") if d.is_dir()] \
            if (self.path / "trials").is_dir() else []
        has_rows = (self.path / TRIALS_CSV).is_file() and len(
            (self.path / TRIALS_CSV).read_text(encoding="utf-8").splitlines()) > 1
        if meta["settings"].get("storage"):
            self._check_spec_files()
            return  # the study is in a shared storage (checked when it is opened)
        j = self.journal
        if not j.is_file() or j.stat().st_size == 0:
            if trial_dirs or has_rows:
                raise RunError(f"{j} is missing or empty but the run has recorded trials; "
                               f"refusing to resume into a new study (restore the journal)")
            return
        with open(j, "rb") as fh:
            lines = fh.read().split(b"\n")
        last = len(lines) - 1  # the piece after the final newline: empty, or a torn record
        for i, line in enumerate(lines):
            if not line.strip() or i == last:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or "op_code" not in rec:
                raise RunError(f"{j}: record {i + 1} (line {i + 1}) is not a journal record; "
                               f"the study cannot be read (restore the journal)")
        self._check_spec_files()

    def _check_spec_files(self) -> None:
        """Every architecture that ``trials.csv`` records as evaluated has its ``spec.json``
        (export, the report and the ladder read it): a deleted ``trials/`` or trial folder is
        refused here, before Ray starts, rather than failing trials inside Ray."""
        import csv
        f = self.path / TRIALS_CSV
        if not f.is_file():
            return
        missing = []
        try:
            with open(f, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    if row.get("rung", "0") not in ("0", "") or row.get("status") not in EVALUATED:
                        continue
                    n = row.get("number", "")
                    if n.isdigit() and not self.spec_file(int(n)).is_file():
                        missing.append(int(n))
        except (OSError, ValueError, csv.Error):
            return  # an unreadable table is rewritten from the study; the study decides
        if missing:
            raise RunError(f"{self.spec_file(missing[0])} is missing, and trials.csv records "
                           f"trial {missing[0]} as evaluated ({len(missing)} evaluated trial(s) "
                           f"without their spec in all); restore {self.path / 'trials'} -- "
                           f"nothing was changed")

    # -- metadata --------------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        try:
            meta = json.loads((self.path / RUN_JSON).read_text(encoding="utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            return meta
        except (OSError, ValueError) as e:
            raise RunError(f"{self.path / RUN_JSON} cannot be read: {e}") from None

    def update_meta(self, **changes: Any) -> dict:
        meta = {**self.meta, **changes}
        write_json(self.path / RUN_JSON, meta)
        return meta

    @property
    def space_file(self) -> Path:
        return self.path / SPACE_FILE

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    def trial_dir(self, number: int) -> Path:
        return self.path / "trials" / f"{number:05d}"

    def spec_file(self, number: int) -> Path:
        return self.trial_dir(number) / "spec.json"

    def proxy_spec_file(self, number: int) -> Path:
        """The data set's variant of the trial's spec: what its trainings train."""
        return self.trial_dir(number) / "proxy_spec.json"

    def ray_dir(self) -> Path:
        return self.path / "ray"

    def repair_journal(self) -> int:
        """Cut a torn last record (no trailing newline: a crash or a full disk in the middle of
        an append) off the study journal, so that appending after it cannot corrupt the log.
        Returns the number of bytes removed (0 for an intact journal)."""
        f = self.journal
        if not f.is_file() or f.stat().st_size == 0:
            return 0
        with open(f, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return 0
            keep, pos, block = 0, size, 1 << 16
            while pos > 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    keep = start + i + 1
                    break
                pos = start
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep

    def release_journal_lock(self) -> bool:
        """Remove the study journal's write lock (Optuna's lock symlink beside the journal) left
        by a driver that was killed or interrupted in the middle of an append; returns whether
        there was one. Only the driver writes the journal and it holds the run's lock, so under
        that lock a journal lock is always stale; without this the next append waits Optuna's
        30 s grace period, with warnings, before taking it over."""
        from optuna.storages.journal import JournalFileSymlinkLock
        try:
            JournalFileSymlinkLock(str(self.journal)).release()
        except RuntimeError:  # no lock there ("did not possess lock")
            return False
        return True

    # -- the lock --------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the run's lock (``flock`` on ``.lock``): released by the kernel when the holder
        dies, so a lock left by a killed driver never blocks a resume. RunLocked when a live
        process holds it."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunLocked(f"run directory {self.path} is in use by {holder}; "
                                f"wait for it to finish or stop it first") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock if this object holds it (idempotent)."""
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the run's lock."""
        return self._lock_fd is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        """``with run.locked(): ...``: the lock (:meth:`lock`; RunLocked when a live process
        holds it) for the block, released on every exit from it, an exception included."""
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    # -- measured latency of final candidates (the study's finished trials are immutable) ----
    def measured_latency(self) -> dict[int, float]:
        f = self.path / MEASURED_JSON
        if not f.is_file():
            return {}
        return {int(k): float(v) for k, v in json.loads(f.read_text(encoding="utf-8")).items()}

    def write_measured_latency(self, measured: dict[int, float]) -> None:
        write_json(self.path / MEASURED_JSON, {str(k): v for k, v in sorted(measured.items())})

    # -- derived files ----------------------------------------------------------------------------
    def write_results(self, rows: list[dict], best: dict | None, pareto: list[dict]) -> None:
        """Rewrite ``trials.csv``, ``best.json`` and ``pareto.json`` (each atomically)."""
        write_text(self.path / TRIALS_CSV, table(rows).to_csv(index=False))
        write_json(self.path / BEST_JSON, best)
        write_json(self.path / PARETO_JSON, pareto)


def table(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows (dicts) as the trials DataFrame: the fixed columns first, then scores (``zc_*``)."""
    import pandas as pd
    df = pd.DataFrame(list(rows))
    for c in TABLE_COLUMNS:
        if c not in df.columns:
            df[c] = pd.NA
    extra = sorted(c for c in df.columns if c not in TABLE_COLUMNS)
    return df[TABLE_COLUMNS + extra]


def load_trials(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The trials table of a run (``trials.csv``) as a pandas DataFrame -- the one loader, for
    notebooks, reports and exports: counts, ids, rungs and seeds as nullable integers
    (``Int64``), scores, latencies and seconds as ``float64``, ``started``/``finished`` as
    datetimes (the driver's local time), text as strings; every column of
    :data:`TABLE_COLUMNS` present. RunError when ``run_dir`` is not a run directory or its
    ``trials.csv`` is not a trials table.

    Args:
        run_dir: the run directory of ``igcv-search``.

    Returns:
        One row per trials-table row (no rows when the run has no ``trials.csv`` yet), with
        every column of :data:`TABLE_COLUMNS` typed as above; values that cannot be read as
        their type are missing (``<NA>``, NaN or NaT).

    Raises:
        RunError: ``run_dir`` is not a run directory (:meth:`RunDir.open`), or ``trials.csv``
            cannot be parsed or lacks one of the columns ``number``, ``status``, ``arch_id``,
            ``macs``."""
    import pandas as pd
    run = RunDir.open(run_dir)
    f = run.path / TRIALS_CSV
    if not f.is_file():
        df = table([])
    else:
        try:
            df = pd.read_csv(f)
        except (ValueError, pd.errors.ParserError) as e:
            raise RunError(f"{f} cannot be read as a table: {e}") from None
        if "rung" not in df.columns and "number" in df.columns:  # written before the ladder
            df["rung"] = 0
        missing = [c for c in ("number", "status", "arch_id", "macs") if c not in df.columns]
        if missing:
            raise RunError(f"{f} is not a trials table (no column {missing[0]!r})")
        df = table(df.to_dict("records"))
    for c in df.columns:
        if c in INT_COLUMNS:
            v = pd.to_numeric(df[c], errors="coerce").astype("float64")
            v = v.where(v.abs() < 2**53)  # inf, nan and damaged huge values become missing
            df[c] = v.round().astype("Int64")
        elif c in FLOAT_COLUMNS or c.startswith("zc_"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        elif c in TIME_COLUMNS:
            df[c] = pd.to_datetime(df[c], format="ISO8601", errors="coerce")
        elif c in TEXT_COLUMNS:
            df[c] = df[c].astype("string")
    return df


def pareto_front(rows: list[dict], score: str = "val_acc", cost: str = "macs",
                 sign: int = 1) -> list[dict]:
    """Rows not dominated in (better ``score``: higher for ``sign`` 1, lower for -1; lower
    ``cost``), cheapest first."""
    pts = [r for r in rows if r.get(score) is not None and r.get(cost) is not None]
    pts.sort(key=lambda r: (r[cost], -sign * r[score]))
    front, best = [], float("-inf")
    for r in pts:
        if sign * r[score] > best:
            front.append(r)
            best = sign * r[score]
    return front
