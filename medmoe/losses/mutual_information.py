"""Conditional mutual information I(M; E | T) between modalities and experts given the task.

M4oE (Sec. 3.3, Eq. 7) maximises I(M;E|T). The paper's Eqs. 3-6 sum raw logits,
which are not probabilities; we form a proper joint as METHODS.md prescribes:
``pi[i, j, k] = combine[i, j, k] / tokens`` (non-negative, sums to 1 per sample), summed over the
tokens of each modality -> ``pi[M, E, T]``, averaged over the batch, and

    I = sum pi * log(pi * P(T) / (P(M, T) * P(E, T)))

computed in fp32 with ``eps`` inside the log.
"""

from __future__ import annotations

import torch

__all__ = ["modality_expert_task_joint", "conditional_mutual_information"]


def modality_expert_task_joint(combine: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """Per-sample joint ``pi[b, M, E, T]`` from MToE combine weights.

    Args:
        combine: ``(b, m, e, t)`` combine weights, each token's row summing to 1 over ``(e, t)``;
            tokens are ordered modality-major (``m = num_modalities * tokens_per_modality``).
        num_modalities: number of modalities ``M``.

    Returns:
        ``(b, M, e, t)`` in fp32, summing to 1 per sample.

    Raises:
        ValueError: if the token count is not divisible by ``num_modalities``.
    """
    b, m, e, t = combine.shape
    if m % num_modalities:
        raise ValueError(f"{m} tokens cannot be split evenly into {num_modalities} modalities")
    return combine.float().view(b, num_modalities, m // num_modalities, e, t).sum(2) / m


def conditional_mutual_information(joint: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """I(M; E | T) of a joint distribution, pooled over the batch.

    Args:
        joint: ``(b, M, E, T)`` per-sample joints (each sums to 1) or one ``(M, E, T)`` joint.
        eps: added inside the log to both numerator and denominator.

    Returns:
        A scalar (nats), >= 0 up to rounding; 0 when M and E are independent given T.
    """
    pi = joint.float()
    if pi.dim() == 4:
        pi = pi.mean(0)
    p_t = pi.sum((0, 1))  # T
    p_mt = pi.sum(1)  # M T
    p_et = pi.sum(0)  # E T
    ratio = (pi * p_t + eps) / (p_mt.unsqueeze(1) * p_et.unsqueeze(0) + eps)
    return (pi * ratio.log()).sum()
