"""Zero-cost proxies: score an untrained model from one batch, in about a forward+backward.

* ``synflow``   -- Tanaka et al. 2020: with every parameter replaced by its absolute value and
                   an all-ones input (float64, BN in eval mode), ``sum(|theta * dR/dtheta|)``
                   over conv and linear weights, ``R`` the sum of the outputs. Returned as
                   log10 (the raw value overflows quickly with depth).
* ``naswot``    -- Mellor et al. 2021: binary activation codes of every ReLU-like unit for the
                   N images of the batch; ``K[i, j]`` counts units on which images i and j agree;
                   score = log|det K|.
* ``grad_norm`` -- sum of the L2 norms of the conv and linear weight gradients of the
                   cross-entropy loss on the batch (Abdelfattah et al. 2021).

Higher is better for all three. Each works on a copy of the model, so the caller's model (and
its BN statistics) is left untouched.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

_WEIGHTED = (nn.Conv2d, nn.Linear)
_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    m.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    m(ones).sum().backward()
    total = 0.0
    for mod in m.modules():
        if isinstance(mod, _WEIGHTED) and mod.weight.grad is not None:
            total += float((mod.weight * mod.weight.grad).abs().sum().detach())
    return math.log10(total) if total > 0 else float("-inf")


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    m = copy.deepcopy(model).train()
    n = x.shape[0]
    k = torch.zeros((n, n), dtype=torch.float64, device=x.device)

    def hook(_mod, inp, _out):
        c = (inp[0].detach().reshape(n, -1) > 0).double()
        k.add_(c @ c.t() + (1 - c) @ (1 - c).t())

    handles = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, _ACTS)]
    try:
        with torch.no_grad():
            m(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else float("-inf")


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    if y is None:
        raise ValueError("grad_norm needs labels")
    m = copy.deepcopy(model).train()
    m.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    return float(sum(mod.weight.grad.norm() for mod in m.modules()
                     if isinstance(mod, _WEIGHTED) and mod.weight.grad is not None))


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor | None], float]] = {
    "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm,
}


def score(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Score ``model`` with proxy ``name`` on the batch ``x`` (labels ``y`` where needed)."""
    if name not in PROXIES:
        raise ValueError(f"unknown zero-cost proxy {name!r}; accepted: {', '.join(PROXIES)}")
    return PROXIES[name](model, x, y)


def score_all(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
              names: tuple[str, ...] = tuple(PROXIES)) -> dict[str, float]:
    return {n: score(n, model, x, y) for n in names}
