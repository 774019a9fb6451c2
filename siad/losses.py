"""The segmentation losses of appendix B: focal and dice on each stage's anomaly map."""

from __future__ import annotations

import torch

_EPS = 1e-6


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on the softmaxed two-channel map, given its abnormal channel.

    prob: B x S x S abnormal probability (the normal channel is 1 - prob); target: B x S x S in {0, 1}.
    Mean over pixels of -(1 - p_t)^gamma * log(p_t), p_t the probability of the true state.
    """
    prob = prob.float().clamp(_EPS, 1.0 - _EPS)
    target = target.float()
    p_true = torch.where(target > 0.5, prob, 1.0 - prob)
    return (-(1.0 - p_true).pow(gamma) * p_true.log()).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Dice loss of the abnormal channel, per image, averaged: 1 - (2|P.G| + s) / (|P| + |G| + s).

    prob, target: B x S x S. With smoothing, a normal image (empty target) scores 0 when prob is 0.
    """
    prob = prob.float().flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (prob.sum(dim=1) + target.sum(dim=1) + smooth)
    return (1.0 - dice).mean()
