"""Fault tests of igcv-search with real processes, real Ray and the real study storage:
a worker killed mid-training continues from its last epoch checkpoint; one killed more often
than --max-failures allows is recorded as failed, never as done."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import os
import signal

import optuna

from igcv_nas.runstore import RunDir, load_trials

from .test_search import FAST, SMALL, evaluated, study


def _search(d: Path, cifar_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "igcv_nas.cli.search", "--space", SMALL, "--flops", "4M",
         "--seed", "11", "--no-asha", "--max-concurrent", "1", "--data-dir", str(cifar_dir),
         "--run-dir", str(d), *FAST, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
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


def _kill_worker_after_checkpoint(p: subprocess.Popen, d: Path, timeout: float = 180) -> int:
    """Wait until some trial has written its epoch checkpoint, then SIGKILL the Ray worker
    process training it (a descendant of this search's driver). Returns the trial number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpts = sorted((d / "trials").glob("*/checkpoint.pt")) if (d / "trials").is_dir() else []
        if ckpts:
            workers = [pid for pid in _descendants(p.pid) if "ImplicitFunc" in _cmdline(pid)]
            if workers:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                return int(ckpts[0].parent.name)
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
    assert not RunDir(d).checkpoint_file(n).exists()
    ev = evaluated(df.reset_index())
    assert len(ev) == 2 and (ev[ev.number != n].status == "complete").all()
