"""The segmentation losses of appendix B: focal and dice on each stage's anomaly map."""

from __future__ import annotations

import torch


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on the softmaxed two-channel map, computed from its logits.

    logits: B x 2 x S x S (channel 1 abnormal); target: B x S x S in {0, 1}.
    Mean over pixels of -(1 - p_t)^gamma * log(p_t), p_t the probability of the true state, with
    log(p_t) from log_softmax: the gradient does not vanish when the softmax saturates.
    """
    log_probs = torch.log_softmax(logits.float(), dim=1)
    log_true = torch.where(target > 0.5, log_probs[:, 1], log_probs[:, 0])
    return (-(1.0 - log_true.exp()).pow(gamma) * log_true).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Dice loss of the abnormal channel, per image, averaged: 1 - (2|P.G| + s) / (|P| + |G| + s).

    prob, target: B x S x S. With smoothing, a normal image (empty target) scores 0 when prob is 0.
    """
    prob = prob.float().flatten(1)
    target = target.float().flatten(1)
    intersection = (prob * target).sum(dim=1)
    dice = (2.0 * intersection + smooth) / (prob.sum(dim=1) + target.sum(dim=1) + smooth)
    return (1.0 - dice).mean()
