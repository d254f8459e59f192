"""One base error for bad input; anything else is reported as a bug (no Ray, no training)."""
from __future__ import annotations

import pytest

from igcv_nas.cli._common import run_cli
from igcv_nas.evaluate.data import DataError
from igcv_nas.errors import IGCVError, InputError
from igcv_nas.search.runstore import RunError
from igcv_nas.search.settings import SearchError
from igcv_nas.arch.space import SpaceError
from igcv_nas.arch.spec import SpecError
from igcv_nas.evaluate.train import TrainConfig
from igcv_nas.units import parse_count
from igcv_nas.arch.validation import ValidationError


@pytest.mark.parametrize("cls", [SpecError, SpaceError, ValidationError, DataError, SearchError,
                                 RunError, InputError])
def test_every_input_error_has_the_one_base(cls):
    assert issubclass(cls, IGCVError)


def test_bad_values_raise_input_errors_that_are_still_value_errors():
    with pytest.raises(InputError, match="lr=-1 must be a finite number >= 0"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="--flops 'abc' is not a count"):
        parse_count("abc", "--flops")


def _boom(argv):
    raise KeyError("a bug")


def _bad(argv):
    raise SearchError("--trials 0; accepted: an integer >= 1")


def test_cli_maps_input_errors_to_exit_2_and_bugs_to_internal_error(capsys):
    assert run_cli("igcv-x", _bad, []) == 2
    assert capsys.readouterr().err == "igcv-x: error: --trials 0; accepted: an integer >= 1\n"
    assert run_cli("igcv-x", _boom, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("igcv-x: internal error: KeyError: 'a bug' (a bug in igcv-nas, not in "
                          "your input; rerun with --debug for the traceback)")
    assert len(err.splitlines()) == 1
    with pytest.raises(KeyError):
        run_cli("igcv-x", _boom, ["--debug"])


def test_a_real_cli_accepts_debug(capsys):
    from igcv_nas.cli.inspect import main
    assert main(["tiny_does_not_exist", "--debug"]) == 2
    assert "igcv-inspect: error:" in capsys.readouterr().err


def test_latency_export_zoo_and_key_errors_have_the_one_base():
    from igcv_nas.artifacts.export import ExportError
    from igcv_nas.evaluate.latency import LatencyError, MissingKey
    from igcv_nas.evaluate.latency_model import KeyFormatError
    from igcv_nas.arch.validation import CheckTooLarge
    from igcv_nas.arch.zoo import ZooError
    for cls in (LatencyError, MissingKey, ExportError, ZooError, CheckTooLarge):
        assert issubclass(cls, IGCVError), cls
    assert issubclass(KeyFormatError, InputError)
    # the builtin bases callers may catch are kept
    assert issubclass(LatencyError, ValueError) and issubclass(MissingKey, KeyError)
    assert issubclass(ExportError, RuntimeError)


def test_bad_arguments_of_public_functions_are_input_errors():
    from igcv_nas.arch import zoo
    from igcv_nas.nn.build import make_act
    from igcv_nas.arch.space import load_space
    with pytest.raises(InputError, match="unknown activation 'gelu'"):
        make_act("gelu")
    with pytest.raises(InputError, match="which='mid'; accepted: min, max"):
        load_space("igcv3").extreme_params("mid")
    with pytest.raises(IGCVError, match="^unknown zoo network 'nope'"):
        zoo.scale_to_macs("nope", 10**6)


def test_igcv_latency_maps_latency_errors_to_exit_2_and_bugs_to_internal_error(
        capsys, monkeypatch):
    from igcv_nas.evaluate import latency
    from igcv_nas.cli.latency import main
    assert main(["mobilenet_v2_cifar", "--no-measure", "--lut", "/nonexistent/lut.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("igcv-latency: error: /nonexistent/lut.json: cannot read LUT file")
    assert main(["mobilenet_v2_cifar", "--threads", "0"]) == 2
    assert capsys.readouterr().err == ("igcv-latency: error: --threads 0; accepted: an "
                                       "integer from 1 to 256\n")

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(latency, "measure", boom)
    assert main(["mobilenet_v2_cifar", "--reps", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("igcv-latency: internal error: ZeroDivisionError: a bug")
    with pytest.raises(ZeroDivisionError):
        main(["mobilenet_v2_cifar", "--reps", "1", "--debug"])
