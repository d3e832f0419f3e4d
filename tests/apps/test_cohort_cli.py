"""``python -m medmoe.apps.cohort validate --config_file``: the bundle's own checks, on each bundle's demo cohort."""

from __future__ import annotations

from pathlib import Path

import pytest
from medmoe.apps.cohort import main

from medmoe.data import make_adni_demo, make_embed_demo, make_fastmri_demo, make_gamma_demo

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

DEMOS = {  # bundle -> a small demo cohort written with the generator's own size arguments
    "embed_m4oe": lambda root: make_embed_demo(root, num_exams=20, image_size=(32, 32)),
    "gamma_m4oe": lambda root: make_gamma_demo(root, num_cases=12, fundus_size=48, num_bscans=2, bscan_size=16),
    "adni_i2moe": lambda root: make_adni_demo(root, num_subjects=20, image_size=16),
    "fastmri_i2m2": lambda root: make_fastmri_demo(root, num_volumes=8, num_slices=2, image_size=32),
}


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMOE_CACHE", str(tmp_path / "cache"))  # nothing may touch the user's demo cache


def test_every_bundle_is_listed():
    assert sorted(DEMOS) == sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "train.json").is_file())


@pytest.mark.parametrize("bundle", sorted(DEMOS))
def test_each_bundles_demo_cohort_validates_with_its_config(bundle, tmp_path, capsys):
    csv = DEMOS[bundle](tmp_path / "demo")
    config = str(BUNDLES / bundle / "configs" / "train.json")
    assert main(["validate", "--cohort_csv", str(csv), "--config_file", config]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "rows OK" in out and "train:" in out and "val:" in out
    assert not (tmp_path / "cache").exists()  # the config's default demo cohort was not generated


def test_config_checks_are_the_bundles_own(tmp_path, capsys):
    csv = make_adni_demo(tmp_path / "adni", num_subjects=20, image_size=16)
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("mmse")] = "thirty"  # a tabular block's numeric cell: checked by load_tabular_cohort
    csv.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    config = str(BUNDLES / "adni_i2moe" / "configs" / "train.json")
    assert main(["validate", "--cohort_csv", str(csv), "--config_file", config, "--headers_only"]) == 1
    err = capsys.readouterr().err
    assert "row 2" in err and "'mmse'" in err and "thirty" in err

    csv = make_fastmri_demo(tmp_path / "fastmri", num_volumes=8, num_slices=2, image_size=32)
    csv.write_text(csv.read_text().replace(",slice,", ",slice_index,", 1))  # fastMRI's extra 'slice' column
    config = str(BUNDLES / "fastmri_i2m2" / "configs" / "train.json")
    assert main(["validate", "--cohort_csv", str(csv), "--config_file", config, "--skip_files"]) == 1
    assert "missing column(s) ['slice']" in capsys.readouterr().err


def test_config_cohort_check_runs_the_pipelines_own_checks(tmp_path, capsys):
    # gamma_m4oe's loader accepts a case without a fundus (a missing modality), its data pipeline does not: the
    # config's cohort_check entry makes validate report it before training, naming the row and the case
    import pandas as pd

    csv = DEMOS["gamma_m4oe"](tmp_path / "gamma")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    case = table.loc[3, "case_id"]
    table.loc[3, "fundus"] = ""
    table.to_csv(csv, index=False)
    config = str(BUNDLES / "gamma_m4oe" / "configs" / "train.json")
    assert main(["validate", "--cohort_csv", str(csv), "--config_file", config]) == 1
    err = capsys.readouterr().err
    assert "row 5" in err and repr(case) in err and "no 'fundus' image" in err
    # the bundle's own switch is honoured: with missing_fundus='skip' the case is dropped, not an error
    text = Path(config).read_text().replace('"missing_fundus": "error"', '"missing_fundus": "skip"')
    assert text != Path(config).read_text()
    skip = tmp_path / "train_skip.json"
    skip.write_text(text)
    assert main(["validate", "--cohort_csv", str(csv), "--config_file", str(skip)]) == 0


def test_without_config(tmp_path, capsys):
    csv = make_embed_demo(tmp_path / "embed", num_exams=20, image_size=(32, 32))
    args = ["validate", "--cohort_csv", str(csv), "--modalities", "ffdm_cc,s2d_cc", "--tasks", "density:4"]
    assert main(args) == 0
    assert "(2 modalities, 1 tasks; every image decoded)" in capsys.readouterr().out
    assert main(["validate", "--cohort_csv", str(tmp_path / "nowhere.csv"), "--modalities", "ffdm_cc"]) == 1
    assert "cohort file not found" in capsys.readouterr().err


@pytest.mark.parametrize("bundle", ["embed_m4oe", "adni_i2moe"])
def test_no_split_validates_an_inference_cohort_without_labels(bundle, tmp_path, capsys):
    import pandas as pd

    csv = DEMOS[bundle](tmp_path / "demo")
    table = pd.read_csv(csv)
    label_columns = {"embed_m4oe": ["density", "birads", "risk"], "adni_i2moe": ["diagnosis"]}[bundle]
    unlabelled = csv.with_name("unlabelled.csv")
    table.drop(columns=[*label_columns, "split"]).to_csv(unlabelled, index=False)
    config = str(BUNDLES / bundle / "configs" / "train.json")
    args = ["validate", "--cohort_csv", str(unlabelled), "--config_file", config, "--no_split", "--headers_only"]
    assert main(args) == 0, capsys.readouterr().err
    assert "rows OK" in capsys.readouterr().out
