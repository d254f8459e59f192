"""The block-kind registry: a new kind registered in one place (this file) is read, written,
costed, validated, sampled by a space that names it, made CIFAR-form and built -- with no edit to
the package."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import optuna
import pytest
from optuna.trial import FixedTrial

from igcv_nas.arch.blocks import (BLOCK_KINDS, BlockKind, ConvOp, SpaceKey, SpecError, block_kind,
                                  block_kinds, check_keys, read_int, register_block_kind,
                                  unregister_block_kind, unstrided)
from igcv_nas.arch.cost import count
from igcv_nas.arch.space import load_space
from igcv_nas.arch.spec import block_from_dict, from_dict, from_json
from igcv_nas.arch.validation import check

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------
# the toy kind, in one place: dense 1x1 conv (+ act), then a kxk depthwise conv that carries
# the stride (+ act when dw_act); residual where stride 1 and in == out. It adds a space key.

@dataclass(frozen=True)
class PWDWBlock:
    in_chs: int
    out_chs: int
    stride: int
    kernel: int = 3
    dw_act: bool = True
    kind: str = field(default="pwdw", init=False)
    ops: tuple[ConvOp, ...] = field(init=False, repr=False, compare=False)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_chs == self.out_chs

    def __post_init__(self) -> None:
        c = self.out_chs
        object.__setattr__(self, "ops", (
            ConvOp(self.in_chs, c, 1, 1, ((1, self.in_chs, c),), True),
            ConvOp(c, c, self.kernel, self.stride, ((c, 1, 1),), self.dw_act)))

    def to_dict(self) -> dict:
        return {"kind": "pwdw", "in_chs": self.in_chs, "out_chs": self.out_chs,
                "stride": self.stride, "kernel": self.kernel, "dw_act": self.dw_act}


def _pwdw_parse(d: dict, where: str) -> PWDWBlock:
    cin = read_int(d, "in_chs", where)
    cout, s = read_int(d, "out_chs", where), read_int(d, "stride", where)
    k = read_int(d, "kernel", where, 3)
    act = d.get("dw_act", True)
    if not isinstance(act, bool):
        raise SpecError(f"{where}: dw_act={act!r} must be true or false")
    return PWDWBlock(cin, cout, s, k, act)


def _pwdw_space(c_in, c_out, stride, ch, require, perms=True) -> dict:
    return {"kind": "pwdw", "in_chs": c_in, "out_chs": c_out, "stride": stride,
            "kernel": ch["kernel"], "dw_act": ch["dw_act"]}


def _pwdw_check(b: PWDWBlock, label: str) -> list[tuple[str, str]]:
    return [] if b.kernel > 1 else [(label, "a pwdw block needs a spatial depthwise conv")]


PWDW = BlockKind(
    "pwdw", PWDWBlock, keys=("in_chs", "out_chs", "stride", "kernel", "dw_act"),
    optional=("kernel", "dw_act"), parse=_pwdw_parse, space_keys=("kernel", "dw_act"),
    space_dict=_pwdw_space, check=_pwdw_check,
    new_space_keys={"dw_act": SpaceKey(lambda v: v if isinstance(v, bool) else None,
                                       "true | false", (True,))})


@pytest.fixture
def pwdw():
    register_block_kind(PWDW)
    try:
        yield PWDW
    finally:
        unregister_block_kind("pwdw")


# ---------------------------------------------------------------------------------------------

TINY = {"input_size": 32, "num_classes": 10, "act": "relu", "head_chs": 0, "dropout": 0.0,
        "stem": {"out_chs": 8, "kernel": 3, "stride": 2},
        "stages": [[{"kind": "pwdw", "in_chs": 8, "out_chs": 16, "stride": 2}]]}


def test_builtins_registered_in_order():
    assert block_kinds() == BLOCK_KINDS == ("igc", "igcv3", "mbconv", "dwsep")
    assert block_kind("igcv3").space_keys == ("expand", "kernel", "g1", "g2")
    assert block_kind("igc").required == ("in_chs", "layers")


def test_registry_refusals(pwdw):
    with pytest.raises(ValueError, match="'pwdw' is already registered"):
        register_block_kind(PWDW)
    with pytest.raises(ValueError, match="'mbconv' is built in"):
        unregister_block_kind("mbconv")
    with pytest.raises(ValueError, match="other than stem and head"):
        register_block_kind(BlockKind("stem", PWDWBlock, (), (), _pwdw_parse, (), _pwdw_space))
    assert block_kinds() == BLOCK_KINDS + ("pwdw",)


def test_unregistered_kind_is_refused_with_the_registered_ones():
    with pytest.raises(SpecError, match=r"s0\.b0: unknown block kind 'pwdw'; accepted: igc, "
                                        r"igcv3, mbconv, dwsep$"):
        from_dict(TINY)


def test_parses_and_round_trips(pwdw):
    spec = from_dict(TINY)
    b = spec.stages[0][0]
    assert b == PWDWBlock(8, 16, 2, 3, True)
    assert b.to_dict() == {"kind": "pwdw", "in_chs": 8, "out_chs": 16, "stride": 2, "kernel": 3,
                           "dw_act": True}
    again = from_json(spec.to_json())
    assert again == spec and again.arch_id == spec.arch_id
    assert block_from_dict(b.to_dict()) == b
    # the generic key checks use the kind's keys
    with pytest.raises(SpecError, match="unknown key 'groups'; accepted: dw_act, in_chs, kernel, "
                                        "kind, out_chs, stride"):
        block_from_dict({**b.to_dict(), "groups": 2})
    with pytest.raises(SpecError, match="missing key 'out_chs'"):
        block_from_dict({"kind": "pwdw", "in_chs": 8, "stride": 1})
    with pytest.raises(SpecError, match="dw_act=1 must be true or false"):
        block_from_dict({**b.to_dict(), "dw_act": 1})
    check_keys(b.to_dict(), PWDW.accepted, "x", PWDW.required)


def test_costs_by_hand(pwdw):
    c = count(from_dict(TINY))
    # stem 3->8 k3 at 16x16; 1x1 8->16 at 16x16; depthwise 3x3 of 16 channels stride 2 at 8x8;
    # classifier 16 -> 10
    assert c.macs == 3 * 8 * 9 * 16 * 16 + 8 * 16 * 16 * 16 + 16 * 9 * 8 * 8 + 16 * 10 == 97_440
    # conv weights + BN weight and bias per conv, classifier weight + bias
    assert c.params == (216 + 16) + (128 + 32) + (144 + 32) + (160 + 10) == 738


def test_validates_with_its_own_check(pwdw):
    rep = check(from_dict(TINY))
    assert rep.ok and [b.mode for b in rep.blocks] == ["exact"]  # one path per (out, in) pair
    assert rep.blocks[0].kind == "pwdw" and rep.blocks[0].balance is None
    bad = dict(TINY, stages=[[{**TINY["stages"][0][0], "kernel": 1}]])
    assert [str(v) for v in check(from_dict(bad)).violations] == [
        "s0.b0: a pwdw block needs a spatial depthwise conv"]


def test_cifar_form_unstrides_it(pwdw):
    b = PWDWBlock(8, 16, 2)
    assert unstrided(b) == PWDWBlock(8, 16, 1)
    d = dict(TINY, stages=[[{"kind": "mbconv", "in_chs": 8, "out_chs": 8, "stride": 1}],
                           TINY["stages"][0]])
    assert from_dict(d).with_target(32, 10, cifar=True).stages[1][0].stride == 1


SPACE = """\
    format: igcv-nas/space@1
    name: toy
    complementary: relaxed
    target: {input_size: 32, num_classes: 10}
    act: relu
    dropout: 0.0
    stem: {out_chs: 8, kernel: 3, stride: 1}
    head_chs: 0
    block: {kind: [pwdw, mbconv], kernel: [3, 5], expand: [2, 4]}
    stages:
      - {width: [8, 16], depth: [1, 2], stride: 1, dw_act: [true, false]}
      - {width: 16, depth: 1, stride: 2, kind: pwdw}
"""


def test_a_space_that_names_it_samples_it(pwdw, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(textwrap.dedent(SPACE))
    sp = load_space(path)
    dims = sp.dimensions()
    assert dims["s0.b0.kind"] == ("pwdw", "mbconv")
    assert dims["s0.b1.dw_act"] == (True, False) and dims["s1.b0.kernel"] == (3, 5)
    assert "s1.b0.dw_act" not in dims  # default (true): one choice, not asked
    params = {"s0.width": 16, "s0.depth": 2, "s0.b0.kind": "pwdw", "s0.b0.kernel": 5,
              "s0.b0.dw_act": False, "s0.b1.kind": "mbconv", "s0.b1.kernel": 3,
              "s0.b1.expand": 4, "s1.b0.kernel": 3}
    spec = sp.sample(FixedTrial(params))
    assert spec.stages[0][0] == PWDWBlock(8, 16, 1, 5, False)
    assert spec.stages[0][1].kind == "mbconv" and spec.stages[1][0] == PWDWBlock(16, 16, 2)
    assert check(spec).ok
    # size: stage 0 has 2 widths x (n + n^2), n = pwdw 2 kernels x 2 dw_act + mbconv 2 x 2;
    # stage 1 one width, one depth, 2 kernels
    assert sp.size() == 2 * (8 + 8 ** 2) * 1 * 2
    # the exact bounds are attained by their parameters
    for side, which in ((0, "min"), (1, "max")):
        best = sp.macs_range()[side][0]
        assert count(sp.sample(FixedTrial(sp.extreme_params(which)))).macs == best
    # the new key is refused where no kind asks it, with the key's own message elsewhere
    bad = SPACE.replace("kind: pwdw}", "kind: mbconv, dw_act: true}")
    path.write_text(textwrap.dedent(bad))
    with pytest.raises(ValueError, match=r"stages\[1\]\.dw_act: not used by kind \['mbconv'\]"):
        load_space(path)
    path.write_text(textwrap.dedent(SPACE.replace("[true, false]", "[yes, 1]")))
    with pytest.raises(ValueError, match=r"dw_act=1 is not accepted; expected true \| false"):
        load_space(path)


def test_builds_and_the_built_model_matches_the_cost(pwdw):
    torch = pytest.importorskip("torch")
    from igcv_nas.nn.build import build_model
    from igcv_nas.evaluate.latency_model import kind_code

    spec = from_dict(TINY)
    model = build_model(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == count(spec).params
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert kind_code("pwdw") == 2 + len(BLOCK_KINDS) == 6
