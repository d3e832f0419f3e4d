"""I2MoE: interpretable multimodal interaction-aware mixture of experts (papers/i2moe_paper.txt, Sec. 3)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..losses.interaction import INTERACTION_KINDS, interaction_losses
from .contract import ModelOutput, MultimodalModel
from .fusion import FusionBackbone, build_backbone, split_tasks
from .fusion_model import ModalityEncoders
from .registry import register_model

__all__ = ["I2MoE", "MASKINGS"]

MASKINGS = ("noise", "shuffle", "mixed")


def _reweighting_mlp(in_features: int, hidden: int, out_features: int, layers: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout repeated ``layers - 1`` times, then Linear (``layers = 1``: one Linear)."""
    modules: list[nn.Module] = []
    for _ in range(layers - 1):
        modules += [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
        in_features = hidden
    return nn.Sequential(*modules, nn.Linear(in_features, out_features))


@register_model("i2moe")
class I2MoE(MultimodalModel):
    """n uniqueness experts + a synergy and a redundancy expert over shared encoders, reweighted per sample.

    Sec. 3.2-3.4 and Algorithm 1: modality encoders ``E_m`` (shared by all experts) give embeddings
    ``Z_m``; each interaction expert ``F_i`` is a copy of one fusion backbone (transformer / early / late
    fusion, any :class:`~medmoe.nets.fusion.FusionBackbone` factory with an expert axis, or any single-copy
    backbone wrapped in :func:`~medmoe.nets.fusion.stacked`) with its own parameters. A
    reweighting MLP on the concatenated mean-pooled clean embeddings gives ``w = softmax(z / T)``
    ``(b, n + 2)`` and the prediction is ``sum_i w_i y_i^(0)`` (Eq. 1).

    Training (Alg. 1, lines 2-5): every expert runs 1 clean pass and n passes with modality ``j``'s
    embedding replaced by N(0, 1) noise of the same shape, drawn afresh per call, expert and modality
    (``masking="shuffle"`` / ``"mixed"``: another sample's embedding instead, see :meth:`draw_replacement`).
    All ``(n + 2) x (1 + n)`` passes run as **one** batched backbone call: experts on the backbone's
    group axis, passes folded into the batch. The interaction losses
    (:func:`~medmoe.losses.interaction_losses`) are in the output's
    ``aux_losses["interaction"] = interaction_weight * mean_i L_int^(i)`` (Alg. 1, line 9), so
    ``MultiTaskLoss(aux_weights={"interaction": 1.0})`` gives ``L_task + lambda_int L_int``. In eval mode
    only the clean pass runs (Alg. 1, inference) unless ``perturb_in_eval``; the interaction loss is then 0.

    Missing modalities (``modality_mask`` False) are zeroed before their encoder and after it, excluded
    by the backbone (see :mod:`medmoe.nets.fusion`) unless ``missing_modality`` fills them, and their
    (sample, modality) pairs never enter the interaction losses. A masked (noise) modality counts as
    present in its perturbed pass. With ``mask_absent_experts`` the uniqueness expert of a modality a sample
    does not have gets weight 0 for that sample, so the weights never credit a modality the sample lacks.

    Args:
        modalities: batch keys, in model order; experts are named ``unique_<key>``, ``synergy``, ``redundancy``.
        tasks: task name -> number of outputs (classes; 1 per regression target).
        in_features: values per sample per modality (int or per key) for the default vector encoders.
        backbone: ``"transformer"``, ``"early"``, ``"late"`` or a factory (see ``build_backbone``).
        hidden_size: token width ``d``.
        num_tokens: tokens per modality.
        encoders: optional encoder modules per key (``(b, ...) -> (b, d)`` or ``(b, n, d)``).
        encoder_dim: hidden width of the default encoders.
        backbone_kwargs: extra backbone options (``num_layers``, ``num_heads``, ``mlp_dim``, ``dropout_rate``).
        reweight_hidden: hidden width of the reweighting MLP (default ``hidden_size``).
        reweight_layers: layers of the reweighting MLP (1 = a single Linear).
        reweight_dropout: dropout in the reweighting MLP.
        temperature: softmax temperature ``T`` of the expert weights.
        interaction_weight: ``lambda_int``.
        interaction_loss: ``"classification"`` (triplet / cosine) or ``"regression"`` (MSE with hinges).
        triplet_margin: uniqueness margin. synergy_margin: regression synergy hinge margin.
        identical_init: start every expert from the same weights (the paper's "initially identical fusion
            models"; the public code deep-copies one model). Until the experts diverge (after the first
            optimiser step) their clean logits agree, so the reweighting MLP gets no gradient on step one.
        perturb_in_eval: run the perturbed passes (and the interaction loss) in eval mode too.
        modality_mask_key: batch key of the ``(b, M)`` presence mask.
        centre_logits: classification only: the interaction losses see each output minus its mean over
            classes (softmax-invariant; see :mod:`medmoe.losses.interaction`). Off = the paper.
        masking: what replaces a masked modality's embedding in the perturbed passes (see
            :meth:`draw_replacement`): ``"noise"`` (the paper: N(0, 1)), ``"shuffle"`` (the same modality's
            embedding of another sample of the batch) or ``"mixed"`` (shuffle for the uniqueness and synergy
            experts, noise for the redundancy expert).
        missing_modality: how absent modalities enter the experts: ``"zero"`` (default: zeroed and excluded
            by the backbone), ``"learned"`` tokens or ``"retriever"`` (the MoE-Retriever or one of its
            baselines, see :class:`~medmoe.nets.fusion_model.ModalityEncoders`); the fill's losses join the output's
            ``aux_losses``. The interaction losses always use the true presence.
        retriever_kwargs: options of the fill, e.g. ``{"mode": "moe", "id_key": "id"}``.
        mask_absent_experts: give the uniqueness expert of a modality a sample lacks weight 0 for that sample
            (its reweighting logit is masked before the softmax, by the true presence, so also when a fill stands
            in). Off by default (the paper has no missing modalities); see docs/methods/i2moe.md.

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: task name -> logits ``(b, classes)``;
    ``aux_losses``: ``"interaction"`` (0 without perturbed passes) plus the fill's; ``interpret``: ``modality_mask``,
    ``expert_weights`` ``(b, n + 2)`` (columns in ``expert_names`` order), ``expert_logits`` (clean per-expert
    logits ``{expert: {task: (b, classes)}}``, with gradient), ``interaction_losses`` (unweighted per-expert
    ``{expert: scalar}``) and ``pass_logits`` (``(n + 2, 1 + n, b, k)``, tasks concatenated) when the perturbed
    passes ran, and ``retrieval`` with a retriever fill.

    Raises:
        ValueError: on empty modalities/tasks, bad options, a backbone without ``n + 2`` parameter copies;
            at call time see :class:`~medmoe.nets.fusion_model.ModalityEncoders`.

    Example::

        >>> model = I2MoE(modalities=["mri", "csf"], tasks={"dx": 3}, in_features={"mri": 20, "csf": 5},
        ...               hidden_size=16, backbone_kwargs={"num_heads": 2})
        >>> out = model({"mri": torch.randn(4, 20), "csf": torch.randn(4, 5)})
        >>> out["dx"].shape, out.interpret["expert_weights"].shape, sorted(out.aux_losses)
        (torch.Size([4, 3]), torch.Size([4, 4]), ['interaction'])
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int],
        in_features: int | Mapping[str, int] | None = None,
        backbone: str | Callable[..., FusionBackbone] = "transformer",
        hidden_size: int = 64,
        num_tokens: int = 1,
        encoders: Mapping[str, nn.Module] | None = None,
        encoder_dim: int | None = None,
        backbone_kwargs: Mapping[str, object] | None = None,
        reweight_hidden: int | None = None,
        reweight_layers: int = 2,
        reweight_dropout: float = 0.0,
        temperature: float = 1.0,
        interaction_weight: float = 0.5,
        interaction_loss: str = "classification",
        triplet_margin: float = 1.0,
        synergy_margin: float = 1.0,
        identical_init: bool = True,
        perturb_in_eval: bool = False,
        modality_mask_key: str = "modality_mask",
        centre_logits: bool = False,
        masking: str = "noise",
        missing_modality: str = "zero",
        retriever_kwargs: Mapping[str, object] | None = None,
        mask_absent_experts: bool = False,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("at least one task is required")
        if interaction_loss not in INTERACTION_KINDS:
            raise ValueError(f"interaction_loss must be one of {INTERACTION_KINDS}, got '{interaction_loss}'")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if reweight_layers < 1:
            raise ValueError(f"reweight_layers must be >= 1, got {reweight_layers}")
        self.modalities, self.tasks = list(modalities), {k: int(v) for k, v in tasks.items()}
        num_m = len(self.modalities)
        self.num_experts = num_m + 2
        self.expert_names = [f"unique_{m}" for m in self.modalities] + ["synergy", "redundancy"]
        self.temperature, self.interaction_weight = float(temperature), float(interaction_weight)
        self.interaction_loss, self.triplet_margin, self.synergy_margin = (
            interaction_loss,
            triplet_margin,
            synergy_margin,
        )
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got '{masking}'")
        self.masking = masking
        if centre_logits and interaction_loss != "classification":
            raise ValueError("centre_logits applies to interaction_loss='classification' only")
        self.perturb_in_eval, self.centre_logits = perturb_in_eval, bool(centre_logits)
        self.mask_absent_experts = bool(mask_absent_experts)
        self.encoders = ModalityEncoders(
            self.modalities,
            hidden_size,
            in_features,
            num_tokens,
            encoders,
            encoder_dim,
            modality_mask_key,
            missing_modality=missing_modality,
            retriever_kwargs=retriever_kwargs,
        )
        self.experts = build_backbone(
            backbone, num_m, hidden_size, self.tasks, num_tokens, self.num_experts, **dict(backbone_kwargs or {})
        )
        for name, p in self.experts.named_parameters():
            if p.shape[0] % self.num_experts:
                raise ValueError(f"backbone parameter '{name}' {tuple(p.shape)} has no leading expert axis")
            if identical_init:
                with torch.no_grad():
                    flat = p.view(self.num_experts, -1)
                    flat[1:] = flat[0]
        self.reweight = _reweighting_mlp(
            num_m * hidden_size, reweight_hidden or hidden_size, self.num_experts, reweight_layers, reweight_dropout
        )
        self.interpretations = self.encoders.interpretations | {"expert_weights", "expert_logits"}

    def draw_noise(self, like: torch.Tensor) -> torch.Tensor:
        """The random vectors replacing embeddings: N(0, 1) of the shape of ``like`` (Sec. 3.3.2, Eqs. 2-3)."""
        return torch.randn_like(like)

    def draw_replacement(self, like: torch.Tensor) -> torch.Tensor:
        """Replacement embeddings for the perturbed passes, shape of ``like`` = ``(e, p, b, M, n, d)``.

        ``"noise"`` (default, Sec. 3.3.2): :meth:`draw_noise`. ``"shuffle"``: for every (expert, pass) an
        independent random permutation of the batch, so a sample's modality ``j`` becomes another sample's
        modality ``j``. ``"mixed"``: shuffle for the uniqueness and synergy experts, noise for the
        redundancy expert (the last).

        Why (a departure from the paper, off by default): N(0, 1) vectors are easy to tell apart from
        encoder outputs, so an expert can satisfy the uniqueness triplet (move far when its own modality is
        noise) and the synergy loss (flip when any modality is noise) by reacting to the noise alone, while
        using every modality freely on clean inputs; on the synthetic benchmark this is what happens
        (docs/methods/i2moe.md). A shuffled embedding is a real embedding, so "the output changes when
        modality j changes" must hold on the data distribution. Redundancy asks the opposite ("the output
        survives the loss of a modality"), which N(0, 1) "absence" expresses and a shuffle, whose content
        contradicts the other modality, cannot. Notes: a permutation can leave a sample in place (chance
        ``1/b``); a batch of one cannot be shuffled; a donor whose modality is absent gives zeros.

        Args:
            like: the expanded clean tokens ``(e, p, b, M, n, d)`` (experts, passes, batch, modalities, tokens, width).

        Returns:
            A tensor of the same shape; :meth:`forward` uses it only where a modality is masked.
        """
        if self.masking == "noise":
            return self.draw_noise(like)
        e, p, b = like.shape[:3]
        order = torch.rand(e, p, b, device=like.device).argsort(-1)  # e p b: donor sample per (expert, pass)
        shuffled = like.gather(2, order.view(e, p, b, *[1] * (like.dim() - 3)).expand_as(like))
        if self.masking == "shuffle":
            return shuffled
        return torch.cat([shuffled[:-1], self.draw_noise(like[-1:])])  # mixed: redundancy expert gets noise

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        encoded = self.encoders(batch)  # b m n d, b m (all True when a fill stands in for absent ones)
        tokens, mask, present = encoded.tokens, encoded.mask, encoded.presence  # present: for the interaction losses
        b, m = mask.shape
        e = self.num_experts
        interpret = encoded.interpret()
        if self.training or self.perturb_in_eval:
            # pass 0 clean; pass 1 + j replaces modality j by noise (drawn per expert): e p b m n d
            p = 1 + m
            replace = torch.cat([torch.zeros(1, m, dtype=torch.bool), torch.eye(m, dtype=torch.bool)]).to(mask.device)
            x = tokens.expand(e, p, *tokens.shape)
            x = torch.where(replace[None, :, None, :, None, None], self.draw_replacement(x), x)
            pass_mask = (mask[None] | replace[:, None]).reshape(p * b, m)  # noise counts as present
            logits = self.experts.fuse(x.reshape(e, p * b, *tokens.shape[1:]), pass_mask).view(e, p, b, -1)
            clean = logits[:, 0]
            sizes = list(self.tasks.values())
            per_task = [
                interaction_losses(
                    chunk,
                    present,
                    self.interaction_loss,
                    self.triplet_margin,
                    self.synergy_margin,
                    centre_logits=self.centre_logits,
                )
                for chunk in logits.split(sizes, dim=-1)
            ]
            per_expert = torch.stack(per_task).mean(0)  # (e,), averaged over tasks
            interaction = self.interaction_weight * per_expert.mean()
            interpret.update(interaction_losses=dict(zip(self.expert_names, per_expert)), pass_logits=logits)
        else:
            clean = self.experts.fuse(tokens.expand(e, *tokens.shape), mask)  # e b k
            interaction = clean.new_zeros(())
        # reweighting model on the concatenated mean-pooled clean embeddings (absent = 0), Sec. 3.3.1
        scores = self.reweight(tokens.mean(2).flatten(1)) / self.temperature  # b e
        if self.mask_absent_experts:  # unique_<m> speaks for modality m: no weight where m is truly absent
            scores = scores.masked_fill(torch.cat([~present, present.new_zeros(b, e - m)], dim=1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # b e
        prediction = torch.einsum("b e, e b k -> b k", weights, clean)  # Eq. 1
        interpret.update(
            expert_weights=weights,
            expert_logits={name: split_tasks(clean[i], self.tasks) for i, name in enumerate(self.expert_names)},
        )
        aux = {"interaction": interaction, **encoded.aux_losses}
        return ModelOutput(split_tasks(prediction, self.tasks), aux, interpret)
