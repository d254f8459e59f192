"""Spec -> torch builder: what is built is what the cost model counts, and it computes what the
spec says (group structure, permutations, residuals, memory formats)."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igcv_nas.arch import cost, zoo
from igcv_nas.nn.build import (ChannelGather, ChannelShuffle, GroupConv, build_block, build_model,
                               make_perm)
from igcv_nas.artifacts.crosscheck import CONV_LINEAR_OPS, fvcore_by_operator, n_params
from igcv_nas.arch.perm import interleave
from igcv_nas.arch.spec import block_from_dict, from_dict
from igcv_nas.arch.validation import check, path_counts

CL = torch.channels_last


def conv_linear_macs(by_op: dict[str, int]) -> int:
    return sum(v for k, v in by_op.items() if k in CONV_LINEAR_OPS)


# ---------------------------------------------------------------------------------------------
# a small network with uneven groups (SeesawNet-style C/4 + 3C/4) and gather permutations

def uneven_igc_block(residual: bool = True, perm: object = "complement") -> dict:
    """igc block on 32 channels: 3x3 conv with uneven groups 8 + 24, then 1x1 with 24 + 8."""
    p = {"scheme": "complement"} if perm == "complement" else perm
    return {"kind": "igc", "in_chs": 32, "residual": residual,
            "require": "relaxed" if perm == "complement" else "none", "layers": [
                {"out_chs": 32, "kernel": 3, "stride": 1, "groups": [[1, 8, 8], [1, 24, 24]],
                 "perm": p, "act": False},
                {"out_chs": 32, "kernel": 1, "groups": [[1, 24, 24], [1, 8, 8]], "perm": None,
                 "act": True}]}


def uneven_net() -> dict:
    down = {"kind": "igc", "in_chs": 32, "layers": [  # uneven in/out ratios, stride 2, 32 -> 48
        {"out_chs": 48, "kernel": 3, "stride": 2, "groups": [[1, 8, 16], [1, 24, 32]],
         "perm": {"scheme": "complement"}, "act": False},
        {"out_chs": 48, "kernel": 1, "groups": 3, "perm": {"scheme": "interleave", "groups": 3},
         "act": True}]}
    v3 = {"kind": "igcv3", "in_chs": 48, "out_chs": 48, "stride": 1, "expand_chs": 192,
          "kernel": 3, "expand_groups": [[1, 16, 64], [1, 32, 128]],
          "project_groups": [[1, 128, 32], [1, 64, 16]], "perm_expand": {"scheme": "complement"},
          "perm_project": list(range(47, -1, -1))}
    return {"name": "uneven", "input_size": 32, "num_classes": 10, "act": "hswish",
            "stem": {"out_chs": 32, "kernel": 3, "stride": 1},
            "stages": [[uneven_igc_block(), down], [v3]], "head_chs": 64, "dropout": 0.0}


# ---------------------------------------------------------------------------------------------
# params and MACs: built model == cost model == fvcore

ZOO_NETS = ["mobilenet_v2", "mobilenet_v2_0.5", "igcv3_d", "igcv3_d_0.7", "igcv2", "igcv2_0.5",
            "mobilenet_v1", "mobilenet_v1_0.75",
            "mobilenet_v2_cifar", "mobilenet_v2_0.5_cifar", "igcv3_d_cifar", "igcv3_d_0.5_cifar",
            "igcv2_cifar", "igcv2_0.5_cifar", "mobilenet_v1_cifar", "mobilenet_v1_0.5_cifar"]


@pytest.mark.integration
@pytest.mark.parametrize("name", ZOO_NETS)
def test_zoo_params_and_macs_match_cost_model(name):
    spec = zoo.get(name)
    model = build_model(spec)
    c = cost.count(spec)
    assert n_params(model) == c.params
    by_op = fvcore_by_operator(model, spec.input_size)
    assert conv_linear_macs(by_op) == c.macs


def test_uneven_network_params_and_macs_match_cost_model():
    spec = from_dict(uneven_net())
    assert check(spec).ok, check(spec).violations
    model = build_model(spec)
    assert n_params(model) == cost.count(spec).params
    assert conv_linear_macs(fvcore_by_operator(model, 32)) == cost.count(spec).macs


@pytest.mark.integration
def test_mobilenet_v2_matches_published_numbers():
    model = build_model(zoo.get("mobilenet_v2"))
    assert n_params(model) == 3_504_872  # torchvision mobilenet_v2
    by_op = fvcore_by_operator(model, 224)
    assert conv_linear_macs(by_op) == 300_774_272  # "300M"
    # fvcore's default total (conv + linear + BN + pooling) of torchvision's model
    assert sum(by_op.values()) == 314_193_216
    assert model.classifier.in_features == 1280 and model.classifier.out_features == 1000
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.2


# ---------------------------------------------------------------------------------------------
# forward: shapes, channels_last

@pytest.mark.parametrize("name", ["mobilenet_v2_0.5_cifar", "igcv3_d_0.5_cifar", "igcv2_0.5_cifar",
                                  "mobilenet_v1_0.5_cifar", "uneven"])
def test_forward_shape_and_channels_last(name):
    spec = from_dict(uneven_net()) if name == "uneven" else zoo.get(name)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(3, spec.in_chs, spec.input_size, spec.input_size)
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (3, spec.num_classes)
        assert torch.isfinite(ref).all()
        # channels_last input only, then model weights channels_last too
        out_input = model(x.contiguous(memory_format=CL))
        model_cl = model.to(memory_format=CL)
        out_both = model_cl(x.contiguous(memory_format=CL))
    torch.testing.assert_close(out_input, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_both, ref, rtol=1e-4, atol=1e-5)


def test_permutations_keep_channels_last():
    """Shuffle and gather keep a channels_last activation channels_last all through a network."""
    spec = from_dict(uneven_net())
    model = build_model(spec).eval().to(memory_format=CL)
    seen = []

    def hook(mod, inp, out):
        assert inp[0].is_contiguous(memory_format=CL)
        assert out.is_contiguous(memory_format=CL), type(mod).__name__
        seen.append(type(mod))

    for m in model.modules():
        if isinstance(m, (ChannelShuffle, ChannelGather)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32).contiguous(memory_format=CL))
    assert ChannelShuffle in seen and ChannelGather in seen


def test_backward_runs_and_activation_from_spec():
    spec = from_dict(uneven_net())
    model = build_model(spec).train()
    assert any(isinstance(m, nn.Hardswish) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    x = torch.randn(4, 3, 32, 32)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # index buffers are not parameters and not saved
    assert not any(k.endswith("index") for k in model.state_dict())


# ---------------------------------------------------------------------------------------------
# permutations

def test_shuffle_fast_path_equals_gather():
    x = torch.arange(12.0).view(1, 12, 1, 1).expand(2, 12, 3, 3).contiguous()
    expected = torch.tensor([0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11], dtype=torch.float32)
    p = interleave(12, 2)
    shuffle, gather = make_perm(p), ChannelGather(p)
    assert isinstance(shuffle, ChannelShuffle) and shuffle.groups == 2
    for t in (x, x.contiguous(memory_format=CL)):
        a, b = shuffle(t), gather(t)
        assert torch.equal(a, b)
        assert torch.equal(a[1, :, 2, 1], expected)
    # random data, G = 3 and G = 4, both memory formats, and the backward pass too
    torch.manual_seed(1)
    for g in (3, 4):
        for fmt in (torch.contiguous_format, CL):
            t = torch.randn(2, 24, 5, 7).contiguous(memory_format=fmt).requires_grad_()
            a, b = ChannelShuffle(g)(t), ChannelGather(interleave(24, g))(t)
            assert torch.equal(a, b)
            w = torch.randn_like(a)
            (ga,) = torch.autograd.grad((a * w).sum(), t)
            (gb,) = torch.autograd.grad((b * w).sum(), t)
            assert torch.equal(ga, gb)
    assert ChannelShuffle(3)(torch.arange(12.0).view(1, 12, 1, 1)).flatten().tolist() == \
        [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]


def test_non_interleave_permutation_uses_gather():
    p = [3, 0, 2, 1, 5, 4]
    m = make_perm(p)
    assert isinstance(m, ChannelGather)
    x = torch.randn(2, 6, 4, 4)
    for t in (x, x.contiguous(memory_format=CL)):
        assert torch.equal(m(t), x[:, p])


# ---------------------------------------------------------------------------------------------
# group convolutions

def test_uneven_group_conv_equals_block_diagonal_dense_conv():
    runs = ((2, 4, 6), (1, 8, 4), (3, 2, 2))  # in 8 + 8 + 6 = 22, out 12 + 4 + 6 = 22
    gc = GroupConv(22, 22, 3, 2, runs)
    assert [c.groups for c in gc.convs] == [2, 1, 3]
    dense = torch.zeros(22, 22, 3, 3)
    i0 = o0 = 0
    for conv, (count, gi, go) in zip(gc.convs, runs):
        for j in range(count):
            dense[o0 + j * go:o0 + (j + 1) * go, i0 + j * gi:i0 + (j + 1) * gi] = \
                conv.weight[j * go:(j + 1) * go].detach()
        i0 += count * gi
        o0 += count * go
    x = torch.randn(2, 22, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(gc(x), F.conv2d(x, dense, stride=2, padding=1))
        torch.testing.assert_close(gc(x.contiguous(memory_format=CL)), gc(x))
    assert n_params(gc) == 9 * (2 * 4 * 6 + 8 * 4 + 3 * 2 * 2)


def test_even_groups_are_one_conv():
    block = build_block(block_from_dict(zoo.igcv3_block(32, 32, 1, 6)), "relu6")
    convs = [op.conv.convs for op in block.ops]
    assert [len(c) for c in convs] == [1, 1, 1]
    assert [c[0].groups for c in convs] == [2, 192, 2]


UNEVEN_BLOCKS = {
    "complement": uneven_igc_block(residual=False),
    "no_perm": uneven_igc_block(residual=False, perm=None),  # block-diagonal: not dense
    "custom": {"kind": "igc", "in_chs": 24, "require": "none", "layers": [
        {"out_chs": 24, "kernel": 3, "groups": [[2, 4, 4], [1, 16, 16]],
         "perm": [1, 9, 17, 2, 10, 18, 3, 11, 19, 4, 12, 20, 5, 13, 21, 6, 14, 22, 7, 15, 23,
                  0, 8, 16], "act": True},
        {"out_chs": 24, "kernel": 1, "groups": [[3, 4, 4], [1, 12, 12]], "perm": None,
         "act": False}]},
    "three_layers": {"kind": "igc", "in_chs": 24, "require": "none", "layers": [
        {"out_chs": 24, "kernel": 3, "groups": 24, "act": False},
        {"out_chs": 24, "kernel": 1, "groups": [[1, 6, 6], [1, 18, 18]],
         "perm": {"scheme": "interleave", "groups": 2}, "act": True},
        {"out_chs": 24, "kernel": 1, "groups": [[4, 6, 6]], "act": False}]},
}


@pytest.mark.parametrize("case", sorted(UNEVEN_BLOCKS))
def test_group_structure_matches_path_counts(case):
    """Perturbing input channel i changes exactly the outputs that have a path from i."""
    spec_block = block_from_dict(UNEVEN_BLOCKS[case])
    paths = path_counts(spec_block.ops)
    torch.manual_seed(2)
    block = build_block(spec_block, "relu6")
    for m in block.modules():  # non-trivial BN statistics, still per-channel
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    block.eval()
    c = spec_block.in_chs
    x = torch.randn(2, c, 8, 8)
    with torch.no_grad():
        y = block(x)
        for i in range(c):
            x2 = x.clone()
            x2[:, i] += 3.0 * torch.randn(2, 8, 8)
            changed = (block(x2) != y).flatten(2).any(-1).any(0)  # per output channel
            assert changed.tolist() == (paths[:, i] > 0).tolist(), f"input channel {i}"
    if case == "no_perm":
        assert (paths == 0).any()  # the check above is not vacuous
    if case == "complement":
        assert (paths > 0).all()


def test_inconsistent_specs_fail_at_build_time():
    bad_chain = uneven_net()
    bad_chain["stages"][1][0]["in_chs"] = 40  # previous block gives 48
    bad_chain["stages"][1][0]["expand_groups"] = [[1, 8, 64], [1, 32, 128]]
    with pytest.raises(ValueError, match="s1.b0: in_chs=40"):
        build_model(from_dict(bad_chain))
    bad_perm = uneven_igc_block(perm=[0, 1, 2])  # 3 indices for 32 channels
    with pytest.raises(ValueError, match="not a permutation"):
        build_block(block_from_dict(bad_perm))


# ---------------------------------------------------------------------------------------------
# residuals

RESIDUAL_BLOCKS = {
    "mbconv": {"kind": "mbconv", "in_chs": 16, "out_chs": 16, "stride": 1, "expand_chs": 96},
    "igcv3": zoo.igcv3_block(16, 16, 1, 6),
    "igc": uneven_igc_block(residual=True),
}


@pytest.mark.parametrize("kind", sorted(RESIDUAL_BLOCKS))
def test_residual_blocks_add_their_input(kind):
    spec_block = block_from_dict(RESIDUAL_BLOCKS[kind])
    assert spec_block.residual
    block = build_block(spec_block, "relu6").eval()
    x = torch.randn(2, spec_block.in_chs, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.ops(x))
        assert not torch.allclose(block(x), x)
        last_bn = block.ops[-1].bn
        last_bn.weight.zero_()
        last_bn.bias.zero_()
        assert torch.equal(block(x), x)  # body outputs exactly 0: the block is the identity


def test_non_residual_blocks_do_not_add():
    strided = block_from_dict(zoo.igcv3_block(16, 16, 2, 6))
    plain = block_from_dict(uneven_igc_block(residual=False))
    assert not strided.residual and not plain.residual
    x = torch.randn(2, 32, 6, 6)
    block = build_block(plain, "relu6").eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.ops(x))
        block.ops[-1].bn.weight.zero_()
        block.ops[-1].bn.bias.zero_()
        assert torch.equal(block(x), torch.zeros_like(x))


def test_stem_and_head_pieces_are_the_networks_modules():
    from igcv_nas.nn.build import build_head, build_stem
    spec = zoo.get("igcv3_d", cifar=True)
    model = build_model(spec).eval()
    stem, head = build_stem(spec).eval(), build_head(spec).eval()
    head.load_state_dict({k.replace("head.", "0.", 1).replace("classifier.", "4.", 1): v
                          for k, v in model.state_dict().items()
                          if k.startswith(("head.", "classifier."))})
    stem.load_state_dict({k[5:]: v for k, v in model.state_dict().items()
                          if k.startswith("stem.")})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), head(model.blocks(stem(x))))
    n = sum(p.numel() for p in stem.parameters()) + sum(p.numel() for p in head.parameters())
    c = cost.count(spec, per_block=True)
    assert n == c.stem.params + c.head.params + c.classifier.params
