"""Atomic file writes: a temporary file in the same folder, fsync, then ``os.replace``.

A reader (or a process resuming after a crash at any point) sees either the old file or the new
one, never a half-written one; a crash can leave a ``.<name>.*.tmp`` file beside it, which
:func:`remove_stale_temps` deletes."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO


_UMASK = os.umask(0)
os.umask(_UMASK)

# Failpoint for the fault tests (tests/test_reliability.py): IGCV_NAS_CRASH_AT="run.json:2" makes
# the process die (exit 99, no cleanup) at the 2nd write of a file named run.json, after the
# temporary file is written and before it replaces the old one -- a crash at that write point.
_CRASH_AT = os.environ.get("IGCV_NAS_CRASH_AT", "")
_WRITES: dict[str, int] = {}


def _failpoint(path: str) -> None:
    name, _, n = _CRASH_AT.partition(":")
    base = os.path.basename(path)
    if base == name:
        _WRITES[base] = _WRITES.get(base, 0) + 1
        if _WRITES[base] == int(n or 1):
            os._exit(99)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], object],
                 binary: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, and rename it over
    ``path``. The temporary file is removed when ``write`` raises."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if _CRASH_AT:
            _failpoint(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data), binary=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n")


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files left in ``folder`` (recursively) by writes that a crash
    interrupted; returns how many. Only for a folder no live process writes to."""
    n = 0
    for root, _dirs, files in os.walk(os.fspath(folder)):
        for f in files:
            if f.startswith(".") and f.endswith(".tmp"):
                os.unlink(os.path.join(root, f))
                n += 1
    return n
