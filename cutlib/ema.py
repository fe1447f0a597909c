"""Exponential moving average of the generator's weights, with the half-life measured in images."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .config import EMA_RAMPUP


def ema_beta(images_seen: int, batch: int, halflife_kimg: float, rampup: float = EMA_RAMPUP) -> float:
    """Per-step decay. The half-life is capped at `rampup * images_seen`, so the random initial weights
    are forgotten fast (as in NVlabs/edm)."""
    halflife = halflife_kimg * 1000
    if rampup > 0:
        halflife = min(halflife, images_seen * rampup)
    return 0.5 ** (batch / max(halflife, 1e-8))


class EMA:
    """A frozen copy of the generator whose weights follow shadow = beta*shadow + (1-beta)*weights."""

    def __init__(self, net: nn.Module):
        self.model = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, weight: torch.Tensor | float) -> None:
        """shadow += weight * (weights - shadow), with weight = 1 - beta; a 0-dim device tensor `weight` is
        read when the update runs, so a replayed CUDA graph uses each step's value."""
        src = dict(net.named_parameters())
        shadow = [p for _, p in self.model.named_parameters()]
        delta = torch._foreach_sub([src[n].detach() for n, _ in self.model.named_parameters()], shadow)
        torch._foreach_mul_(delta, weight)
        torch._foreach_add_(shadow, delta)

    def state_dict(self) -> dict:
        return {"shadow": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["shadow"])
