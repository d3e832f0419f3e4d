"""I2MoE interaction losses (papers/i2moe_paper.txt, Sec. 3.3.2, Sec. 3.4 and appendix C).

Inputs are the outputs of the ``n + 2`` interaction experts (uniqueness 1..n, synergy, redundancy, in
that order) for ``1 + n`` forward passes: pass 0 is clean, pass ``1 + j`` has modality ``j``'s embedding
replaced by a random vector. Axis legend: ``e`` expert, ``p`` pass, ``i``/``j`` modality, ``b`` batch,
``c`` outputs.

Classification (appendix C), with ``a = y^(0)`` the clean output (anchor) and ``y^(j)`` the output
with modality ``j`` masked:

- uniqueness ``i``: ``1/(n-1) sum_{j != i} Triplet(a, positive=y^(j), negative=y^(i))`` with
  ``Triplet = max(||a - p|| - ||a - n|| + margin, 0)`` (torch's ``TripletMarginLoss``, p = 2, margin 1);
- synergy: ``1/n sum_j cos(a, y^(j))`` (minimised: masking any modality must change the output);
- redundancy: ``1/n sum_j (1 - cos(a, y^(j)))``.

``centre_logits=True`` (an option, off by default = the paper) first subtracts each output's mean over
classes, ``y - mean_c y``, from every pass. The softmax ignores that common offset, but raw cosines and
distances do not: with 2 classes the cosine of raw logits is dominated by the offset ``l_0 + l_1``, so an
expert can satisfy the synergy / redundancy losses through the offset alone, without changing (or
keeping) what it predicts. Centred, the losses only see the softmax-relevant part of the logits. Caveat:
with exactly 2 classes the centred logits are ``(-d/2, d/2)`` (``d = l_1 - l_0``), so the centred cosine
is ``sign(d_a d_j)``, a step with zero gradient; it is meaningful from 3 classes on (for 2 classes the
triplet term still gets a useful centred distance ``|d_a - d_j| / sqrt(2)``). Use it only for
single-label (softmax) logits, not multi-label ones.

Regression (Sec. 3.4 says "MSE" without formulas) uses ``D(u, v) = mean_c (u - v)^2``:

- uniqueness ``i``: ``max(D(a, y^(j)) - D(a, y^(i)) + margin, 0)`` averaged over ``j != i`` (the public
  code's ``D(a, p) - D(a, n)`` is unbounded below; the hinge bounds it like the triplet loss);
- synergy: ``max(synergy_margin - D(a, y^(j)), 0)`` (a bounded push-apart; the public code *minimises*
  ``D``, i.e. pulls together like redundancy, a sign bug);
- redundancy: ``D(a, y^(j))``.

Each mean runs over the (sample, modality) pairs whose modalities are present in the clean input (a
modality that was absent anyway carries no interaction signal); with every modality present this is
exactly the paper's batch mean averaged over ``j``. No pairs: 0 (with gradient).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["interaction_losses", "INTERACTION_KINDS"]

INTERACTION_KINDS = ("classification", "regression")


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``valid`` entries along all axes but the first: ``(e, ...) -> (e,)``."""
    valid = valid.to(values.dtype).expand_as(values)
    return (values * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)


def interaction_losses(
    outputs: torch.Tensor,
    present: torch.Tensor | None = None,
    kind: str = "classification",
    margin: float = 1.0,
    synergy_margin: float = 1.0,
    eps: float = 1e-6,
    centre_logits: bool = False,
) -> torch.Tensor:
    """Per-expert interaction losses ``(n + 2,)``: uniqueness 1..n, synergy, redundancy.

    Args:
        outputs: ``(n + 2, 1 + n, b, c)`` expert outputs (logits for classification) per pass.
        present: ``(b, n)`` bool, modalities present in the clean input (default all).
        kind: ``"classification"`` (triplet / cosine) or ``"regression"`` (MSE with hinges).
        margin: triplet (uniqueness) margin.
        synergy_margin: regression synergy hinge margin.
        eps: added to the difference before the norm, as ``torch.nn.functional.pairwise_distance``.
        centre_logits: classification only: subtract each output's mean over classes first (see the
            module docstring; off = the paper's appendix C).

    Returns:
        ``(n + 2,)`` losses; the paper's total interaction loss is their mean (Alg. 1, line 9).

    Raises:
        ValueError: on an unknown ``kind`` or inconsistent shapes.

    Example::

        >>> interaction_losses(torch.randn(4, 3, 5, 3)).shape
        torch.Size([4])
    """
    if kind not in INTERACTION_KINDS:
        raise ValueError(f"interaction loss kind must be one of {INTERACTION_KINDS}, got '{kind}'")
    if centre_logits and kind != "classification":
        raise ValueError("centre_logits applies to classification logits only, not to kind='regression'")
    e, p, b, _ = outputs.shape
    n = p - 1
    if e != n + 2:
        raise ValueError(f"outputs must be (n + 2, 1 + n, b, c); got {tuple(outputs.shape)}")
    if present is None:
        present = torch.ones(b, n, dtype=torch.bool, device=outputs.device)
    present = present.to(device=outputs.device, dtype=torch.bool)
    if present.shape != (b, n):
        raise ValueError(f"present must be (batch, modalities) = {(b, n)}, got {tuple(present.shape)}")
    outputs = outputs.float()
    if centre_logits:  # softmax-invariant part only: y - mean_c y
        outputs = outputs - outputs.mean(-1, keepdim=True)
    clean, masked = outputs[:, 0], outputs[:, 1:]  # e b c, e j b c
    pair_present = present.T  # j b

    # uniqueness experts i = 0..n-1: distance from anchor to every masked pass j -> (i, j, b)
    anchor = clean[:n, None]
    if kind == "classification":
        dist = torch.linalg.vector_norm(anchor - masked[:n] + eps, dim=-1)
    else:
        dist = (anchor - masked[:n]).pow(2).mean(-1)
    negative = torch.diagonal(dist, dim1=0, dim2=1).T  # i b: D(a, y^(i))
    unique = F.relu(dist - negative[:, None] + margin)  # positive j, negative i
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=outputs.device)
    valid = off_diagonal[:, :, None] & pair_present[:, None, :] & pair_present[None, :, :]  # i j b
    losses = [_masked_mean(unique, valid)]

    for expert, sign in ((n, "synergy"), (n + 1, "redundancy")):
        a, y = clean[expert][None], masked[expert]  # 1 b c, j b c
        if kind == "classification":
            cos = F.cosine_similarity(a, y, dim=-1)  # j b (cosine of the normalised logits, appendix C)
            term = cos if sign == "synergy" else 1.0 - cos
        else:
            mse = (a - y).pow(2).mean(-1)
            term = F.relu(synergy_margin - mse) if sign == "synergy" else mse
        losses.append(_masked_mean(term[None], pair_present[None]))
    return torch.cat(losses)
