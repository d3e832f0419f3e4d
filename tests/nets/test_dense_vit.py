"""The dense ViT baselines (medmoe/nets/dense_vit.py): timm's ViT, its key layout, upcycling, missing views, errors.
The model contract itself is checked for every registered model in test_contract.py."""

import pytest
import timm
import torch

from medmoe.nets import DenseViT, M4oE, SingleViewViT, create_model
from medmoe.nets.upcycle import upcycle_from_dense

SIZES = dict(image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, depth=2)
TASKS = {"density": 4, "risk": 2}


def dense(**extra) -> DenseViT:
    torch.manual_seed(0)
    return DenseViT(["cc", "mlo"], TASKS, **{**SIZES, **extra})


def timm_vit() -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=4,
        mlp_ratio=2, num_classes=0,
    )  # fmt: skip


def test_one_view_shared_embedding_is_timms_vit():
    # the state dict's timm part loads strictly into timm's VisionTransformer, which then computes the same features
    model = DenseViT(["mlo"], TASKS, patch_embedding="shared", **SIZES).eval()
    with torch.no_grad():
        model.view_embed.zero_()  # timm's ViT has no view embedding
    vit = timm_vit().eval()
    vit.load_state_dict(model.timm_state_dict(), strict=True)
    image = torch.rand(3, 1, 16, 16)
    expected = model.head(vit(image).unsqueeze(1).expand(-1, 2, -1))  # timm's pooled class token, our heads
    out = model({"mlo": image})
    for task in TASKS:
        torch.testing.assert_close(out[task], expected[task])


def test_load_timm_fills_both_embeddings_and_the_blocks():
    vit = timm_vit()
    state = {**vit.state_dict(), "head.weight": torch.zeros(5, 32), "head.bias": torch.zeros(5)}
    per_view = dense(pretrained_weights=state)
    for g in range(2):  # one copy of timm's patch projection per view
        torch.testing.assert_close(
            per_view.embedder.proj.weight[32 * g : 32 * (g + 1)], state["patch_embed.proj.weight"]
        )
        torch.testing.assert_close(per_view.embedder.position[g, 0], state["pos_embed"][0, 1:])
    shared = dense(patch_embedding="shared", pretrained_weights=state)
    for key, value in shared.timm_state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    with pytest.raises(ValueError, match="mismatched|shape"):
        dense(hidden_size=64, mlp_dim=128, pretrained_weights=state)


def test_upcycles_m4oe_from_its_timm_state_dict():
    source = dense(patch_embedding="shared").timm_state_dict()
    torch.manual_seed(1)
    m4oe = M4oE(["cc", "mlo"], TASKS, image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4)
    report = upcycle_from_dense(m4oe, source)
    assert set(report.unused) == {"cls_token", "norm.weight", "norm.bias"}
    experts = m4oe.msoe.blocks[0].mlp.experts.w1  # (g e, d, h): every expert a copy of dense block 0's fc1
    torch.testing.assert_close(experts, source["blocks.0.mlp.fc1.weight"].t().expand_as(experts))
    fusion = m4oe.fusion[0].mlp.experts.w2
    torch.testing.assert_close(fusion, source["blocks.1.mlp.fc2.weight"].t().expand_as(fusion))
    with pytest.raises(ValueError, match="patch_embedding='shared'"):
        dense().timm_state_dict()


def test_missing_view_content_does_not_matter_present_view_does():
    model = dense().eval()
    batch = {"cc": torch.rand(2, 1, 16, 16), "mlo": torch.rand(2, 1, 16, 16)}
    batch["modality_mask"] = torch.tensor([[True, False], [True, True]])
    batch["mlo"][0] = float("nan")
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    other = {k: v.clone() for k, v in batch.items()}
    other["mlo"][0] = 5.0
    torch.testing.assert_close(model(other)["density"], out["density"])
    other["cc"][0] += 1.0
    assert not torch.allclose(model(other)["density"][0], out["density"][0])


def test_single_view_reads_only_its_view():
    torch.manual_seed(0)
    model = SingleViewViT(["cc", "mlo"], TASKS, view="mlo", **SIZES).eval()
    batch = {"cc": torch.rand(2, 1, 16, 16), "mlo": torch.rand(2, 1, 16, 16)}
    out = model(batch)
    torch.testing.assert_close(model({**batch, "cc": torch.rand(2, 1, 16, 16)})["risk"], out["risk"])
    assert not torch.allclose(model({**batch, "mlo": torch.rand(2, 1, 16, 16)})["risk"], out["risk"])
    absent = model({**batch, "modality_mask": torch.tensor([[True, False], [True, False]])})["risk"]
    torch.testing.assert_close(absent[0], absent[1])  # no view: both exams get the fill's prediction


def test_activation_checkpointing_same_values_and_gradients():
    batch = {"cc": torch.rand(3, 1, 16, 16), "mlo": torch.rand(3, 1, 16, 16)}
    grads = []
    for flag in (False, True):
        model = dense(activation_checkpointing=flag, dropout_rate=0.1)
        torch.manual_seed(3)
        out = model(batch)
        sum(v.logsumexp(-1).sum() for v in out.values()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="views"):
        dense(views=["cc", "ffdm"])
    with pytest.raises(ValueError, match="patch_embedding"):
        dense(patch_embedding="grouped")
    with pytest.raises(ValueError, match="missing_modality"):
        dense(missing_modality="mean")
    with pytest.raises(ValueError, match="retrieve"):
        SingleViewViT(["cc", "mlo"], TASKS, view="mlo", missing_modality="retriever", **SIZES)
    with pytest.raises(ValueError, match="not in"):
        create_model("single_view_vit", modalities=["cc", "mlo"], tasks=TASKS, view="s2d", **SIZES)
    model = dense()
    batch = {"cc": torch.rand(2, 1, 16, 16), "mlo": torch.rand(2, 1, 16, 16)}
    with pytest.raises(ValueError, match="modality_mask"):
        model({**batch, "modality_mask": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(KeyError, match="mlo"):
        model({"cc": batch["cc"]})
    batch["cc"][1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        model(batch)
