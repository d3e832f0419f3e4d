"""fastMRI h5 + fastMRI+ annotations -> per-slice cohort: label groups, unannotated slices, volume splits."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from medmoe.data import build_fastmri_cohort, fastmri_label_groups, load_cohort
from medmoe.data.demo_fastmri import FASTMRI_COLUMNS, FASTMRI_LABELS


def _volumes(root: Path, count: int, slices: int = 3) -> list[str]:
    (root / "knee").mkdir(parents=True)
    names = [f"file{1000000 + v}" for v in range(count)]
    for name in names:
        with h5py.File(root / "knee" / f"{name}.h5", "w") as f:
            f.create_dataset("kspace", data=np.ones((slices, 8, 8), np.complex64))
    return names


@pytest.mark.parametrize(
    "label, groups",
    [
        ("ACL High Grade Sprain", {"acl"}),
        ("Meniscus Tear", {"meniscus"}),
        ("Cartilage - Partial Thickness loss/defect", {"cartilage"}),
        ("Cartilage - Full Thickness loss/defect", {"cartilage"}),
        ("Joint Effusion", {"other"}),
        ("Displaced Meniscal Tissue", {"other"}),
        ("", set()),
        ("None", set()),
    ],
)
def test_label_groups(label: str, groups: set) -> None:
    assert fastmri_label_groups(label) == groups


def test_cohort_labels_and_unannotated_slices(tmp_path: Path) -> None:
    names = _volumes(tmp_path, 3)
    notes = pd.DataFrame(
        {
            "file": [names[0], names[0], names[0], names[1], names[1]],
            "slice": ["1", "1", "2", "0", ""],
            "label": ["ACL High Grade Sprain", "Joint Effusion", "Meniscus Tear", "Cartilage - Partial Thickness", "x"],
        }
    )
    out = tmp_path / "cohort.csv"
    table = build_fastmri_cohort(tmp_path / "knee", notes, out)
    assert list(table.columns) == list(FASTMRI_COLUMNS)
    assert set(table["volume"]) == set(names[:2])  # names[2] has no annotation: dropped
    labels = table.set_index("slice_id")[list(FASTMRI_LABELS)]
    assert labels.loc[f"{names[0]}_s001"].tolist() == [1, 0, 0, 1]
    assert labels.loc[f"{names[0]}_s002"].tolist() == [0, 1, 0, 0]
    assert labels.loc[f"{names[0]}_s000"].tolist() == [0, 0, 0, 0]
    assert labels.loc[f"{names[1]}_s000"].tolist() == [0, 0, 1, 0]
    assert labels.loc[[f"{names[1]}_s001", f"{names[1]}_s002"]].to_numpy().sum() == 0
    written = pd.read_csv(out)
    assert written["kspace"].iloc[0] == f"knee/{names[0]}.h5"
    load_cohort(out, ["kspace"], dict.fromkeys(FASTMRI_LABELS, 2), id_column="slice_id", required_splits=())
    everything = build_fastmri_cohort(tmp_path / "knee", notes, annotated_only=False)
    assert set(everything["volume"]) == set(names)


def test_split_by_volume(tmp_path: Path) -> None:
    names = _volumes(tmp_path, 20, slices=2)
    notes = pd.DataFrame({"file": names, "slice": ["0"] * 20, "label": ["Meniscus Tear"] * 20})
    table = build_fastmri_cohort(tmp_path / "knee", notes, seed=3)
    per_volume = table.groupby("volume")["split"].agg(["nunique", "first"])
    assert (per_volume["nunique"] == 1).all()
    assert per_volume["first"].value_counts().to_dict() == {"train": 14, "val": 3, "test": 3}
    again = build_fastmri_cohort(tmp_path / "knee", notes, seed=3)
    pd.testing.assert_frame_equal(table, again)


def test_bad_annotations(tmp_path: Path) -> None:
    names = _volumes(tmp_path, 2)
    with pytest.raises(ValueError, match="missing column"):
        build_fastmri_cohort(tmp_path / "knee", pd.DataFrame({"file": names}))
    bad = pd.DataFrame({"file": names, "slice": ["7", "a"], "label": ["ACL", "ACL"]})
    with pytest.raises(ValueError, match=r"(?s)out of range.*not an integer"):
        build_fastmri_cohort(tmp_path / "knee", bad)
    with pytest.raises(ValueError, match="no volume left"):
        build_fastmri_cohort(tmp_path / "knee", pd.DataFrame({"file": ["other"], "slice": ["0"], "label": ["ACL"]}))


def test_duplicate_volume_names_raise_and_unmatched_annotations_warn(tmp_path: Path, caplog) -> None:
    names = _volumes(tmp_path, 2)
    notes = pd.DataFrame({"file": [names[0], names[1], "file9999999"], "slice": ["0", "1", "0"], "label": ["ACL"] * 3})
    with caplog.at_level("WARNING", logger="medmoe.data.fastmri_adapter"):
        table = build_fastmri_cohort(tmp_path / "knee", notes)
    assert set(table["volume"]) == set(names)
    assert "1 annotated volume(s) have no h5 file" in caplog.text and "file9999999" in caplog.text
    (tmp_path / "knee" / "multicoil").mkdir()
    copy = tmp_path / "knee" / "multicoil" / f"{names[1]}.h5"
    copy.write_bytes((tmp_path / "knee" / f"{names[1]}.h5").read_bytes())
    with pytest.raises(
        ValueError, match=rf"1 volume name\(s\) found in several h5 files[\s\S]*{names[1]}: .*multicoil"
    ):
        build_fastmri_cohort(tmp_path / "knee", notes)
