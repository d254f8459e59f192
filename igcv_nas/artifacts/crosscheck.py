"""Independent counts of a built model, to hold the analytic cost model to account.

fvcore's ``FlopCountAnalysis`` traces the model and counts one fused multiply-add as one flop
for conv and linear layers; by default it also counts batch norm and pooling. Here only its
conv + linear entries are summed, which is the convention of :mod:`igcv_nas.arch.cost` (MobileNetV2
1.0 at 224: 300,774,272; fvcore's default total would be 314,193,216).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

CONV_LINEAR_OPS = ("conv", "linear", "addmm", "matmul")


def fvcore_by_operator(model: nn.Module, input_size: int, in_chs: int = 3) -> dict[str, int]:
    """fvcore's per-operator counts for one ``in_chs x input_size x input_size`` image (eval
    mode)."""
    # fvcore uses torch.jit.script at import (deprecated in torch 2.x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        was_training = model.training
        fca = FlopCountAnalysis(model.eval(), torch.randn(1, in_chs, input_size, input_size))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        out = dict(fca.by_operator())
    model.train(was_training)
    return out


def fvcore_macs(model: nn.Module, input_size: int, in_chs: int = 3) -> int:
    """fvcore's conv + linear multiply-accumulates at batch 1."""
    by_op = fvcore_by_operator(model, input_size, in_chs)
    return sum(v for k, v in by_op.items() if k in CONV_LINEAR_OPS)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
