"""MultiTaskLoss with segmentation tasks: Dice + CE over present masks, classification unchanged."""

import pytest
import torch
from monai.losses import DiceCELoss

from medmoe.losses import MultiTaskLoss, masked_cross_entropy, masked_dice_ce, present_key


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    preds = {"grade": torch.randn(4, 3, generator=g), "cup": torch.randn(4, 2, 8, 8, generator=g)}
    labels = {
        "grade": torch.tensor([0, -1, 2, 1]),
        "cup": (torch.rand(4, 1, 8, 8, generator=g) > 0.5).long(),
        "cup_present": torch.tensor([True, True, False, True]),
    }
    return preds, labels


def test_classification_terms_unchanged_and_segmentation_is_dice_ce_on_present_samples():
    preds, labels = _data()
    loss = MultiTaskLoss(["grade"], segmentation_tasks=["cup"])(preds, labels)
    keep = labels["cup_present"]
    dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)(
        preds["cup"][keep], labels["cup"][keep]
    )
    torch.testing.assert_close(loss, masked_cross_entropy(preds["grade"], labels["grade"]) + dice_ce)
    # classification-only behaviour is identical to before
    only = MultiTaskLoss({"grade": 3})(preds, labels)
    torch.testing.assert_close(only, masked_cross_entropy(preds["grade"], labels["grade"]))


def test_no_flag_means_all_present_and_spatial_masks_are_accepted():
    preds, labels = _data()
    with_flag = masked_dice_ce(preds["cup"], labels["cup"], torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(masked_dice_ce(preds["cup"], labels["cup"]), with_flag)
    torch.testing.assert_close(masked_dice_ce(preds["cup"], labels["cup"][:, 0]), with_flag)
    assert present_key("cup") == "cup_present"


def test_all_absent_gives_differentiable_zero():
    preds, labels = _data()
    logits = preds["cup"].requires_grad_()
    out = masked_dice_ce(logits, torch.full((4, 1, 8, 8), -7), torch.zeros(4, dtype=torch.bool))
    out.backward()
    assert out.item() == 0.0 and logits.grad is not None


def test_rejects_bad_masks():
    preds, labels = _data()
    with pytest.raises(ValueError, match="mask must be"):
        masked_dice_ce(preds["cup"], torch.zeros(4, 1, 4, 4))
    bad = labels["cup"].clone()
    bad[0, 0, 0, 0] = 2
    with pytest.raises(ValueError, match="class indices"):
        masked_dice_ce(preds["cup"], bad)
    bad[0, 0, 0, 0] = 0
    bad[2, 0, 0, 0] = 5  # an absent sample's placeholder is never checked
    masked_dice_ce(preds["cup"], bad, labels["cup_present"])
    with pytest.raises(KeyError, match="cup"):
        MultiTaskLoss(["grade"], segmentation_tasks=["cup"])({"grade": preds["grade"]}, labels)
