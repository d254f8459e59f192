"""Fault tests of igcv-search with real processes, real Ray and the real study storage:
a worker killed mid-training continues from its last epoch checkpoint; one killed more often
than --max-failures allows is recorded as failed, never as done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from igcv_nas.search.runstore import load_trials

from .test_search import FAST, SMALL, evaluated, study

pytestmark = pytest.mark.integration  # real Ray searches on the CIFAR-10 copy


def _search(d: Path, cifar_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "igcv_nas.cli.search", "--space", SMALL, "--flops", "4M",
         "--seed", "11", "--no-asha", "--max-concurrent", "1", "--data-dir", str(cifar_dir),
         "--run-dir", str(d), *FAST, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [root]
    while frontier:
        kids = [c for c, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _checkpoints(d: Path, number: int | str = "*") -> list[Path]:
    """The trial checkpoints Ray Tune persisted in the run's default Tune storage (``ray/``)."""
    return sorted((d / "ray").glob(f"attempt-*/trial-{number}/checkpoint_*/checkpoint.pt"))


def _kill_worker_after_checkpoint(p: subprocess.Popen, d: Path, timeout: float = 900) -> int:
    """Wait until some trial has written its epoch checkpoint, then SIGKILL the Ray worker
    process training it (a descendant of this search's driver). Returns the trial number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpts = _checkpoints(d)
        if ckpts:
            workers = [pid for pid in _descendants(p.pid) if "ImplicitFunc" in _cmdline(pid)]
            if workers:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                return int(ckpts[0].parent.parent.name.split("-")[1])
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def test_killed_worker_continues_from_its_checkpoint(tmp_path, cifar_dir):
    d = tmp_path / "run"
    p = _search(d, cifar_dir, "--trials", "3")
    n = _kill_worker_after_checkpoint(p, d)
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    df = load_trials(d).set_index("number")
    ev = evaluated(df.reset_index())
    assert len(ev) == 3 and (ev.status == "complete").all()
    assert df.loc[n, "resumed_in"] == 1  # restarted by Ray in the same attempt, from epoch >= 1
    assert not [t for t in study(d).trials if t.state == optuna.trial.TrialState.RUNNING]


def test_trial_killed_past_max_failures_is_failed_not_done(tmp_path, cifar_dir):
    d = tmp_path / "run"
    p = _search(d, cifar_dir, "--trials", "2", "--max-failures", "0")
    n = _kill_worker_after_checkpoint(p, d)
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    df = load_trials(d).set_index("number")
    assert df.loc[n, "status"] == "failed"
    assert "the trial failed 1 time(s)" in df.loc[n, "reason"]
    assert study(d).trials[n].state == optuna.trial.TrialState.FAIL
    assert not _checkpoints(d, n)  # deleted from the storage once the trial was decided
    ev = evaluated(df.reset_index())
    assert len(ev) == 2 and (ev[ev.number != n].status == "complete").all()


CONTROL_FILES = ["run.json", "trials.csv", "best.json", "pareto.json", "spec.json",
                 "proxy_spec.json", "checkpoint.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONTROL_FILES)
def test_crash_at_each_control_file_write_then_resume(name, tmp_path, cifar_dir):
    """The driver (or, for checkpoint.pt, a worker) dies at the 3rd write of a control file,
    between writing the new version and replacing the old one; --resume completes the search
    and every file parses."""
    d = tmp_path / "run"
    env = {**os.environ, "IGCV_NAS_CRASH_AT": f"{name}:3"}
    p = subprocess.Popen(
        [sys.executable, "-m", "igcv_nas.cli.search", "--space", SMALL, "--flops", "4M",
         "--seed", "2", "--trials", "4", "--no-asha", "--max-failures", "1",
         "--data-dir", str(cifar_dir), "--run-dir", str(d), *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    p.communicate(timeout=400)
    r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.search", "--resume", str(d),
                        "--data-dir", str(cifar_dir), "--quiet"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    df = load_trials(d)
    assert len(evaluated(df)) == 4 and evaluated(df).arch_id.is_unique
    assert not [t for t in study(d).trials if t.state == optuna.trial.TrialState.RUNNING]
    ours = [f for f in d.rglob("*.json") if "ray" not in f.relative_to(d).parts]
    assert len(ours) >= 3 + 2 * 4  # run, best, pareto + spec and proxy spec per trial
    for f in ours:  # (Ray's own state files under ray/ are its business)
        json.loads(f.read_text())
    pd.read_csv(d / "trials.csv")
    assert not list(d.rglob(".*.tmp"))
