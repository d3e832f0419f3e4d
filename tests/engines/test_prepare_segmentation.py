"""MultimodalPrepareBatch with a segmentation task: mask + per-sample presence flag."""

import torch

from medmoe.engines import MultimodalPrepareBatch


def _batch():
    return {
        "fundus": torch.rand(3, 1, 8, 8),
        "oct": torch.rand(3, 1, 8, 8),
        "modality_mask": torch.ones(3, 2, dtype=torch.bool),
        "grade": torch.tensor([0, 1, -1]),
    }


def test_mask_and_flag_from_the_batch():
    prep = MultimodalPrepareBatch(["fundus", "oct"], {"grade": 3}, segmentation_tasks={"cup": {"modality": "fundus"}})
    batch = {**_batch(), "cup": torch.ones(3, 1, 8, 8), "cup_present": torch.tensor([True, False, True])}
    inputs, targets = prep(batch)
    assert set(inputs) == {"fundus", "oct", "modality_mask"}
    assert targets["cup"].dtype == torch.long and targets["cup"].shape == (3, 1, 8, 8)
    assert targets["cup_present"].tolist() == [True, False, True]
    assert targets["grade"].tolist() == [0, 1, -1]


def test_mask_without_flag_is_present_and_no_mask_is_absent():
    prep = MultimodalPrepareBatch(["fundus", "oct"], ["grade"], segmentation_tasks=["cup"])
    _, targets = prep({**_batch(), "cup": torch.zeros(3, 1, 8, 8)})
    assert targets["cup_present"].all()
    _, targets = prep(_batch())  # inference: no mask in the batch
    assert not targets["cup_present"].any() and targets["cup"].shape[0] == 3
