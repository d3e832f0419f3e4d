"""I2M2: inter- & intra-modality modeling as a product of experts (papers/i2m2_paper.txt, Sec. 3)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..encoders import PreActResNet2d
from .contract import ModelOutput, MultimodalModel
from .registry import register_model

__all__ = ["I2M2"]

MODES = ("i2m2", "intra", "inter")
JOINT = "joint"


@register_model("i2m2")
class I2M2(MultimodalModel):
    """Unimodal experts (one per modality) and a joint expert combined as a product of experts.

    Sec. 3.1, Eq. 3: ``p(y | x_1..x_M) ∝ prod_m q_m(y | x_m) · q_joint(y | x_1..x_M)``. Every expert is
    a pre-activation ResNet (``PreActResNet2d``) with a linear head per task. For each task the combined
    prediction is ``sum_e log_softmax(logits_e) - logsumexp_y(...)``: normalised log-probabilities, which
    cross-entropy and softmax use unchanged as logits. A binary or multi-label problem is one task per
    label with 2 classes; the 2-class log-softmax is exactly the (log σ, log(1 - σ)) pair of that label.

    Modes: ``"i2m2"`` (unimodal experts + joint expert), ``"intra"`` (unimodal experts only, Sec. 3.3)
    and ``"inter"`` (joint expert only, Sec. 3.2). Only the experts a mode uses are built.

    All unimodal experts run as one grouped encoder (``groups = M``); the joint expert sees the
    modalities concatenated along channels (``M * in_channels``, early fusion).

    Missing modalities (``modality_mask`` False): the absent image is replaced by zeros before any
    expert sees it (the data layer's NaN placeholder never reaches the network), the modality's
    unimodal expert is dropped from the product for that sample, and the joint expert sees zeros in
    that modality's channels. An expert with no term for a sample (e.g. ``"intra"`` with every
    modality absent) leaves a uniform prediction.

    Args:
        modalities: batch keys of the image modalities, in model order (``modality_mask`` column order).
        tasks: task name -> number of classes (>= 2; binary labels use 2).
        mode: ``"i2m2"``, ``"intra"`` or ``"inter"``.
        in_channels: channels per modality image (1 for magnitude or phase).
        base_channels, blocks, stem, norm, norm_groups, pool_size: ``PreActResNet2d`` options of
            every expert (default: ResNet-18, width 64, GroupNorm(32), global pooling).
        dropout_rate: dropout on the pooled features before the heads.
        modality_mask_key: batch key of the ``(b, M)`` bool presence mask.

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: task name -> normalised log-probabilities
    ``(b, classes)``; no ``aux_losses`` (I2M2 trains with one loss on the combined output, Sec. 3.1);
    ``interpret``: ``modality_mask``, ``expert_logits`` (``{expert: {task: (b, classes)}}``, experts named by
    modality key plus ``"joint"``; with gradient, so a loss on them trains each expert on its own, e.g. the
    unimodal pretraining; rows of an absent modality's expert are its output on zeros) and ``expert_presence``
    (``{expert: (b,) bool}``: a unimodal expert saw the sample if its modality was present, the joint expert if
    any modality was).

    Raises:
        ValueError: on empty modalities/tasks, a task with < 2 classes, an unknown mode, a modality
            named ``"joint"``; at call time on a wrong mask shape, mismatched image shapes or
            non-finite values in a present modality.
        KeyError: at call time, naming a modality key missing from the batch.

    Example::

        >>> model = I2M2(modalities=["magnitude", "phase"], tasks={"acl": 2, "meniscus": 2},
        ...              base_channels=8, blocks=(1, 1, 1, 1))
        >>> batch = {"magnitude": torch.rand(2, 1, 32, 32), "phase": torch.rand(2, 1, 32, 32),
        ...          "modality_mask": torch.tensor([[True, True], [True, False]])}
        >>> out = model(batch)
        >>> out["acl"].exp().sum(-1)
        tensor([1.0000, 1.0000], grad_fn=<SumBackward1>)
        >>> sorted(out.interpret["expert_logits"])
        ['joint', 'magnitude', 'phase']
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int],
        mode: str = "i2m2",
        in_channels: int = 1,
        base_channels: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem: str = "cifar",
        norm: str = "group",
        norm_groups: int = 32,
        pool_size: int = 1,
        dropout_rate: float = 0.0,
        modality_mask_key: str = "modality_mask",
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("at least one modality is required")
        if not tasks:
            raise ValueError("at least one task is required")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        if JOINT in modalities:
            raise ValueError(f"'{JOINT}' names the joint expert; rename that modality")
        for name, classes in tasks.items():
            if int(classes) < 2:
                raise ValueError(f"task '{name}' needs >= 2 classes (binary tasks use 2), got {classes}")
        self.modalities, self.tasks, self.mode = list(modalities), {k: int(v) for k, v in tasks.items()}, mode
        self.in_channels, self.modality_mask_key = in_channels, modality_mask_key
        num_m, num_out = len(self.modalities), sum(self.tasks.values())
        encoder = dict(
            base_channels=base_channels,
            blocks=blocks,
            stem=stem,
            norm=norm,
            norm_groups=norm_groups,
            pool_size=pool_size,
        )
        self.dropout = nn.Dropout(dropout_rate)
        self.unimodal: PreActResNet2d | None = None
        self.joint: PreActResNet2d | None = None
        if mode in ("i2m2", "intra"):
            self.unimodal = PreActResNet2d(in_channels, groups=num_m, **encoder)
            features = self.unimodal.out_features
            bound = 1.0 / math.sqrt(features)  # nn.Linear's default init, per modality
            self.unimodal_weight = nn.Parameter(torch.empty(num_m, features, num_out).uniform_(-bound, bound))
            self.unimodal_bias = nn.Parameter(torch.empty(num_m, num_out).uniform_(-bound, bound))
        if mode in ("i2m2", "inter"):
            self.joint = PreActResNet2d(in_channels * num_m, **encoder)
            self.joint_head = nn.Linear(self.joint.out_features, num_out)
        self.expert_names = (self.modalities if self.unimodal is not None else []) + (
            [JOINT] if self.joint is not None else []
        )
        self.interpretations = frozenset({"modality_mask", "expert_logits", "expert_presence"})

    def _stack_inputs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Modalities concatenated along channels ``(b, M c, H, W)`` (absent -> zeros) and the mask ``(b, M)``."""
        missing = [k for k in self.modalities if k not in batch]
        if missing:
            raise KeyError(f"batch has no key(s) {missing}; expected modalities {self.modalities}")
        images = [batch[k] for k in self.modalities]
        shape = (images[0].shape[0], self.in_channels, *images[0].shape[2:])
        for key, image in zip(self.modalities, images):
            if image.ndim != 4 or tuple(image.shape) != shape:
                raise ValueError(
                    f"modality '{key}' must be (b, {self.in_channels}, H, W) like '{self.modalities[0]}' "
                    f"{shape}, got {tuple(image.shape)}"
                )
        images = torch.stack(images, dim=1)  # b m c h w
        mask = batch.get(self.modality_mask_key)
        if mask is None:
            mask = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        mask = torch.as_tensor(mask, device=images.device).to(torch.bool)
        if mask.shape != images.shape[:2]:
            raise ValueError(
                f"'{self.modality_mask_key}' must be (batch, {len(self.modalities)}) = {tuple(images.shape[:2])}, "
                f"got {tuple(mask.shape)}"
            )
        present = mask.view(*mask.shape, 1, 1, 1)
        if not bool(torch.isfinite(images).logical_or(~present).all()):
            raise ValueError("non-finite values in a modality marked present in the modality_mask")
        images = torch.where(present, images, torch.zeros((), dtype=images.dtype, device=images.device))
        return images.flatten(1, 2), mask

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        x, mask = self._stack_inputs(batch)
        b, num_m = mask.shape
        logits, presence = [], []
        if self.unimodal is not None:
            features = self.dropout(self.unimodal(x).view(b, num_m, -1))
            # one linear head per modality, all at once; legend: b batch, m modality, f feature, k output
            logits.append(torch.einsum("b m f, m f k -> b m k", features, self.unimodal_weight) + self.unimodal_bias)
            presence.append(mask)
        if self.joint is not None:
            logits.append(self.joint_head(self.dropout(self.joint(x))).unsqueeze(1))
            presence.append(mask.any(1, keepdim=True))
        expert_logits, presence_t = torch.cat(logits, 1), torch.cat(presence, 1)  # (b, e, k), (b, e)
        out = {}
        for task, chunk in zip(self.tasks, expert_logits.split(list(self.tasks.values()), dim=-1)):
            # Eq. 3 in log space: sum of the present experts' log-softmax, renormalised over classes
            log_p = torch.where(presence_t.unsqueeze(-1), chunk.log_softmax(-1), 0.0).sum(1)
            out[task] = log_p - log_p.logsumexp(-1, keepdim=True)
        sizes = list(self.tasks.values())
        interpret = {
            "modality_mask": mask,
            "expert_logits": {
                name: dict(zip(self.tasks, expert_logits[:, e].split(sizes, dim=-1)))
                for e, name in enumerate(self.expert_names)
            },
            "expert_presence": {name: presence_t[:, e] for e, name in enumerate(self.expert_names)},
        }
        return ModelOutput(out, {}, interpret)
