"""A latency table is a data file: a LUT whose numbers are not latencies, whose size or whose
learned-model config would set the amount of work is refused when loaded, in one line naming
the file and the field, and ``igcv-latency`` exits 2 on it within seconds."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from igcv_nas.evaluate.latency import LUT, LatencyError

KEY = "igc|8|8|8|k3|s1|g4"  # any key: the loader does not parse them


@pytest.fixture
def lut_path(tmp_path):
    lut = LUT("cpu", threads=1, statistic="median")
    lut.entries = {KEY: {"ms": 0.12, "p90": 0.15, "min": 0.1, "stable": 0.11, "spread": 0.02},
                   "stem|3|8": {"ms": 0.05, "p90": 0.06, "min": 0.04, "stable": 0.05,
                                "spread": None}}
    lut.calibration = [{"keys": [KEY], "pieces_ms": [0.12], "context_ms": [0.13],
                        "sum_ms": 0.12, "measured_ms": 0.13}]
    path = tmp_path / "lut.json"
    lut.save(path)
    return path


def _edit(path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def test_the_table_as_written_loads(lut_path):
    lut = LUT.load(lut_path)
    assert lut.entries[KEY]["ms"] == 0.12 and len(lut) == 2


@pytest.mark.parametrize("change, says", [
    (lambda d: d["entries"][KEY].update(ms=float("nan")),
     f"entry {KEY!r} field 'ms' is nan; accepted: a finite number of milliseconds >= 0"),
    (lambda d: d["entries"][KEY].update(ms=-1000),
     f"entry {KEY!r} field 'ms' is -1000; accepted: a finite number of milliseconds >= 0"),
    (lambda d: d["entries"][KEY].update(p90=float("inf")),
     f"entry {KEY!r} field 'p90' is inf"),
    (lambda d: d["calibration"][0].update(measured_ms=-3.0),
     "calibration[0].measured_ms is -3.0"),
    (lambda d: d["calibration"][0]["context_ms"].append(float("nan")),
     "calibration[0].context_ms[1] is nan"),
    (lambda d: d.update(correction={"scale": 0.0, "offset_ms": 0.0, "points": 1}),
     "correction {'scale': 0.0, 'offset_ms': 0.0, 'points': 1}; accepted: a finite scale > 0"),
    (lambda d: d.update(learned={"config": {"piece": {"n_estimators": 1e8}}}),
     "learned.config.piece.n_estimators 100000000.0; accepted: an integer from 1 to 2000"),
    (lambda d: d.update(learned={"config": {"context": {"max_depth": 1000}}}),
     "learned.config.context.max_depth 1000; accepted: an integer from 1 to 12"),
    (lambda d: d.update(learned={"config": {"piece": {"loss": "huber"}}}),
     "learned.config.piece.loss: unknown; accepted: n_estimators, learning_rate"),
    (lambda d: d.update(learned={"config": {"min_context_rows": -1}}),
     "learned.config.min_context_rows -1; accepted: an integer from 1 to 1,000,000"),
    (lambda d: d.update(entries={f"k{i}": {"ms": 1.0} for i in range(200_001)}),
     "200,001 entries; accepted: at most 200,000"),
])
def test_a_table_that_is_not_latencies_is_refused_naming_the_field(lut_path, change, says):
    _edit(lut_path, change)
    with pytest.raises(LatencyError) as e:
        LUT.load(lut_path)
    msg = str(e.value)
    assert msg.startswith(f"{lut_path}: malformed LUT (ValueError: ") and says in msg, msg
    assert "\n" not in msg


def test_igcv_latency_exits_2_in_one_line_on_a_hostile_table(lut_path):
    _edit(lut_path, lambda d: d.update(learned={"config": {"piece": {"n_estimators": 1e8}}}))
    before = lut_path.read_bytes()
    r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.latency", "igcv3_d_0.25_cifar",
                        "--lut", str(lut_path)], capture_output=True, text=True, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith(f"igcv-latency: error: {lut_path}: malformed LUT") and \
        "n_estimators" in err[0]
    assert lut_path.read_bytes() == before  # nothing written
