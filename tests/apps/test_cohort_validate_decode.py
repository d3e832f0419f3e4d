"""cohort validate decodes every image as the bundle would and names each bad row, column and file."""

from pathlib import Path

import pandas as pd
import pydicom
import pytest
from medmoe.apps.cohort import main

from medmoe.data import make_embed_demo

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "bundles" / "embed_m4oe" / "configs" / "train.json")


def _rewrite(path: Path, edit) -> None:
    """Decompress a demo DICOM, apply ``edit(ds)`` and save it uncompressed."""
    ds = pydicom.dcmread(path)
    ds.decompress()
    edit(ds)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture()
def bad_cohort(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """A demo cohort with one broken file per kind that a header check lets through; -> (csv, {csv line: text})."""
    csv = make_embed_demo(tmp_path / "demo", num_exams=24, image_size=(48, 40))
    rows = pd.read_csv(csv)
    root = csv.parent

    def truncate(ds):
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    def no_pixels(ds):
        del ds.PixelData

    def wrong_size(ds):
        ds.Rows = ds.Rows * 2

    def rgb(ds):  # the header says colour, the pixels are one grey channel
        ds.PhotometricInterpretation = "RGB"

    def ct(ds):
        ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"

    expected = {}
    for i, (column, edit, text) in enumerate(
        [
            ("ffdm_cc", truncate, "ffdm_cc"),
            ("ffdm_mlo", no_pixels, "ffdm_mlo"),
            ("s2d_cc", wrong_size, "s2d_cc"),
            ("s2d_mlo", ct, "not a mammogram (Modality 'CT'"),
            ("ffdm_cc", rgb, "PhotometricInterpretation RGB"),
        ]
    ):
        index = rows.index[rows[column].notna()][i]
        _rewrite(root / rows.loc[index, column], edit)
        expected[index + 2] = f"column '{column}'"  # CSV line = index + 2 (header line 1)
        expected[-(index + 2)] = text
    return csv, expected


def test_headers_pass_but_decoding_names_every_bad_row(bad_cohort, capsys):
    csv, expected = bad_cohort
    common = ["validate", "--cohort_csv", str(csv), "--config_file", CONFIG, "--quiet"]
    assert main([*common, "--headers_only"]) == 0  # what a header check cannot see
    assert "headers checked" in capsys.readouterr().out
    assert main([*common, "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "5 row(s) the bundle's loader would reject" in err
    lines = {
        int(line.split("row ")[1].split(" ")[0]): line for line in err.splitlines() if line.strip().startswith("row ")
    }
    for line_number, text in expected.items():
        assert text in lines[abs(line_number)], (line_number, lines)
    assert main([*common, "--workers", "1"]) == 1  # the same without worker processes
    assert err.split("reject:")[1] == capsys.readouterr().err.split("reject:")[1]


def test_decoding_without_a_config_reads_every_file(bad_cohort, capsys):
    csv, _ = bad_cohort
    code = main(["validate", "--cohort_csv", str(csv), "--modalities", "ffdm_cc,ffdm_mlo,s2d_cc,s2d_mlo", "--tasks",
                 "density:4", "--workers", "1", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    # the generic reader decodes pixels; the CT is a readable image there (only the bundle refuses it)
    assert code == 1 and "4 row(s)" in err and "column 'ffdm_mlo'" in err
