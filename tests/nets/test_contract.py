"""The model contract (medmoe/nets/contract.py), checked for every registered model: build it tiny from the
registry and run :class:`TestModelContract`. A new model is tested by registering it and adding a tiny config."""

import copy
import io

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from medmoe.engines import finish_distributed
from medmoe.nets import INTERPRETATIONS, ModelOutput, MultimodalModel, create_model, list_models

TASKS = {"density": 4, "birads": 3, "risk": 2}
# the three ViT-style models share their sizes, so the dense baselines are M4oE's counterparts
VIT = dict(modalities=["cc", "mlo", "s2d_cc"], tasks=TASKS, image_size=16, patch_size=4, hidden_size=32, num_heads=4)
TINY = {
    "m4oe": dict(**VIT, mlp_dim=32, msoe_experts=4, mtoe_experts=4, fusion_experts=2),
    "dense_vit": dict(**VIT, mlp_dim=32, depth=2),
    "single_view_vit": dict(**VIT, mlp_dim=32, depth=2, view="mlo"),
    "i2m2": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        base_channels=4,
        blocks=(1, 1, 1, 1),
        norm_groups=2,
    ),
    "fusion": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        in_features=256,
        hidden_size=16,
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
    ),
    "i2moe": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        in_features=256,
        hidden_size=16,
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
        identical_init=False,  # identical experts give the reweighting model no gradient before the first step
    ),
    "timm_classifier": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        modality="mlo",
        backbone="mobilenetv3_small_050",
        in_channels=1,
        missing_modality="zero",  # the batches below lack a view in some samples
    ),
    "unet": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        segmentation_tasks={"lesion": {"classes": 2}},
        modality="mlo",
        encoder="ghostnet_050",  # 16 x 16 inputs need encoder_depth <= 4, where many timm encoders keep dead stages
        encoder_depth=4,
        decoder_channels=(16, 8, 8, 8),
        in_channels=1,
        missing_modality="zero",
    ),
}


# configurations whose auxiliary losses come from a filled modality (the retriever), checked like the models
RETRIEVER = {"num_supports": 2, "num_candidates": 2, "num_shared": 1, "top_k": 1, "capacity": 16}
VARIANTS = {
    **{name: (name, {}) for name in TINY},
    "m4oe+retriever": ("m4oe", {"missing_modality": "retriever", "retriever_kwargs": RETRIEVER}),
    # one timm backbone shared by the views (test_efficientnet: no zero-initialised residual BN, so every
    # parameter gets a gradient at initialisation)
    "m4oe+shared_timm": ("m4oe", {"embedder": "timm:test_efficientnet", "shared_backbone": True}),
    "i2moe+retriever": ("i2moe", {"missing_modality": "retriever", "retriever_kwargs": RETRIEVER}),
    "dense_vit+shared": ("dense_vit", {"patch_embedding": "shared"}),
    "dense_vit+retriever": ("dense_vit", {"missing_modality": "retriever", "retriever_kwargs": RETRIEVER}),
}


def tiny_batch(modalities, b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.rand(b, 1, size, size, generator=g) for k in modalities}
    batch["modality_mask"] = torch.ones(b, len(modalities), dtype=torch.bool)
    return batch


def build(variant: str, seed: int = 0) -> MultimodalModel:
    name, extra = VARIANTS[variant]
    torch.manual_seed(seed)
    return create_model(name, **TINY[name], **extra)


def batch_with_gaps(variant: str, seed: int) -> dict:
    """A batch with one absent view per sample in its first half (so fills and aux losses have work), ids."""
    batch = tiny_batch(TINY[VARIANTS[variant][0]]["modalities"], seed=seed)
    batch["modality_mask"][0, 1] = batch["modality_mask"][1, (seed + 2) % 3] = False
    batch["id"] = [f"s{seed}_{i}" for i in range(4)]
    return batch


def task_loss(out: ModelOutput) -> torch.Tensor:
    return sum(v.logsumexp(-1).sum() for v in out.values()) + sum(out.aux_losses.values())


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_output(a: ModelOutput, b: ModelOutput) -> None:
    assert set(a) == set(b) and set(a.aux_losses) == set(b.aux_losses)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    for key in a.aux_losses:
        torch.testing.assert_close(a.aux_losses[key], b.aux_losses[key], rtol=0, atol=0)
    for key in ("expert_weights", "modality_contributions"):
        if key in a.interpret:
            torch.testing.assert_close(a.interpret[key], b.interpret[key], rtol=0, atol=0)


def test_every_registered_model_has_a_tiny_config():
    assert set(list_models()) <= set(TINY), f"add a tiny config for {set(list_models()) - set(TINY)}"


@pytest.mark.parametrize("variant", list(VARIANTS))
class TestModelContract:
    """What every model provides (medmoe.nets.MultimodalModel)."""

    def test_output_is_the_contract(self, variant):
        model = build(variant)
        assert isinstance(model, MultimodalModel) and model.interpretations <= set(INTERPRETATIONS)
        for mode in (True, False):
            out = model.train(mode)(batch_with_gaps(variant, 0))
            segmentation = TINY[VARIANTS[variant][0]].get("segmentation_tasks", {})
            assert isinstance(out, ModelOutput) and set(out) == set(TASKS) | set(segmentation)
            for task, classes in TASKS.items():
                assert out[task].shape == (4, classes) and torch.isfinite(out[task]).all()
            for task, spec in segmentation.items():
                assert out[task].shape == (4, spec["classes"], 16, 16) and torch.isfinite(out[task]).all()
            assert all(v.dim() == 0 and torch.isfinite(v) for v in out.aux_losses.values())
            assert model.interpretations <= set(out.interpret) <= set(INTERPRETATIONS), (mode, sorted(out.interpret))
            assert not any(isinstance(v, torch.Tensor) for v in vars(model).values()), "state kept on the model"

    def test_every_parameter_receives_a_gradient(self, variant):
        model = build(variant)
        model(batch_with_gaps(variant, 1))  # fills a retriever's support bank
        task_loss(model(batch_with_gaps(variant, 0))).backward()
        dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, f"No gradient for {dead}"

    def test_state_dict_round_trip_gives_identical_outputs(self, variant):
        model = build(variant)
        model(batch_with_gaps(variant, 1))  # a retriever's bank is state too
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        fresh = build(variant, seed=1)
        fresh.load_state_dict(torch.load(buffer, weights_only=False))
        batch = batch_with_gaps(variant, 0)
        assert_same_output(model.eval()(batch), fresh.eval()(batch))

    @pytest.mark.parametrize("checkpointed", [False, True])
    def test_two_forwards_in_one_step_keep_their_own_auxiliary_losses(self, variant, checkpointed):
        if checkpointed and "retriever" in variant:
            pytest.skip("the retriever's support bank update is a side effect that a recompute would repeat")
        model = build(variant)
        reference = copy.deepcopy(model)
        batch_a, batch_b = batch_with_gaps(variant, 0), batch_with_gaps(variant, 1)
        torch.manual_seed(5)
        alone = reference(batch_a)  # forward A and nothing else
        task_loss(alone).backward()
        torch.manual_seed(5)
        out_a = checkpoint(model, batch_a, use_reentrant=False) if checkpointed else model(batch_a)
        out_b = model(batch_b)  # a second forward in the same step
        assert_same_output(out_a, alone)
        assert any(not torch.equal(out_a.aux_losses[k], out_b.aux_losses[k]) for k in out_a.aux_losses) or not (
            out_a.aux_losses
        )
        task_loss(out_a).backward()
        expected = grads(reference)
        assert grads(model).keys() == expected.keys()
        for name, grad in grads(model).items():
            torch.testing.assert_close(grad, expected[name], msg=name)

    def test_eval_is_deterministic(self, variant):
        model = build(variant)
        model(batch_with_gaps(variant, 1))
        model.eval()
        batch = batch_with_gaps(variant, 0)
        assert_same_output(model(batch), model(batch))


def test_m4oe_missing_modality_placeholders_never_leak():
    model = create_model("m4oe", **TINY["m4oe"]).eval()
    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["modality_mask"][1, 0] = False
    batch["cc"][1] = float("nan")  # the data layer's explicit placeholder
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    # a missing view's content does not matter; a present view's does
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["cc"][1] = 123.0
    torch.testing.assert_close(model(batch2)["density"], out["density"])
    batch2["mlo"][1] += 1.0
    assert not torch.allclose(model(batch2)["density"][1], out["density"][1])


def test_m4oe_rejects_bad_input():
    model = create_model("m4oe", **TINY["m4oe"])
    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["cc"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(batch)
    with pytest.raises(KeyError, match="mlo"):
        model({"cc": torch.rand(2, 1, 16, 16), "s2d_cc": torch.rand(2, 1, 16, 16)})
    with pytest.raises(ValueError, match="modality_mask"):
        model({**tiny_batch(TINY["m4oe"]["modalities"]), "modality_mask": torch.ones(4, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="missing_modality"):
        create_model("m4oe", **{**TINY["m4oe"], "missing_modality": "mean"})


def test_m4oe_modality_contributions_are_conditional_distributions():
    model = create_model("m4oe", **TINY["m4oe"]).eval()
    out = model(tiny_batch(TINY["m4oe"]["modalities"]))
    contrib = out.interpret["modality_contributions"]
    assert contrib.shape == (4, len(TASKS), 3)
    torch.testing.assert_close(contrib.sum(-1), torch.ones(4, len(TASKS)))
    assert out.aux_losses["mutual_information"].item() >= -1e-6

    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["modality_mask"][1, 2] = False  # sample 1 lacks its third view
    batch["s2d_cc"][1] = float("nan")
    interpret = model(batch).interpret
    contrib = interpret["modality_contributions"]
    assert torch.all(contrib[1, :, 2] == 0) and torch.all(contrib[0, :, 2] > 0)
    torch.testing.assert_close(contrib.sum(-1), torch.ones(4, len(TASKS)))
    torch.testing.assert_close(interpret["modality_task_joint"].sum((1, 2)), torch.ones(4))
    pi = interpret["modality_expert_task_joint"]  # (b, M, E, T): the MI loss's joint, P(M, T) its sum over experts
    assert pi.shape == (4, 3, 4, len(TASKS)) and not pi.requires_grad
    p_mt = pi.sum(2) * batch["modality_mask"].unsqueeze(-1)
    torch.testing.assert_close(p_mt / p_mt.sum((1, 2), keepdim=True), interpret["modality_task_joint"])


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'nope'.*m4oe"):
        create_model("nope")
    assert list_models("m4*") == ["m4oe"]


def test_model_output_is_a_task_dict_whose_extra_fields_travel_with_it():
    import pickle

    import torch.utils._pytree as pytree

    out = ModelOutput({"dx": torch.ones(2, 3)}, {"mi": torch.tensor(0.5)}, {"modality_mask": torch.ones(2, 1).bool()})
    assert list(out) == ["dx"] and dict(out).keys() == {"dx"}  # metrics / decollate see the tasks only
    leaves, spec = pytree.tree_flatten(out)  # DDP and torch.compile find every tensor, not only the tasks'
    assert len(leaves) == 3
    back = pytree.tree_unflatten([leaf * 2 for leaf in leaves], spec)
    assert isinstance(back, ModelOutput) and back.aux_losses["mi"] == 1.0 and back["dx"].sum() == 12
    copied = pickle.loads(pickle.dumps(out))
    assert copied.aux_losses.keys() == {"mi"} and copied.interpret.keys() == {"modality_mask"}


def _ddp_worker(rank: int, path: str, result: str) -> None:
    import torch.distributed as dist

    from medmoe.blocks import exclude_banks_from_ddp_broadcast

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    model = build("i2moe+retriever")
    ddp = torch.nn.parallel.DistributedDataParallel(exclude_banks_from_ddp_broadcast(model))
    model(batch_with_gaps("i2moe+retriever", 1))  # fill the rank's support bank (no gradient step)
    out = ddp(batch_with_gaps("i2moe+retriever", 2 + rank))  # each rank its own batch
    task_loss(out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.save({"type": type(out).__name__, "aux": sorted(out.aux_losses), "grads": grads}, f"{result}{rank}.pt")
    finish_distributed()  # barrier, destroy, exit 0 without the finalization abort (medmoe.engines)


def test_the_output_passes_through_distributed_data_parallel(tmp_path):
    # the bundles' multi_gpu_train.json wraps the model in DDP: its output keeps aux_losses and the gradients of
    # the auxiliary losses are all-reduced with the rest (CPU, gloo, 2 ranks)
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "rank")), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert all(r["type"] == "ModelOutput" for r in ranks)
    assert ranks[0]["aux"] == ["interaction", "retriever_balance", "retriever_importance"] == ranks[1]["aux"]
    for name, grad in ranks[0]["grads"].items():
        torch.testing.assert_close(grad, ranks[1]["grads"][name], msg=name)  # averaged over the two batches
    assert ranks[0]["grads"]["encoders.missing_fill.retriever.w_noise"].abs().sum() > 0  # reached via aux only


def test_m4oe_mutual_information_over_present_tokens_only():
    from medmoe.losses import conditional_mutual_information

    models = {}
    for tokens in ("all", "present"):
        torch.manual_seed(0)
        models[tokens] = create_model("m4oe", **TINY["m4oe"], mi_tokens=tokens).eval()
    full = tiny_batch(TINY["m4oe"]["modalities"])
    mi = {k: m(full).aux_losses["mutual_information"] for k, m in models.items()}
    torch.testing.assert_close(mi["all"], mi["present"])  # nothing absent: the same joint
    partial = tiny_batch(TINY["m4oe"]["modalities"])
    partial["modality_mask"][1, 2] = partial["modality_mask"][3, 0] = False
    out = {k: m(partial) for k, m in models.items()}
    pi = out["all"].interpret["modality_expert_task_joint"]  # every token, the "all" loss's joint
    torch.testing.assert_close(out["all"].aux_losses["mutual_information"], conditional_mutual_information(pi))
    kept = pi * partial["modality_mask"][:, :, None, None]
    expected = conditional_mutual_information(kept / kept.sum((1, 2, 3), keepdim=True))
    torch.testing.assert_close(out["present"].aux_losses["mutual_information"], expected)
    assert not torch.allclose(expected, conditional_mutual_information(pi))
    with pytest.raises(ValueError, match="mi_tokens"):
        create_model("m4oe", **TINY["m4oe"], mi_tokens="some")
