"""Single-modality baselines: a timm classifier (``"timm_classifier"``) and a segmentation-models-pytorch U-Net
with a timm encoder (``"unet"``), both on one modality of the batch and both under the model contract.

They answer the first question a researcher asks of a multimodal mixture of experts: does it beat the plain model
they would otherwise train on one view? Both read one modality (``modality``) of a multimodal batch, so a bundle
swaps its ``network_def`` for one of them and keeps its cohort, transforms, loss and evaluation. Classification
tasks use the same heads as the MoE models (:class:`~medmoe.heads.MultiTaskClassificationHead`, LayerNorm + Linear
per task) on the backbone's globally pooled features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch

from ..heads import MultiTaskClassificationHead
from .contract import ModelOutput, MultimodalModel, presence_mask, zero_absent
from .registry import register_model

__all__ = ["SingleModalityClassifier", "SingleModalityUNet"]

MISSING = ("error", "zero")


class _OneModality(MultimodalModel):
    """The input side shared by the single-modality baselines: pick ``modality`` from the batch, check presence."""

    interpretations = frozenset({"modality_mask"})

    def __init__(
        self, modalities: Sequence[str], modality: str | None, missing_modality: str, modality_mask_key: str
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        if not self.modalities:
            raise ValueError("at least one modality is required")
        self.modality = self.modalities[0] if modality is None else modality
        if self.modality not in self.modalities:
            raise ValueError(f"modality '{self.modality}' is not one of the modalities {self.modalities}")
        if missing_modality not in MISSING:
            raise ValueError(f"missing_modality must be one of {MISSING}, got '{missing_modality}'")
        self.missing_modality, self.modality_mask_key = missing_modality, modality_mask_key

    def _input(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The modality's images ``(b, c, H, W)`` (absent samples zeroed) and the ``(b, M)`` presence mask.

        Raises:
            KeyError: if the batch lacks the modality.
            ValueError: on a mask of the wrong shape, non-finite values in a present image, or (with
                ``missing_modality="error"``) a sample without the modality.
        """
        mask = presence_mask(batch, self.modalities, self.modality_mask_key, read=[self.modality])
        images = batch[self.modality]
        present = mask[:, self.modalities.index(self.modality)].view(-1, *([1] * (images.dim() - 1)))
        if self.missing_modality == "error" and not bool(present.all()):
            raise ValueError(
                f"{int((~present).sum())} sample(s) lack '{self.modality}', which this single-modality model needs; "
                "drop them from the cohort or build the model with missing_modality='zero'"
            )
        return zero_absent(images, present), mask


@register_model("timm_classifier")
class SingleModalityClassifier(_OneModality):
    """A timm CNN or ViT on one modality -> pooled features -> one classification head per task.

    The plain single-modality classifier (e.g. gamma_m4oe's fundus-only baseline). The backbone is built with
    ``timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_channels, **backbone_kwargs)``
    (nothing downloads); its pooled features feed :class:`~medmoe.heads.MultiTaskClassificationHead`.

    Args:
        modalities: batch keys of all modalities, in ``modality_mask`` column order.
        tasks: classification task name -> number of classes (>= 2).
        modality: the key this model reads (default the first of ``modalities``).
        backbone: a timm model name, e.g. ``"mobilenetv3_small_075"``.
        in_channels: channels of the modality's images.
        backbone_kwargs: more keyword arguments of ``timm.create_model`` (e.g. ``img_size`` for a ViT).
        dropout_rate: dropout before each task's linear layer.
        missing_modality: ``"error"`` (default: a sample without the modality raises) or ``"zero"`` (its image is
            zeroed and the model predicts from that, as a plain model fed an empty image would).
        modality_mask_key: batch key of the ``(b, M)`` bool presence mask (optional in the batch).

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput` task -> logits ``(b, classes)``, no auxiliary
    losses, ``interpret["modality_mask"]``.

    Raises:
        ValueError: on no modality, an unknown ``modality`` or missing mode, no task or a task with < 2 classes.

    Example::

        >>> model = SingleModalityClassifier(["fundus", "oct"], {"glaucoma": 3}, backbone="resnet10t")
        >>> model({"fundus": torch.rand(2, 3, 64, 64)})["glaucoma"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int],
        modality: str | None = None,
        backbone: str = "mobilenetv3_small_075",
        in_channels: int = 3,
        backbone_kwargs: Mapping[str, Any] | None = None,
        dropout_rate: float = 0.0,
        missing_modality: str = "error",
        modality_mask_key: str = "modality_mask",
    ) -> None:
        super().__init__(modalities, modality, missing_modality, modality_mask_key)
        self.tasks = dict(tasks)
        self.backbone = timm.create_model(
            backbone, pretrained=False, num_classes=0, in_chans=in_channels, **(backbone_kwargs or {})
        )  # num_classes=0: the pooled pre-logits features (b, C), C = head_hidden_size (timm >= 1.0)
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = MultiTaskClassificationHead(width, self.tasks, dropout_rate)

    def forward(self, batch: Mapping[str, Any]) -> ModelOutput:
        images, mask = self._input(batch)
        features = self.backbone(images).unsqueeze(1).expand(-1, len(self.tasks), -1)  # b tasks C
        return ModelOutput(self.head(features), interpret={"modality_mask": mask})


@register_model("unet")
class SingleModalityUNet(_OneModality):
    """A segmentation-models-pytorch U-Net with a timm encoder on one modality, plus optional classification heads.

    ``smp.Unet(encoder_name="tu-<encoder>", encoder_weights=None, ...)`` (a timm encoder through smp's timm
    adapter; nothing downloads). Each segmentation task gets its own 3x3 conv head on the shared decoder output
    (logits ``(b, K, H, W)`` at the input size, softmax over ``K`` like :class:`~medmoe.heads.SegmentationHead`);
    each classification task a :class:`~medmoe.heads.MultiTaskClassificationHead` head on the globally pooled
    deepest encoder map (the bottleneck, as smp's ``aux_params`` head), so one U-Net serves a bundle whose config
    has both kinds of task.

    Args:
        modalities: batch keys of all modalities, in ``modality_mask`` column order.
        segmentation_tasks: segmentation task name -> ``{"classes": K, ...}`` (``K >= 2`` incl. background; other
            keys, e.g. the M4oE spec's ``"modality"``, must name ``modality`` if given).
        tasks: classification task name -> number of classes (default none).
        modality: the key this model reads (default the first of ``modalities``).
        encoder: a timm model name with ``features_only`` support, e.g. ``"mobilenetv3_small_075"``.
        encoder_depth: encoder stages used (3-5); the input sides must be multiples of ``2 ** encoder_depth``.
            Keep 5 with most timm encoders (MobileNetV3, EfficientNet, RegNet, ...): with fewer, timm's
            ``features_only`` model keeps the later stages, which then get no gradient (GhostNet, ConvNeXt and
            DenseNet drop them).
        decoder_channels: channels of the decoder stages, one per encoder stage (coarsest first).
        in_channels: channels of the modality's images.
        dropout_rate: dropout before each classification task's linear layer.
        missing_modality, modality_mask_key: as :class:`SingleModalityClassifier`.

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: segmentation task -> logits ``(b, K, H, W)``,
    classification task -> logits ``(b, classes)``; no auxiliary losses; ``interpret["modality_mask"]``.

    Raises:
        ValueError: on no segmentation task, a task with too few classes, a task name used twice, a segmentation
            task of another modality, or ``decoder_channels`` not of length ``encoder_depth``.

    Example::

        >>> model = SingleModalityUNet(["fundus", "oct"], {"cup": {"classes": 2}}, {"glaucoma": 3},
        ...                            encoder="resnet10t", decoder_channels=(64, 32, 16, 16, 8))
        >>> out = model({"fundus": torch.rand(2, 3, 64, 64)})
        >>> out["cup"].shape, out["glaucoma"].shape
        (torch.Size([2, 2, 64, 64]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        modalities: Sequence[str],
        segmentation_tasks: Mapping[str, Mapping[str, Any]],
        tasks: Mapping[str, int] | None = None,
        modality: str | None = None,
        encoder: str = "mobilenetv3_small_075",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (64, 32, 16, 16, 16),
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        missing_modality: str = "error",
        modality_mask_key: str = "modality_mask",
    ) -> None:
        super().__init__(modalities, modality, missing_modality, modality_mask_key)
        self.tasks = dict(tasks or {})
        self.segmentation_tasks = {k: dict(v) for k, v in segmentation_tasks.items()}
        self._check_tasks()
        if len(decoder_channels) != encoder_depth:
            raise ValueError(
                f"decoder_channels needs one entry per encoder stage ({encoder_depth}), got {list(decoder_channels)}"
            )
        classes = [int(cfg["classes"]) for cfg in self.segmentation_tasks.values()]
        unet = smp.Unet(
            encoder_name=f"tu-{encoder}",
            encoder_depth=encoder_depth,
            encoder_weights=None,
            decoder_channels=tuple(decoder_channels),
            in_channels=in_channels,
            classes=sum(classes),  # one 3x3 conv for all tasks = one head per task, split below
        )
        self.encoder, self.decoder, self.segmentation_head = unet.encoder, unet.decoder, unet.segmentation_head
        self.split = classes
        self.head = (
            MultiTaskClassificationHead(self.encoder.out_channels[-1], self.tasks, dropout_rate) if self.tasks else None
        )

    def _check_tasks(self) -> None:
        if not self.segmentation_tasks:
            raise ValueError("the U-Net needs at least one segmentation task (segmentation_tasks)")
        if set(self.tasks) & set(self.segmentation_tasks):
            raise ValueError(f"task names used twice: {sorted(set(self.tasks) & set(self.segmentation_tasks))}")
        for name, cfg in self.segmentation_tasks.items():
            if int(cfg.get("classes", 0)) < 2:
                raise ValueError(f"segmentation task '{name}' needs 'classes' >= 2 (binary = 2), got {cfg}")
            if cfg.get("modality", self.modality) != self.modality:
                raise ValueError(
                    f"segmentation task '{name}' is of modality {cfg['modality']!r}; this U-Net reads {self.modality!r}"
                )

    def forward(self, batch: Mapping[str, Any]) -> ModelOutput:
        images, mask = self._input(batch)
        depth = len(self.encoder.out_channels) - 1
        if any(s % 2**depth for s in images.shape[2:]):
            raise ValueError(f"'{self.modality}' sides {tuple(images.shape[2:])} must be multiples of {2**depth}")
        features = self.encoder(images)
        logits = self.segmentation_head(self.decoder(features)).split(self.split, dim=1)
        out = dict(zip(self.segmentation_tasks, logits))
        if self.head is not None:
            pooled = features[-1].mean((2, 3))  # b C: the bottleneck, globally pooled
            out.update(self.head(pooled.unsqueeze(1).expand(-1, len(self.tasks), -1)))
        return ModelOutput(out, interpret={"modality_mask": mask})
