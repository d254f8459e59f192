from __future__ import annotations

import copy
import os

import pytest

# Every Ray the tests start (local instances, ray.cluster_utils clusters, `ray start` nodes)
# uses Ray's token authentication, whatever ~/.ray holds: without RAY_AUTH_MODE, a
# ray.cluster_utils cluster started beside an existing ~/.ray/auth_token (which any earlier local
# ray.init writes) comes up half token-enabled and cancels every actor. The share-nothing and
# head-loss tests start igcv-search *without* the variable, to test that it finds the token.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def tiny_dict() -> dict:
    """8x8 RGB input, stem 3x3/2 to 8 channels, one IGCV1 block (3x3 group conv with 4 groups of
    K_1 = 2, interleave, 1x1 with 2 groups of K_2 = 4: exact, 2 * 4 = 8), no head, 10 classes.
    Costs are worked out by hand in test_cost."""
    return {
        "name": "tiny", "input_size": 8, "num_classes": 10, "act": "relu",
        "stem": {"out_chs": 8, "kernel": 3, "stride": 2},
        "stages": [[{
            "kind": "igc", "in_chs": 8, "residual": False, "require": "relaxed",
            "layers": [
                {"out_chs": 8, "kernel": 3, "stride": 1, "groups": 4,
                 "perm": {"scheme": "interleave", "groups": 4}, "act": False},
                {"out_chs": 8, "kernel": 1, "stride": 1, "groups": 2, "perm": None, "act": True},
            ]}]],
        "head_chs": 0, "dropout": 0.0,
    }


@pytest.fixture
def tiny() -> dict:
    return copy.deepcopy(tiny_dict())


def _repo_root():
    from pathlib import Path
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cifar_dir():
    """The CIFAR-10 copy from ../shared/data in the standard layout: $IGCV_DATA_DIR when it holds
    it (CI prepares it there), else prepared once into <repo>/.data. Never the network."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ.get("IGCV_DATA_DIR")
    for d in ([Path(env)] if env else []) + [_repo_root() / ".data"]:
        if (d / "cifar-10-batches-py" / "test_batch").is_file():
            return d
    script = _repo_root().parent / "shared" / "data" / "prepare_cifar10.py"
    if not script.is_file():
        pytest.skip(f"no CIFAR-10 copy: set IGCV_DATA_DIR or provide {script}")
    out = _repo_root() / ".data"
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    return out
