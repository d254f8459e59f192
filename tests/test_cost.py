from __future__ import annotations


from igcv_nas.arch import zoo
from igcv_nas.arch.cost import count, human
from igcv_nas.arch.spec import from_dict


def test_mobilenet_v2_reference_numbers():
    # torchvision mobilenet_v2: 3,504,872 parameters; conv + linear MACs at 224 = 300,774,272
    c = count(zoo.mobilenet_v2())
    assert c.params == 3_504_872
    assert c.macs == 300_774_272
    assert c.flops == 601_548_544


def test_tiny_network_by_hand(tiny):
    c = count(from_dict(tiny), per_block=True)
    # stem 3x3/2, 3->8, out 4x4:      MACs 9*3*8*16 = 3456, params 216 + BN 16
    # layer0 3x3, 4 groups of 2->2:   MACs 9*4*2*2*16 = 2304, params 144 + 16
    # layer1 1x1, 2 groups of 4->4:   MACs 2*4*4*16 = 512,  params 32 + 16
    # classifier 8->10:               MACs 80,              params 80 + 10
    assert c.macs == 3456 + 2304 + 512 + 80
    assert c.params == 232 + 160 + 48 + 90
    assert [(b.label, b.macs, b.params, b.in_res, b.out_res) for b in c.blocks] == [
        ("s0.b0", 2816, 208, 4, 4)]
    # the interleave after layer0 reads and writes 8*4*4 fp32 values
    assert c.perm_bytes == 2 * 4 * 128
    # peak: stem input 3*8*8 + stem output 8*4*4
    assert c.peak_act == 192 + 128


def test_uneven_groups_cost(tiny):
    tiny["stages"][0][0]["layers"][1]["groups"] = [[1, 2, 2], [1, 6, 6]]
    c = count(from_dict(tiny))
    # layer1 weights 2*2 + 6*6 = 40 per pixel, 16 pixels
    assert c.macs == 3456 + 2304 + 40 * 16 + 80
    assert c.params == 232 + 160 + (40 + 16) + 90


def test_strided_odd_resolution_rounds_up(tiny):
    tiny["input_size"] = 9
    tiny["stem"]["stride"] = 1
    tiny["stages"][0][0]["layers"][0]["stride"] = 1
    c = count(from_dict(tiny))
    # 9x9 all the way: stem 9*3*8*81, layer0 144*81, layer1 32*81
    assert c.macs == 9 * 3 * 8 * 81 + 144 * 81 + 32 * 81 + 80


def test_residual_block_holds_its_input_in_peak_memory():
    spec = zoo.mobilenet_v2(cifar=True)
    c = count(spec)
    # largest: s1 (32x32, 24 ch, expanded 144, residual second block): the depthwise runs with
    # input + output 2 * 144 * 1024 plus the held block input 24 * 1024
    assert c.peak_act == (2 * 144 + 24) * 1024


def test_igcv3_d_close_to_published():
    # IGCV3-D: published 318M MACs, 3.5M params (our spec differs in unpublished details,
    # see README); CIFAR form about 2.2M params
    c = count(zoo.igcv3_d())
    assert abs(c.macs - 318e6) / 318e6 < 0.02
    assert abs(c.params - 3.5e6) / 3.5e6 < 0.01
    assert abs(count(zoo.igcv3_d(cifar=True)).params - 2.2e6) / 2.2e6 < 0.02


def test_width_scales_macs_monotonically():
    m = [count(zoo.igcv3_d(w)).macs for w in (0.5, 0.7, 1.0, 1.4)]
    assert m == sorted(m) and len(set(m)) == 4


def test_human():
    assert human(300_774_272) == "300.77M"
    assert human(999) == "999"


def test_stem_and_head_are_conv_ops_costed_like_blocks(tiny):
    from igcv_nas.arch.cost import classifier_cost, ops_cost
    from igcv_nas.arch.spec import ConvOp
    tiny["head_chs"] = 16
    spec = from_dict(tiny)
    assert spec.stem_op == ConvOp(3, 8, 3, 2, ((1, 3, 8),), True)
    assert spec.head_op == ConvOp(8, 16, 1, 1, ((1, 8, 16),), True)
    assert [(label, len(ops)) for label, ops, _ in spec.ops()] == [
        ("stem", 1), ("s0.b0", 2), ("head", 1)]
    c = count(spec, per_block=True)
    # stem 3456 MACs / 232 params (test_tiny_network_by_hand); head 1x1 8->16 on 4x4:
    # MACs 8*16*16 = 2048, params 128 + 32; classifier 16->10: 160 MACs, 170 params
    assert (c.stem.macs, c.stem.params, c.stem.in_res, c.stem.out_res) == (3456, 232, 8, 4)
    assert (c.head.macs, c.head.params, c.head.in_res) == (2048, 160, 4)
    assert (c.classifier.macs, c.classifier.params) == (160, 170) == classifier_cost(16, 10)
    assert ops_cost((spec.stem_op,), 8)[:2] == (3456, 232)
    pieces = [c.stem, *c.blocks, c.head, c.classifier]
    assert sum(p.macs for p in pieces) == c.macs == 3456 + 2816 + 2048 + 160
    assert sum(p.params for p in pieces) == c.params
    # peak: the head's input and output, (8 + 16) * 16 = 384 > the stem's 320
    assert c.peak_act == 384


def test_no_head_conv_feeds_the_last_block_to_the_classifier(tiny):
    spec = from_dict(tiny)
    assert spec.head_op is None and spec.feature_chs == spec.last_chs == 8
    assert [label for label, _, _ in spec.ops()] == ["stem", "s0.b0"]
    c = count(spec, per_block=True)
    assert c.head is None and (c.classifier.macs, c.classifier.params) == (80, 90)
