"""The entries every bundle shares live in bundles/shared/configs.json; the bundles' copies must match it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from medmoe.apps.bundle_sync import check, dumps, main, sync

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _copy_bundles(tmp_path: Path) -> Path:
    """The bundles' configs folders and the shared source, copied under ``tmp_path/bundles``."""
    out = tmp_path / "bundles"
    for configs in BUNDLES.glob("*/configs"):
        shutil.copytree(configs, out / configs.parent.name / "configs")
    shutil.copytree(BUNDLES / "shared", out / "shared")
    return out


def _edit(path: Path, edit) -> None:
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config, indent=4))


def test_bundles_match_the_shared_source():
    """The committed bundles hold exactly the shared entries (run `python -m medmoe.apps.bundle_sync` if not)."""
    assert check(BUNDLES) == []
    shared = json.loads((BUNDLES / "shared" / "configs.json").read_text())
    assert set(shared) == {"train.json", "multi_gpu_train.json", "evaluate.json"}
    assert len(shared["train.json"]) > 40


def test_check_names_bundle_file_and_id_that_drifted(tmp_path, capsys):
    bundles = _copy_bundles(tmp_path)
    _edit(bundles / "gamma_m4oe/configs/train.json", lambda c: c["train"]["trainer"].update(decollate=True))
    _edit(bundles / "adni_i2moe/configs/multi_gpu_train.json", lambda c: c.update({"train#dataloader#shuffle": True}))
    _edit(bundles / "embed_m4oe/configs/evaluate.json", lambda c: c["eval_writer"].pop("n_bootstrap"))
    problems = check(bundles)
    assert len(problems) == 3, problems
    assert any(p.startswith("gamma_m4oe/configs/train.json: id 'train#trainer' differs") for p in problems)
    assert any(p.startswith("adni_i2moe/configs/multi_gpu_train.json: id 'train#dataloader#shuffle'") for p in problems)
    assert "embed_m4oe/configs/evaluate.json: id 'eval_writer#n_bootstrap' is missing" in problems
    assert main(["--check", "--bundles", str(bundles)]) == 1
    assert "gamma_m4oe/configs/train.json" in capsys.readouterr().err

    sync(bundles)  # writing restores the shared values ...
    assert check(bundles) == []
    gamma = json.loads((bundles / "gamma_m4oe/configs/train.json").read_text())
    assert gamma["train"]["trainer"]["decollate"] is False
    assert list(gamma) == list(json.loads((BUNDLES / "gamma_m4oe/configs/train.json").read_text()))  # same order
    assert sync(bundles) == []  # ... and a second sync changes nothing


def test_sync_adds_a_new_shared_id_in_place_and_keeps_bundle_entries(tmp_path):
    bundles = _copy_bundles(tmp_path)
    shared_path = bundles / "shared" / "configs.json"
    shared = json.loads(shared_path.read_text())
    train = list(shared["train.json"].items())
    at = [k for k, _ in train].index("seed") + 1
    train.insert(at, ("deterministic", True))
    train.append(("checkpoint#save_every", None))
    shared["train.json"] = dict(train)
    shared["multi_gpu_train.json"]["validate#dataloader#drop_last"] = False
    shared_path.write_text(dumps(shared))
    assert any("'deterministic' is missing" in p for p in check(bundles))

    sync(bundles)
    assert check(bundles) == []
    for name in ("embed_m4oe", "fastmri_i2m2"):
        before = json.loads((BUNDLES / name / "configs/train.json").read_text())
        after = json.loads((bundles / name / "configs/train.json").read_text())
        keys = list(after)
        assert keys[keys.index("seed") + 1] == "deterministic"  # after the shared id that precedes it
        assert list(after["checkpoint"])[-1] == "save_every"
        assert after["modalities"] == before["modalities"]  # the bundle's own entries are kept
        multi = json.loads((bundles / name / "configs/multi_gpu_train.json").read_text())
        assert multi["validate#dataloader#drop_last"] is False  # a top-level override id, as MONAI reads it
        assert "validate" not in multi


def test_bad_shared_source_is_named(tmp_path):
    bundles = _copy_bundles(tmp_path)
    shared = bundles / "shared" / "configs.json"
    shared.write_text('{"train": {"seed": 0}}')
    with pytest.raises(ValueError, match="config file names"):
        check(bundles)
    shared.write_text('{"train.json": {"train#trainer": {}, "train#trainer#amp": false}}')
    with pytest.raises(ValueError, match="'train#trainer#amp' lies inside 'train#trainer'"):
        sync(bundles)
