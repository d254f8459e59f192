from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from igcv_nas.arch import zoo
from igcv_nas.arch.spec import SpecError, from_dict, from_json, load


@pytest.mark.parametrize("name", ["mobilenet_v2", "igcv3_d_0.7_cifar", "igcv2",
                                  "mobilenet_v1_cifar"])
def test_json_round_trip_is_identity(name):
    spec = zoo.get(name)
    again = from_json(spec.to_json())
    assert again == spec
    assert again.arch_id == spec.arch_id
    assert again.canonical_json() == spec.canonical_json()


def test_id_ignores_name_but_not_architecture(tiny):
    a = from_dict(tiny)
    tiny["name"] = "renamed"
    assert from_dict(tiny).arch_id == a.arch_id
    tiny["stages"][0][0]["layers"][0]["kernel"] = 5
    assert from_dict(tiny).arch_id != a.arch_id
    assert len(a.arch_id) == 16 and int(a.arch_id, 16) >= 0


def test_schemes_are_exported_as_explicit_index_lists(tiny):
    d = from_dict(tiny).to_dict()
    assert d["stages"][0][0]["layers"][0]["perm"] == [0, 2, 4, 6, 1, 3, 5, 7]
    assert d["stages"][0][0]["layers"][0]["groups"] == [[4, 2, 2]]


def test_identity_permutation_is_canonicalised_to_none(tiny):
    tiny["stages"][0][0]["layers"][1]["perm"] = list(range(8))
    a = from_dict(tiny)
    tiny["stages"][0][0]["layers"][1]["perm"] = None
    assert a.stages[0][0].layers[1].perm is None
    assert a.arch_id == from_dict(tiny).arch_id


def test_uneven_groups_runs_are_merged(tiny):
    tiny["stages"][0][0]["layers"][1]["groups"] = [[2, 2], [1, 2, 2], [4, 4]]
    b = from_dict(tiny).stages[0][0]
    assert b.layers[1].groups == ((2, 2, 2), (1, 4, 4))


def test_spec_is_frozen(tiny):
    spec = from_dict(tiny)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.input_size = 32  # type: ignore[misc]


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(colour="red"), "unknown key 'colour'"),
    (lambda d: d["stages"][0][0].update(kind="transformer"), "unknown block kind 'transformer'"),
    (lambda d: d["stages"][0][0]["layers"][0].update(groups=3), "groups=3 must divide in_chs=8"),
    (lambda d: d["stages"][0][0]["layers"][0].update(perm={"scheme": "interleave", "groups": 3}),
     "groups=3 must divide channels=8"),
    (lambda d: d.pop("stem"), "missing key 'stem'"),
    (lambda d: d.update(act="gelu"), "act='gelu'"),
    (lambda d: d.update(input_size="224"), "input_size='224' must be an integer"),
    (lambda d: d["stages"][0][0].update(require="sometimes"), "require='sometimes'"),
])
def test_bad_specs_raise_one_line_errors(tiny, mutate, msg):
    mutate(tiny)
    with pytest.raises(SpecError, match=msg) as e:
        from_dict(tiny)
    assert "\n" not in str(e.value)


def test_load_names_the_file(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"input_size": 32,')
    with pytest.raises(SpecError, match=r"broken.json: spec: malformed JSON at line 1"):
        load(str(p))
    with pytest.raises(SpecError, match="cannot read spec file"):
        load(str(tmp_path / "missing.json"))


def test_spec_validation_and_cost_do_not_import_torch():
    code = ("import sys, igcv_nas, igcv_nas.arch.zoo as z, igcv_nas.arch.cost as c, "
            "igcv_nas.arch.validation as v;"
            "s = z.igcv3_d(); v.validate(s); c.count(s);"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_is_plain_json(tiny):
    text = from_dict(tiny).to_json()
    assert json.loads(text)["format"] == "igcv-nas/spec@1"


def test_with_target_is_the_one_target_transform():
    from igcv_nas.arch import zoo
    from igcv_nas.arch.space import to_cifar
    spec = zoo.igcv3_d()
    assert spec.with_target(160, 100) == replace_target(spec, 160, 100)
    assert spec.with_target() == spec and spec.with_target(None, 10).input_size == 224
    cifar = spec.with_target(32, 10, cifar=True)
    assert cifar.arch_id == zoo.igcv3_d(cifar=True).arch_id == to_cifar(spec).arch_id
    assert cifar.stem.stride == 1 and cifar.stages[1][0].stride == 1
    assert to_cifar(spec, 100, 64) == spec.with_target(64, 100, cifar=True)


def replace_target(spec, input_size, num_classes):
    import dataclasses
    return dataclasses.replace(spec, input_size=input_size, num_classes=num_classes)
