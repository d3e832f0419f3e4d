"""Mixed precision: the models run forward + backward under autocast, with missing modalities retrieved.

The bundles train with AMP on CUDA (``amp`` defaults to True there). CI has no GPU, so these tests use CPU
autocast in bfloat16, which casts the same ops (matmuls, attention) to a 16-bit type and so catches dtype
mismatches (e.g. fp32 buffers such as the retriever's support bank meeting 16-bit activations) and non-finite
values. Outputs are compared with the fp32 forward at bfloat16 precision.
"""

from __future__ import annotations

import pytest
import torch

from medmoe.nets import create_model

VIEWS = ["cc", "mlo", "s2d"]
FEATURES = {"mri": 6, "csf": 3, "cog": 4}
RETRIEVER = {"num_heads": 2, "num_supports": 2, "num_candidates": 2, "num_shared": 1, "id_key": "id"}
TRAIN_MASK = [[True, True, True], [True, False, True], [False, True, True], [True, True, True]]
EVAL_MASK = [[True, False, True], [False, True, False]]


def m4oe() -> torch.nn.Module:
    return create_model(
        "m4oe",
        modalities=VIEWS,
        tasks={"density": 4, "risk": 2},
        in_channels=1,
        image_size=[16, 16],
        patch_size=8,
        hidden_size=16,
        mlp_dim=32,
        num_heads=2,
        msoe_experts=2,
        mtoe_experts=4,
        fusion_experts=2,
        missing_modality="retriever",
        retriever_kwargs=RETRIEVER,
    )


def tabular(name: str) -> torch.nn.Module:
    return create_model(
        name,
        modalities=list(FEATURES),
        tasks={"dx": 3},
        in_features=FEATURES,
        hidden_size=8,
        num_tokens=2,
        backbone_kwargs={"num_heads": 2},
        missing_modality="retriever",
        retriever_kwargs=RETRIEVER,
    )


def image_batch(mask: list[list[bool]], prefix: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {v: torch.randn(len(mask), 1, 16, 16, generator=g) for v in VIEWS}
    batch["modality_mask"] = torch.tensor(mask)
    for j, v in enumerate(VIEWS):
        batch[v][~batch["modality_mask"][:, j]] = float("nan")  # the data layer's placeholder for absent views
    batch["id"] = [f"{prefix}{i}" for i in range(len(mask))]
    return batch


def vector_batch(mask: list[list[bool]], prefix: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.randn(len(mask), n, generator=g) for k, n in FEATURES.items()}
    batch["modality_mask"] = torch.tensor(mask)
    batch["id"] = [f"{prefix}{i}" for i in range(len(mask))]
    return batch


CASES = {
    "m4oe": (m4oe, image_batch),
    "i2moe": (lambda: tabular("i2moe"), vector_batch),
    "fusion": (lambda: tabular("fusion"), vector_batch),
}


def logits(output) -> dict[str, torch.Tensor]:
    return output if isinstance(output, dict) else {"out": output}


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_and_retrieval_under_bfloat16_autocast(name: str) -> None:
    build, make_batch = CASES[name]
    torch.manual_seed(0)
    model = build().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(make_batch(TRAIN_MASK, "train", 0))
        out = logits(output)
        loss = sum(o.float().logsumexp(-1).mean() for o in out.values())
        loss = loss + sum(v.float() for v in output.aux_losses.values())
    assert all(o.dtype == torch.bfloat16 for o in out.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    held_out = make_batch(EVAL_MASK, "test", 1)  # missing modalities filled from the training bank
    with torch.no_grad():
        reference = logits(model(held_out))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = logits(model(held_out))
    for task, value in reference.items():
        assert torch.isfinite(low[task]).all()
        torch.testing.assert_close(low[task].float(), value, atol=0.03, rtol=0.02)  # measured: <= 0.006
