"""igcv_nas.arch.inspection: the report of igcv-inspect as a call -- the same report as ``--json``,
the same one-line refusals, a violation reported rather than raised."""
from __future__ import annotations

import json

import pytest

from igcv_nas.arch import zoo
from igcv_nas.cli.inspect import main
from igcv_nas.arch.cost import count
from igcv_nas.errors import InputError
from igcv_nas.arch.inspection import inspect_spec, rows
from igcv_nas.arch.spec import SpecError


def cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-inspect: error: "), err
    return err.removeprefix("igcv-inspect: error: ")


@pytest.mark.parametrize("argv,kw", [
    (["mobilenet_v2", "--json"], {}),
    (["igcv3_d", "--target", "32", "--classes", "10", "--json"], {"target": 32, "classes": 10}),
])
def test_the_report_is_what_json_prints(argv, kw, capsys):
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    r = inspect_spec(argv[0], **kw)
    assert r == printed and r["valid"]
    c = count(zoo.get(argv[0]).with_target(kw.get("target"), kw.get("classes")))
    assert sum(x["macs"] for x in rows(r)) == r["macs"] == c.macs
    assert sum(x["params"] for x in rows(r)) == r["params"] == c.params
    assert inspect_spec(zoo.get(argv[0]), **kw) == r  # a spec object: the same report


@pytest.mark.parametrize("argv,kw,cls", [
    (["nosuchnet"], {}, SpecError),
    (["mobilenet_v2", "--target", "0"], {"target": 0}, InputError),
    (["mobilenet_v2", "--classes", "-3"], {"classes": -3}, InputError),
])
def test_library_refuses_what_the_cli_refuses_with_its_message(argv, kw, cls, capsys):
    expected = cli_error(argv, capsys)
    with pytest.raises(cls) as e:
        inspect_spec(argv[0], **kw)
    assert " ".join(str(e.value).split()) == expected


def test_a_bad_spec_file_is_the_same_error(tmp_path, capsys):
    p = tmp_path / "s.json"
    p.write_text('{"input_size": 8,')
    expected = cli_error([str(p)], capsys)
    with pytest.raises(SpecError) as e:
        inspect_spec(p)  # a path object as well as a string
    assert " ".join(str(e.value).split()) == expected and "malformed JSON" in expected


def test_a_violation_is_reported_not_raised(tmp_path, tiny, capsys):
    tiny["stages"][0][0]["layers"][0]["perm"] = None  # not complementary
    p = tmp_path / "s.json"
    p.write_text(json.dumps(tiny))
    r = inspect_spec(str(p))
    assert not r["valid"] and "stem" not in r and rows(r) == r["blocks"]
    assert "complementary condition violated" in r["violations"][0]
    assert main([str(p), "--json"]) == 2
    assert json.loads(capsys.readouterr().out) == r


@pytest.mark.parametrize("kw", [{"target": "32"}, {"classes": 2.5}, {"target": True}])
def test_values_only_python_can_give_are_refused(kw):
    with pytest.raises(InputError, match="must be a positive integer"):
        inspect_spec("mobilenet_v2", **kw)
    with pytest.raises(SpecError, match="spec 42; accepted: a NetworkSpec"):
        inspect_spec(42)  # type: ignore[arg-type]
