"""Weight masks of the sparsity algorithms, applied through the hook runtime on weight ports.

A mask sits on the ``TargetType.WEIGHT`` port of an op and returns ``weight * mask`` before the op
uses the weight; the parameter itself is never changed until ``strip``. Masks are modules of the
hook manager, so they are saved in ``state_dict``, move with ``.to()`` and are seen by DDP:

- :class:`BinaryMask` (magnitude, const): a 0/1 buffer of the weight's shape, set by the
  controller; gradients of masked weights are zero, so those weights do not move.
- :class:`RBMask` (RB sparsity): trainable logits of the weight's shape. In training the mask is
  sampled, ``1[logits + logistic noise > 0]`` (the relaxed Bernoulli of Lyzin et al.), with a
  straight-through gradient; in eval (and once frozen) it is ``1[logits > 0]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BinaryMask", "RBMask", "SparsityMask", "binary_ste"]

RB_INIT_PROBABILITY = 0.99  # initial probability of keeping a weight (NNCF's)


def binary_ste(logits: torch.Tensor) -> torch.Tensor:
    """``1[sigmoid(logits) > 0.5]`` in the forward, the gradient of ``sigmoid(logits)`` in the backward."""
    soft = torch.sigmoid(logits)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + (soft - soft.detach())


class SparsityMask(nn.Module):
    """Base of the masks: ``forward(w) = w * mask`` and the 0/1 mask used for stripping and statistics."""

    def __init__(self, algorithm: str):
        super().__init__()
        self.algorithm = algorithm

    def effective_mask(self) -> torch.Tensor:
        """The 0/1 mask the inference model gets (no noise, no gradient)."""
        raise NotImplementedError


class BinaryMask(SparsityMask):
    """A fixed 0/1 mask (``binary_mask`` buffer) multiplied into the weight."""

    def __init__(self, shape: tuple[int, ...], algorithm: str = "magnitude_sparsity"):
        super().__init__(algorithm)
        self.register_buffer("binary_mask", torch.ones(tuple(shape)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.binary_mask.to(device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def effective_mask(self) -> torch.Tensor:
        return self.binary_mask.detach().clone()

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        self.binary_mask.copy_(mask.to(self.binary_mask.dtype).view_as(self.binary_mask))

    def extra_repr(self) -> str:
        kept = int(self.binary_mask.sum().item())
        return f"kept={kept}/{self.binary_mask.numel()}"


class RBMask(SparsityMask):
    """Learned mask: logits ``mask`` (a parameter), sampled in training (see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-6, algorithm: str = "rb_sparsity"):
        super().__init__(algorithm)
        init = math.log(RB_INIT_PROBABILITY / (1.0 - RB_INIT_PROBABILITY))
        self.mask = nn.Parameter(torch.full(tuple(shape), init))
        self.eps = float(eps)
        self.frozen = False

    def freeze(self, frozen: bool = True) -> None:
        """Stop learning: the mask becomes ``1[logits > 0]`` and the logits get no gradient."""
        self.frozen = bool(frozen)
        self.mask.requires_grad_(not self.frozen)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            return weight * (self.mask.detach() > 0).to(weight.dtype)
        logits = self.mask
        if self.training:
            u = torch.rand_like(logits)
            logits = logits + torch.log(u + self.eps) - torch.log(1.0 - u + self.eps)
        return weight * binary_ste(logits).to(weight.dtype)

    @torch.no_grad()
    def effective_mask(self) -> torch.Tensor:
        return (self.mask.detach() > 0).to(torch.float32)

    def extra_repr(self) -> str:
        kept = int((self.mask.detach() > 0).sum().item())
        return f"kept={kept}/{self.mask.numel()}, frozen={self.frozen}"
