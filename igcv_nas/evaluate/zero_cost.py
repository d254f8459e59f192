"""Zero-cost proxies: score an untrained model from one batch, in about a forward+backward.

Each proxy is ``f(model, x, y) -> float``, higher is better, and works on a deep copy of the model:
the caller's parameters, gradients and BN statistics are left untouched. The caller
(:func:`igcv_nas.evaluate.proxy.zero_cost_scores`) passes one batch of normalised images (64 by
default).

* ``synflow``   -- Tanaka et al., "Pruning neural networks without any data by iteratively
  conserving synaptic flow", NeurIPS 2020, as used for NAS by Abdelfattah et al., "Zero-Cost
  Proxies for Lightweight NAS", ICLR 2021. On a copy of the model with every BatchNorm removed
  (identity), every ReLU-family activation (ReLU, ReLU6, Hardswish, SiLU) linearised (identity),
  dropout off, in float64, every parameter replaced by its absolute value, and an all-ones
  input of one sample of the batch's shape::

      R = sum(f(1))      synflow = log10( sum over conv and linear weights theta of
                                          |theta * dR/dtheta| )

  (weights only, as Abdelfattah et al.; biases stay, absolute, in the network). With
  non-negative weights and input and no BN, ReLU is already the identity; linearising ReLU6,
  Hardswish and SiLU as well makes the value the synaptic flow of the linear network the paper
  analyses, instead of ReLU6 clipping most units at 6 (with BN and the activations kept, 15 of
  20 architectures of ``mixed`` near 50M MACs scored 2.781-2.791; now they span 8.5-14.2, and
  more blocks give more: depth dominates the value). The raw value is the product of
  the layer gains and grows by orders of magnitude with depth, hence log10. **Overflow guard**:
  for an :class:`~igcv_nas.nn.build.IGCNet` the output of the stem, of every block and of the head
  is divided by its (detached) mean ``s_k`` during the forward pass; the linearised network is
  positively homogeneous between those points (residual blocks included: ``x + body(x)`` is
  linear in ``x``) and only the classifier has a bias, which does not enter ``dR/dtheta``, so
  ``synflow = log10(sum |theta * dR'/dtheta|) + sum_k log10(s_k)`` exactly (``R'`` the sum of
  the rescaled output) and no intermediate value exceeds a block's gain. Other models are
  scored without rescaling (float64 then overflows after ~300 decades).
* ``naswot``    -- Mellor et al., "Neural Architecture Search without Training", ICML 2021:
  binary activation codes of every ReLU-like unit for the N images of the batch; ``K[i, j]``
  counts units on which images i and j agree; score = log|det K|.
* ``grad_norm`` -- Abdelfattah et al. 2021: sum over conv and linear layers of the L2 norm of
  the weight gradient of the cross-entropy loss on the batch (model in train mode). A sum of
  per-layer norms: it **grows with depth** (more layers, more terms) whatever the quality of
  the network, so across architectures of different depth it largely counts layers.
* ``zico``      -- Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on
  Gradients", ICLR 2023 (the paper claims it beats #params, which most earlier proxies do not).
  The batch is split into ``ZICO_BATCHES`` (2) equal mini-batches ``b``; for each, the
  cross-entropy gradient ``g_b`` of every conv/linear weight (model in train mode, dropout off,
  gradients zeroed between mini-batches, so each ``g_b`` is one mini-batch's gradient as the
  paper defines it)::

      zico = sum over layers l of  ln( sum over weights theta of layer l of
                                       mean_b |g_b(theta)| / std_b g_b(theta) )

  ``std`` the population standard deviation over the mini-batches (as the authors' code);
  weights whose gradient has zero spread are left out of the inner sum, and a layer whose inner
  sum is 0 adds nothing. Size-aware by construction: the inner sum grows with the weights of a
  layer and the outer sum with the number of layers.

All proxies are deterministic for a fixed model and batch on CPU (dropout is switched off where
the model is run in train mode for gradients).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

_WEIGHTED = (nn.Conv2d, nn.Linear)
_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU)
_NORMS = (nn.modules.batchnorm._BatchNorm,)
_DROPOUT = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout)

#: mini-batches the batch is split into for ``zico`` (the authors use two batches)
ZICO_BATCHES = 2


def _replace_modules(model: nn.Module, types: tuple[type, ...]) -> None:
    """Replace (in place) every submodule of one of ``types`` by ``nn.Identity``."""
    for name, child in list(model.named_children()):
        if isinstance(child, types):
            setattr(model, name, nn.Identity())
        else:
            _replace_modules(child, types)


def _dropout_off(model: nn.Module) -> nn.Module:
    for mod in model.modules():
        if isinstance(mod, _DROPOUT):
            mod.eval()
    return model


def _chain_points(model: nn.Module) -> list[nn.Module]:
    """Modules between which the linearised ``model`` is positively homogeneous (see synflow)."""
    from ..nn.build import IGCNet
    if not isinstance(model, IGCNet):
        return []
    points = [model.stem, *model.blocks]
    return points + [model.head] if model.head is not None else points


def _synflow(model: nn.Module, x: torch.Tensor, rescale: bool = True) -> float:
    m = copy.deepcopy(model)
    _replace_modules(m, _NORMS + _ACTS)
    m = m.double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    m.zero_grad(set_to_none=True)
    log_scale: list[float] = []

    def normalise(_mod, _inp, out):
        s = float(out.detach().mean())
        if not (s > 0 and math.isfinite(s)):
            return None
        log_scale.append(math.log10(s))
        return out / s

    handles = [p.register_forward_hook(normalise) for p in (_chain_points(m) if rescale else [])]
    try:
        ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
        m(ones).sum().backward()
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        total = math.fsum(float((mod.weight * mod.weight.grad).abs().sum()) for mod in m.modules()
                          if isinstance(mod, _WEIGHTED) and mod.weight.grad is not None)
    if not total > 0:
        return float("-inf")
    return math.log10(total) + math.fsum(log_scale)


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    return _synflow(model, x)


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
        raise InputError("grad_norm needs labels")
    m = copy.deepcopy(model).train()
    m.zero_grad(set_to_none=True)
    F.cross_entropy(m(x), y).backward()
    return float(sum(mod.weight.grad.norm() for mod in m.modules()
                     if isinstance(mod, _WEIGHTED) and mod.weight.grad is not None))


def zico(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    if y is None:
        raise InputError("zico needs labels")
    if x.shape[0] < 2 * ZICO_BATCHES:
        raise InputError(f"zico needs a batch of at least {2 * ZICO_BATCHES} images "
                         f"({ZICO_BATCHES} mini-batches of >= 2), got {x.shape[0]}")
    m = _dropout_off(copy.deepcopy(model).train())
    layers = [mod for mod in m.modules() if isinstance(mod, _WEIGHTED)]
    grads: list[list[torch.Tensor]] = [[] for _ in layers]
    for idx in torch.arange(x.shape[0]).tensor_split(ZICO_BATCHES):
        idx = idx.to(x.device)
        m.zero_grad(set_to_none=True)
        F.cross_entropy(m(x[idx]), y[idx]).backward()
        for g, mod in zip(grads, layers):
            if mod.weight.grad is not None:
                g.append(mod.weight.grad.detach().flatten().double())
    total = 0.0
    for g in grads:
        if len(g) < ZICO_BATCHES:  # layer not reached by the loss
            continue
        G = torch.stack(g)
        std = G.std(dim=0, unbiased=False)
        keep = std > 0
        s = float((G.abs().mean(dim=0)[keep] / std[keep]).sum())
        if s > 0:
            total += math.log(s)
    return total


PROXIES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor | None], float]] = {
    "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm, "zico": zico,
}


def score(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> float:
    """Score ``model`` with proxy ``name`` on the batch ``x`` (labels ``y`` where needed)."""
    if name not in PROXIES:
        raise InputError(f"unknown zero-cost proxy {name!r}; accepted: {', '.join(PROXIES)}")
    return PROXIES[name](model, x, y)


def score_all(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
              names: tuple[str, ...] = tuple(PROXIES)) -> dict[str, float]:
    return {n: score(n, model, x, y) for n in names}
