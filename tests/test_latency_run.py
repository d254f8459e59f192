"""``igcv-latency`` from Python (igcv_nas.evaluate.latency_run) gets the command's guarantees: the
same refusals with the same one-line messages and nothing created, the same report as ``--json``,
the same LUT files. No timing is compared (a busy machine moves every measurement): only what a
report or a file holds besides the times."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from igcv_nas.arch import zoo
from igcv_nas.cli.latency import main
from igcv_nas.errors import IGCVError, InputError
from igcv_nas.evaluate.latency import LUT, LatencyError, MissingKey, build_lut, network_keys
from igcv_nas.evaluate.latency_run import (LUTWriteError, build_lut_file, latency_report,
                                           prepare_lut, sample_networks)
from igcv_nas.arch.space import SpaceError
from igcv_nas.arch.spec import SpecError

NET = "mobilenet_v2_0.5_cifar"
QUICK = {"threads": 1, "warmup": 0, "reps": 2}
QUICK_ARGV = ["--threads", "1", "--warmup", "0", "--reps", "2"]


@pytest.fixture(scope="module")
def lut_file(tmp_path_factory) -> Path:
    """A LUT holding every piece of NET (calibrated on it): predictions need no measuring."""
    lut = build_lut([zoo.get(NET)], calibrate=1, threads=1, warmup=1, reps=2)
    path = tmp_path_factory.mktemp("lut") / "cpu.json"
    lut.save(path)
    return path


def cli_error(argv: list[str], capsys) -> str:
    """The one line igcv-latency prints for ``argv`` (after its ``error:``), checking exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-latency: error: "), err
    return err.removeprefix("igcv-latency: error: ")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _files(d: Path, tiny: dict) -> None:
    """Input files of the refusal cases, made in ``d`` (``tiny``: a valid spec dict)."""
    (d / "bad.json").write_text("{not json")
    (d / "notlut.json").write_text('{"format": "z"}')
    (d / "brokenlut.json").write_text("[1")
    LUT().save(d / "empty.json")                      # cpu, no entries
    LUT(device="cuda:0").save(d / "gpu.json")         # measured on another device
    LUT(statistic="min").save(d / "min.json")         # other settings than the defaults
    tiny["stages"][0][0]["layers"][0]["perm"] = None  # not complementary
    (d / "invalid.json").write_text(json.dumps(tiny))


# (CLI arguments with {d} for the input folder, the same call as library keywords, error class)
REPORT_SAME = [
    ([NET, "--reps", "0"], {"reps": 0}, InputError),
    ([NET, "--threads", "0"], {"threads": 0}, InputError),
    ([NET, "--batch", "0"], {"batch": 0}, InputError),
    ([NET, "--warmup", "-1"], {"warmup": -1}, InputError),
    ([NET, "--rounds", "0"], {"rounds": 0}, InputError),
    ([NET, "--no-measure"], {"measure": False}, InputError),
    ([NET, "--device", "tpu"], {"device": "tpu"}, LatencyError),
    (["no_such_net"], {"source": "no_such_net"}, SpecError),
    (["{d}/bad.json"], {"source": "{d}/bad.json"}, SpecError),
    (["{d}/invalid.json"], {"source": "{d}/invalid.json"}, SpecError),
    ([NET, "--lut", "{d}/absent.json"], {"lut": "{d}/absent.json"}, LatencyError),
    ([NET, "--lut", "{d}/brokenlut.json"], {"lut": "{d}/brokenlut.json"}, LatencyError),
    ([NET, "--lut", "{d}/notlut.json"], {"lut": "{d}/notlut.json"}, LatencyError),
    ([NET, "--lut", "{d}/gpu.json", "--device", "cpu"],
     {"lut": "{d}/gpu.json", "device": "cpu"}, LatencyError),
    ([NET, "--lut", "{d}/empty.json", "--no-measure"],
     {"lut": "{d}/empty.json", "measure": False}, MissingKey),
]

BUILD_SAME = [
    (["--n", "-1"], {"n": -1}, InputError),
    (["--calibrate", "-1"], {"calibrate": -1}, InputError),
    (["--reps", "0"], {"reps": 0}, InputError),
    (["--device", "tpu"], {"device": "tpu"}, LatencyError),
    (["--space", "nope"], {"spaces": ["nope"]}, SpaceError),
    (["--zoo", "nope", "--n", "0"], {"zoo": ["nope"], "n": 0}, SpecError),
    (["--n", "0"], {"n": 0}, InputError),
    (["--zoo", NET, "--n", "0", "--out", "{d}/min.json"],
     {"zoo": [NET], "n": 0, "out": "{d}/min.json"}, LatencyError),
]


def _fill(v, d: Path):
    if isinstance(v, str):
        return v.replace("{d}", str(d))
    if isinstance(v, list):
        return [_fill(x, d) for x in v]
    return v


@pytest.mark.parametrize("argv,kw,cls", REPORT_SAME, ids=[" ".join(a) for a, _, _ in REPORT_SAME])
def test_report_refuses_what_the_cli_refuses_with_its_message(argv, kw, cls, tmp_path, capsys,
                                                              tiny):
    d = tmp_path / "in"
    d.mkdir()
    _files(d, tiny)
    before = snapshot(tmp_path)
    expected = cli_error([*QUICK_ARGV, *_fill(argv, d)], capsys)
    assert snapshot(tmp_path) == before
    kw = {k: _fill(v, d) for k, v in kw.items()}
    with pytest.raises(cls) as e:
        latency_report(kw.pop("source", NET), **{**QUICK, **kw})
    assert one_line(e.value) == expected and isinstance(e.value, IGCVError)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv,kw,cls", BUILD_SAME, ids=[" ".join(a) for a, _, _ in BUILD_SAME])
def test_prepare_lut_refuses_what_build_lut_refuses_with_its_message(argv, kw, cls, tmp_path,
                                                                    capsys, tiny):
    d = tmp_path / "in"
    d.mkdir()
    _files(d, tiny)
    before = snapshot(tmp_path)
    argv = _fill(argv, d)
    out = [] if "--out" in argv else ["--out", str(tmp_path / "o.json")]
    expected = cli_error(["build-lut", *QUICK_ARGV, *argv, *out], capsys)
    assert snapshot(tmp_path) == before
    kw = {k: _fill(v, d) for k, v in kw.items()}
    with pytest.raises(cls) as e:
        prepare_lut(kw.pop("out", tmp_path / "o.json"), **{**QUICK, **kw})
    assert one_line(e.value) == expected and isinstance(e.value, IGCVError)
    assert snapshot(tmp_path) == before


def test_an_existing_lut_of_other_settings_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "min.json"
    LUT(statistic="min").save(path)
    data = path.read_bytes()
    with pytest.raises(LatencyError, match="statistic=min .*use another --out"):
        prepare_lut(path, zoo=[NET], n=0)
    assert path.read_bytes() == data


@pytest.mark.parametrize("call", [
    lambda: latency_report(NET, amp="int8"),
    lambda: prepare_lut("x.json", amp="int8"),
    lambda: prepare_lut("x.json", statistic="mean"),
])
def test_what_argparse_refuses_for_the_cli_the_library_refuses_itself(call, tmp_path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="accepted: "):
        call()
    assert list(tmp_path.iterdir()) == []


def test_predicted_report_is_what_the_cli_prints_as_json(lut_file, capsys):
    data = lut_file.read_bytes()
    assert main([NET, "--lut", str(lut_file), "--no-measure", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    r = latency_report(NET, lut=str(lut_file), measure=False)
    assert r == printed  # nothing measured: the same numbers
    assert r["lut"]["measured_now"] == 0 and r["predicted_ms"] > 0 and "measured" not in r
    assert lut_file.read_bytes() == data  # nothing new: the file is not rewritten
    # a spec object is the same network as its zoo name
    assert latency_report(zoo.get(NET), lut=lut_file, measure=False) == r


def test_measured_report_has_the_cli_fields_and_the_luts_settings(lut_file, capsys):
    assert main([NET, "--lut", str(lut_file), "--json", "--reps", "4", "--warmup", "0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    r = latency_report(NET, lut=lut_file, reps=4, warmup=0)
    assert list(r) == list(printed)  # same fields, same order
    assert {k: v for k, v in r["measured"].items() if not k.endswith("_ms") and k != "spread"} \
        == {k: v for k, v in printed["measured"].items()
            if not k.endswith("_ms") and k != "spread"}
    lut = LUT.load(lut_file)
    m = r["measured"]  # measured with the LUT's settings, not the defaults
    assert (m["device"], m["threads"], m["batch"], m["reps"], m["rounds"]) == \
        (lut.device, lut.threads, lut.batch, 4, lut.rounds)
    # without a LUT: the caller's settings, and no prediction
    r = latency_report(NET, batch=2, reps=2, warmup=0, rounds=1, threads=1)
    assert "predicted_ms" not in r and "lut" not in r
    assert (r["measured"]["batch"], r["measured"]["rounds"], r["measured"]["threads"]) == (2, 1, 1)


def test_missing_pieces_are_measured_into_the_file_as_the_cli_does(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    LUT(threads=1).save(a)
    LUT(threads=1).save(b)
    assert main([NET, "--lut", str(a), "--no-measure", "--json"]) == 2  # nothing to predict from
    capsys.readouterr()
    assert main([NET, "--lut", str(a), "--json", *QUICK_ARGV]) == 0
    printed = json.loads(capsys.readouterr().out)
    r = latency_report(NET, lut=b, **QUICK)
    keys = set(network_keys(zoo.get(NET)))
    assert r["lut"]["measured_now"] == printed["lut"]["measured_now"] == len(keys)
    assert set(LUT.load(a).entries) == set(LUT.load(b).entries) == keys
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # atomic


def test_build_lut_file_writes_what_build_lut_writes(tmp_path, capsys):
    argv = ["--space", "igcv3", "--n", "1", "--cifar", "--seed", "3", "--zoo", NET,
            "--calibrate", "1", *QUICK_ARGV]
    assert main(["build-lut", "--out", str(tmp_path / "cli.json"), *argv]) == 0
    capsys.readouterr()
    seen: list[tuple[int, int]] = []
    built = build_lut_file(tmp_path / "lib.json", progress=lambda i, n, s: seen.append((i, n)),
                           spaces=["igcv3"], n=1, cifar=True, seed=3, zoo=[NET], calibrate=1,
                           **QUICK)
    assert seen == [(1, 2), (2, 2)] and built.networks == 2
    cli, lib = (json.loads((tmp_path / f).read_text()) for f in ("cli.json", "lib.json"))
    assert set(cli["entries"]) == set(lib["entries"]) and len(built.lut) == len(lib["entries"])
    timing = {"entries", "calibration", "correction", "build_s", "learned"}
    assert {k: v for k, v in cli.items() if k not in timing} == \
        {k: v for k, v in lib.items() if k not in timing}
    assert len(cli["calibration"]) == len(lib["calibration"]) == 1
    # the sampled networks are the command's: the zoo network, then the space's draws
    want = {k for s in [zoo.get(NET), *sample_networks(["igcv3"], 1, True, 3)]
            for k in network_keys(s)}
    assert set(lib["entries"]) == want
    # an existing file with the same settings is extended, nothing re-measured
    prep = prepare_lut(tmp_path / "lib.json", zoo=[NET], n=0, calibrate=0, **QUICK)
    assert prep.existing is not None and prep.run().measured_now == 0


def test_a_lut_the_os_refuses_is_one_line_as_in_the_cli(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "lut.json"  # below a regular file: no folder can be made
    argv = ["build-lut", "--out", str(out), "--zoo", NET, "--n", "0", "--calibrate", "0",
            *QUICK_ARGV]
    assert main(argv) == 2  # found before measuring: no progress line
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    expected = err[0].removeprefix("igcv-latency: error: ")
    assert expected == f"{out}: cannot write LUT (Not a directory)"
    with pytest.raises(LUTWriteError) as e:
        prepare_lut(out, zoo=[NET], n=0, calibrate=0, **QUICK)
    assert one_line(e.value) == expected and isinstance(e.value, OSError)
    assert snapshot(tmp_path) == {"file": b"x"}
    # a directory as --out: refused the same way, the directory untouched
    (tmp_path / "d").mkdir()
    with pytest.raises(LUTWriteError) as e:
        prepare_lut(tmp_path / "d", zoo=[NET], n=0, calibrate=0, **QUICK)
    assert one_line(e.value) == f"{tmp_path / 'd'}: cannot write LUT (Is a directory)"
    assert snapshot(tmp_path) == {"file": b"x"} and list((tmp_path / "d").iterdir()) == []
