"""Ids as file names: hostile ids stay inside the output folder, get valid names, and never share a file."""

import logging

import pytest
import torch
from ignite.engine import Engine

from medmoe.engines import EvaluationWriter
from medmoe.utils import FileNames, id_file_stem, safe_stem

HOSTILE = ["../../../x", "a/b/x", "CON", "nul.txt", ".hidden", "..", "a\\b", "x" * 300]


@pytest.mark.parametrize("sample_id", HOSTILE)
def test_a_hostile_id_becomes_one_plain_file_name(sample_id):
    stem = id_file_stem(sample_id)
    assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and stem not in (".", "..")
    assert stem.split(".")[0].upper() not in {"CON", "NUL", "PRN", "AUX"}
    assert 0 < len(stem) <= 100 and stem == id_file_stem(sample_id)  # deterministic
    assert stem != sample_id and stem[-9] == "-"  # a changed id carries 8 hex of its SHA-1
    int(stem[-8:], 16)


def test_clean_ids_are_kept_and_ids_that_sanitise_alike_get_different_names():
    assert id_file_stem("case_001") == "case_001" and id_file_stem("IMG-1.2") == "IMG-1.2"
    assert safe_stem("a/b") == safe_stem("a_b") == "a_b"
    assert len({id_file_stem(i) for i in ["a/b", "a_b", "a\\b", "a b"]}) == 4


def test_two_ids_for_one_file_raise_naming_both(tmp_path):
    names = FileNames(tmp_path)
    assert names("Case1") == "Case1" and names("Case1") == "Case1"  # the same id again is fine
    with pytest.raises(ValueError, match="'Case1' and 'case1'"):  # one file on case-insensitive file systems
        names("case1")


def test_mask_pngs_of_hostile_ids_stay_in_the_masks_folder(tmp_path, caplog):
    ids = ["../../../x", "a/b/x", "CON", "ok_1"]
    out = tmp_path / "bundle" / "eval"
    logits = torch.zeros(len(ids), 2, 4, 4)
    logits[:, 1, :2] = 1.0

    def step(engine, _):
        return {"pred": {"cup": logits}, "label": {}}

    engine = Engine(step)
    writer = EvaluationWriter(
        out,
        {},
        id_key="id",
        with_metrics=False,
        segmentation_tasks={"cup": {"classes": 2}},
        mask_palette={"cup": [255, 0]},
    )
    writer.attach(engine)
    with caplog.at_level(logging.WARNING):
        engine.run([{"id": ids}])
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    masks = [p for p in written if p.parent.name == "cup_masks"]
    assert len(masks) == 4 and all(p.parent == out.relative_to(tmp_path) / "cup_masks" for p in masks)
    assert not (tmp_path / "x").exists() and not (out / "cup_masks" / "a").exists()  # nothing outside, no folders
    names = {p.stem for p in masks}
    assert "ok_1" in names and {id_file_stem(i) for i in ids} == names
    assert "'../../../x' is not a safe file name" in caplog.text and "'CON'" in caplog.text
