"""igcv-search on a real loopback cluster whose worker node shares no disk with the driver.

The head (``ray start --head``, 0 CPUs: it runs no trial) and the driver see this machine's
files. The worker node's ``ray start`` runs in its own mount namespace (``unshare -m``) with a
tmpfs over the test's folder (the run directory) and over the data folder, so a trial that
opened the run directory or read the data from disk would fail there. Then GPU placement from a
CPU-only driver: refused at once while no node offers a GPU, accepted once a node with a GPU
resource (``--num-gpus 1`` on a machine without CUDA) joins, where its trial fails naming that
node. Needs root and ``unshare``; skipped with the reason elsewhere."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from igcv_nas.search.runstore import load_trials

pytestmark = pytest.mark.integration

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")
RAY = str(Path(sys.executable).with_name("ray"))
# Ray advertises the machine's own interface address for 127.0.0.1: every node is still on this
# machine, and no packet leaves it
LOOPBACK = {"RAY_USAGE_STATS_ENABLED": "0"}
# the nodes and the test's own probes use Ray's token authentication (``ray start --head``
# makes ~/.ray/auth_token when there is none); igcv-search is started without RAY_AUTH_MODE:
# it finds the token itself, as a user's driver must
NODES = {**LOOPBACK, "RAY_AUTH_MODE": "token"}


def driver_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}, **LOOPBACK}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_unshare() -> str | None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare(1) for a worker node with its own mount namespace"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare -m is not allowed here: {r.stderr.strip()}"


def _nodes(address: str) -> list[dict]:
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))" % address)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **NODES})
    if r.returncode != 0:  # the head is not up yet
        return []
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def _wait_nodes(address: str, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        nodes = _nodes(address)
        if len(nodes) >= n:
            return nodes
        time.sleep(1)
    raise AssertionError(f"the cluster did not reach {n} nodes")


class LoopbackCluster:
    """Ray nodes started with ``ray start --block`` (each its own process group, stopped by
    signalling it: never ``ray stop``, which would stop every Ray on the machine)."""

    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], wrap: list[str] | None = None, log: str = "node") -> None:
        env = {**os.environ, **NODES}
        out = open(self.tmp / f"{log}.log", "w")
        self.procs.append(subprocess.Popen([*(wrap or []), RAY, "start", "--block", *args],
                                           stdout=out, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True))

    def stop(self) -> None:
        import signal
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for p in reversed(self.procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def share_nothing(tmp_path_factory, cifar_dir):
    why = _can_unshare()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("cluster")
    hidden = base / "driver"  # the run directories live here; the worker sees an empty tmpfs
    hidden.mkdir()
    logs = tmp_path_factory.mktemp("cluster-logs")
    c = LoopbackCluster(logs)
    c.start(["--head", "--port", str(c.port), "--num-cpus", "0", "--num-gpus", "0",
             "--include-dashboard", "false"], log="head")
    try:
        _wait_nodes(c.address, 1)
        mask = (f"mount -t tmpfs tmpfs {hidden} && mount -t tmpfs tmpfs {cifar_dir} && "
                f"exec \"$@\"")
        c.start(["--address", c.address, "--num-cpus", "1",
                 "--num-gpus", "0"],
                wrap=["unshare", "-m", "--propagation", "private", "sh", "-c", mask, "sh"],
                log="worker")
        nodes = _wait_nodes(c.address, 2)
        worker = next(n["NodeID"] for n in nodes if n["Resources"].get("CPU", 0) > 0)
        yield c, hidden, worker
    finally:
        c.stop()


def _search(address: str, run_dir: Path, cifar_dir: Path, *extra: str,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "igcv_nas.cli.search", "--address", address, "--space", SMALL,
         "--flops", "4M", "--seed", "3", "--epochs", "2", "--train-fraction", "0.004",
         "--batch-size", "16", "--val-size", "100", "--no-asha", "--quiet",
         "--data-dir", str(cifar_dir), "--run-dir", str(run_dir), *extra],
        capture_output=True, text=True, timeout=timeout, env=driver_env())


def test_the_worker_really_cannot_see_the_run_directory_or_the_data(share_nothing, cifar_dir):
    """The topology is what it claims: a task on the worker node finds both folders empty."""
    c, hidden, worker = share_nothing
    (hidden / "probe").write_text("driver's disk")
    code = (
        "import os, ray\n"
        "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as N\n"
        f"ray.init(address={c.address!r}, logging_level='ERROR')\n"
        "@ray.remote(num_cpus=0)\n"
        "def look(paths): return [sorted(os.listdir(p)) for p in paths]\n"
        f"print(ray.get(look.options(scheduling_strategy=N({worker!r}, soft=False))"
        f".remote([{str(hidden)!r}, {str(cifar_dir)!r}])))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **NODES})
    assert r.stdout.strip().splitlines()[-1:] == ["[[], []]"], r.stderr[-2000:]
    assert (hidden / "probe").read_text() == "driver's disk" and any(cifar_dir.iterdir())


def test_a_search_completes_on_a_worker_that_shares_no_disk(share_nothing, cifar_dir):
    c, hidden, worker = share_nothing
    d = hidden / "run"
    r = _search(c.address, d, cifar_dir, "--trials", "2", "--max-concurrent", "1")
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert ("igcv-search: trial checkpoints off: 1 of 2 Ray nodes cannot see the run "
            f"directory's Tune storage {d / 'ray'}") in r.stdout
    df = load_trials(d)
    ran = df[df.node.notna()]
    assert len(ran) == 2 and (ran.status == "complete").all() and (ran.retries == 0).all()
    assert set(ran.node) == {worker}  # the head has no CPU: every training ran on the worker
    assert set(df[df.node.isna()].status) <= {"over-budget", "below-band"}  # never trained


def test_a_trial_that_fits_no_single_node_is_refused_with_the_nodes(share_nothing, cifar_dir):
    c, hidden, _ = share_nothing
    d = hidden / "too-big"
    r = _search(c.address, d, cifar_dir, "--trials", "2", "--cpus-per-trial", "2", timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith("igcv-search: error: a trial asks for 2 CPU on one node, and no "
                             "node of the Ray cluster has that (node ")
    assert err[0].count(": 0 CPU, 0 GPU") == 1 and err[0].count(": 1 CPU, 0 GPU") == 1
    assert not d.exists()


def test_a_storage_path_that_a_node_cannot_see_is_refused_before_anything(share_nothing,
                                                                         cifar_dir):
    c, hidden, worker = share_nothing
    store = hidden / "store"  # on the driver's disk: the worker sees an empty tmpfs there
    store.mkdir()
    d = hidden / "blind"
    r = _search(c.address, d, cifar_dir, "--trials", "1", "--storage-path", str(store),
                timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith(f"igcv-search: error: --storage-path {store}: 1 of 2 Ray nodes "
                             f"cannot see it ({worker[:8]} ")
    assert not d.exists() and list(store.iterdir()) == []  # the probe's marker is gone too


def test_gpu_trials_from_a_cpu_driver_are_placed_by_the_cluster(share_nothing, cifar_dir):
    c, hidden, _ = share_nothing
    import torch
    assert not torch.cuda.is_available()  # the driver has no CUDA
    d = hidden / "gpu-none"
    r = _search(c.address, d, cifar_dir, "--trials", "1", "--gpus-per-trial", "1", timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith("igcv-search: error: a trial asks for 1 CPU and 1 GPU on one node")
    assert not d.exists()
    # a node offering one GPU joins (a resource only: this machine has no CUDA)
    c.start(["--address", c.address, "--num-cpus", "1",
             "--num-gpus", "1"], log="gpu")
    gpu = next(n["NodeID"] for n in _wait_nodes(c.address, 3) if n["Resources"].get("GPU"))
    d = hidden / "gpu"
    r = _search(c.address, d, cifar_dir, "--trials", "1", "--gpus-per-trial", "1",
                "--scheduler", "none")
    assert r.returncode == 3, r.stderr[-3000:]  # every architecture failed
    df = load_trials(d)
    ran = df[df.node.notna()].reset_index()
    assert len(ran) == 1 and ran.status[0] == "failed" and ran.node[0] == gpu
    assert ran.reason[0].startswith(f"on node {gpu[:8]} (")
    assert "device cuda failed" in ran.reason[0] and "CUDA is not available" in ran.reason[0]
    assert r.stderr.strip().splitlines()[-1].startswith(
        "igcv-search: error: every evaluated architecture failed (1 of 1); the first: on node "
        f"{gpu[:8]} (")
