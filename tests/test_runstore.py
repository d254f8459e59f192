"""The run directory: atomic creation, lock semantics, journal repair, table helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from igcv_nas.search.runstore import RunDir, RunError, RunLocked, load_trials, pareto_front, table


def test_create_writes_everything_or_nothing(tmp_path):
    run = RunDir.create(tmp_path / "r", {"settings": {"seed": 1}}, b"name: x\n")
    assert json.loads((tmp_path / "r" / "run.json").read_text()) == {
        "format": "igcv-nas/run@1", "settings": {"seed": 1}}
    assert (tmp_path / "r" / "space.yaml").read_bytes() == b"name: x\n"
    assert sorted(os.listdir(tmp_path)) == ["r"]  # no temporary sibling left
    assert run.meta["settings"] == {"seed": 1}

    with pytest.raises(TypeError):  # run.json cannot be written: nothing may appear
        RunDir.create(tmp_path / "s", {"x": object()}, b"")
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_an_existing_run_dir_is_never_overwritten(tmp_path):
    RunDir.create(tmp_path / "r", {}, b"")
    before = (tmp_path / "r" / "run.json").read_bytes()
    with pytest.raises(RunError,
                       match="already exists and is not empty; continue it with --resume"):
        RunDir.create(tmp_path / "r", {"other": 1}, b"")
    assert (tmp_path / "r" / "run.json").read_bytes() == before
    (tmp_path / "empty").mkdir()
    RunDir.create(tmp_path / "empty", {}, b"")  # an empty directory is fine


def test_open_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(RunError, match=r"is not an igcv-search run directory \(no run.json\)"):
        RunDir.open(tmp_path)
    (tmp_path / "run.json").write_text('{"format": "other@2"}')
    with pytest.raises(RunError, match="format 'other@2'; accepted: igcv-nas/run@1"):
        RunDir.open(tmp_path)


def test_lock_is_exclusive_across_processes_and_released_when_the_holder_dies(tmp_path):
    RunDir.create(tmp_path / "r", {}, b"")
    holder = ("import sys, time\nfrom igcv_nas.search.runstore import RunDir\n"
              f"RunDir({str(tmp_path / 'r')!r}).lock()\n"
              "print('locked', flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"is in use by pid {p.pid} on "):
            RunDir(tmp_path / "r").lock()
    finally:
        p.kill()
        p.wait()
    run = RunDir(tmp_path / "r")  # the kernel released the dead holder's lock
    run.lock()
    assert (tmp_path / "r" / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    run.unlock()


def test_repair_journal_cuts_only_a_torn_last_record(tmp_path):
    run = RunDir.create(tmp_path / "r", {}, b"")
    assert run.repair_journal() == 0  # no journal yet
    run.journal.write_bytes(b'{"a":1}\n{"b":2}\n')
    assert run.repair_journal() == 0
    run.journal.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert run.repair_journal() == 5
    assert run.journal.read_bytes() == b'{"a":1}\n{"b":2}\n'
    run.journal.write_bytes(b'{"torn')
    assert run.repair_journal() == 6 and run.journal.read_bytes() == b""


def test_release_journal_lock_removes_a_stale_lock_so_appends_do_not_wait(tmp_path):
    """A driver killed inside a journal append leaves Optuna's lock symlink; under the run's lock
    it is stale and removed, and the next append takes the lock at once (Optuna alone would wait
    its 30 s grace period)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
    run = RunDir.create(tmp_path / "r", {}, b"")
    assert run.release_journal_lock() is False  # nothing there
    storage = JournalStorage(JournalFileBackend(str(run.journal)))
    optuna.create_study(storage=storage, study_name="s")
    before = run.journal.read_bytes()
    assert JournalFileSymlinkLock(str(run.journal)).acquire()  # held, never released
    lock = tmp_path / "r" / "study.journal.lock"
    assert lock.is_symlink()
    assert run.release_journal_lock() is True and not lock.is_symlink() and not lock.exists()
    assert run.release_journal_lock() is False
    assert run.journal.read_bytes() == before  # the journal itself untouched
    optuna.load_study(storage=storage, study_name="s").ask()  # appends again
    assert len(run.journal.read_bytes()) > len(before)
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if "journal" in p.name) == [
        "study.journal"]


def test_pareto_front_and_table():
    rows = [{"number": 0, "val_acc": 0.5, "macs": 300}, {"number": 1, "val_acc": 0.6, "macs": 200},
            {"number": 2, "val_acc": 0.4, "macs": 100}, {"number": 3, "val_acc": 0.6, "macs": 250},
            {"number": 4, "val_acc": 0.7, "macs": 400}]
    assert [r["number"] for r in pareto_front(rows)] == [2, 1, 4]
    # a lower-is-better score (val_loss): sign -1
    loss = [{"number": r["number"], "val_loss": 1 - r["val_acc"], "macs": r["macs"]} for r in rows]
    assert [r["number"] for r in pareto_front(loss, "val_loss", sign=-1)] == [2, 1, 4]
    df = table(rows)
    assert list(df.columns[:5]) == ["number", "rung", "seed", "status", "arch_id"]
    assert len(df) == 5


def test_load_trials_of_a_run_without_trials(tmp_path):
    RunDir.create(tmp_path / "r", {}, b"")
    df = load_trials(tmp_path / "r")
    assert len(df) == 0 and "val_acc" in df.columns


def _run_with_trials(tmp_path, text: str):
    import hashlib
    raw = b"name: s\n"
    run = RunDir.create(tmp_path / "r", {"settings": {}, "space": {
        "sha256": hashlib.sha256(raw).hexdigest()}, "attempts": []}, raw)
    (run.path / "trials.csv").write_text(text)
    return run


def test_load_trials_types_and_old_tables(tmp_path):
    run = _run_with_trials(tmp_path, "number,status,arch_id,macs,val_acc,started\n"
                                     "0,complete,ab,100,0.5,2026-12-01T08:00:00\n"
                                     "1,over-budget,cd,900,,2026-12-01T08:00:01\n")
    df = load_trials(run.path)
    assert str(df.number.dtype) == "Int64" and str(df.rung.dtype) == "Int64"
    assert list(df.rung) == [0, 0]  # a table written before the ladder: all first rung
    assert str(df.val_acc.dtype) == "float64" and df.val_acc.isna().tolist() == [False, True]
    assert str(df.started.dtype).startswith("datetime64") and df.status.dtype == "string"


def test_check_resumable(tmp_path):
    run = _run_with_trials(tmp_path, "number,status,arch_id,macs\n0,complete,ab,100\n")
    with pytest.raises(RunError, match="is missing or empty but the run has recorded trials"):
        run.check_resumable()
    run.journal.write_bytes(b'{"op_code": 0}\nnot json\n{"op_code": 1}\n{"op_')
    with pytest.raises(RunError, match="record 2 \\(line 2\\) is not a journal record"):
        run.check_resumable()
    run.journal.write_bytes(b'{"op_code": 0}\n{"op_code": 1}\n{"op_')  # torn last: repairable
    with pytest.raises(RunError, match=r"trials/00000/spec.json is missing, and trials.csv "
                                       r"records trial 0 as evaluated \(1 evaluated"):
        run.check_resumable()  # trials/ deleted: refused before Ray, nothing changed
    run.trial_dir(0).mkdir(parents=True)
    run.spec_file(0).write_text("{}")
    run.check_resumable()
    run.space_file.write_bytes(b"name: t\n")
    with pytest.raises(RunError, match="was changed since the run was created"):
        run.check_resumable()


def test_run_directory_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        run = RunDir.create(tmp_path / "r", {}, b"")
    finally:
        os.umask(old)
    assert run.path.stat().st_mode & 0o777 == 0o755  # mkdtemp alone gives 0700
