"""Tests of the synthetic EMBED-style demo cohort (medmoe.data.demo_embed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage, stats

from medmoe.data.demo_embed import DEMO_NAME, embed_demo_cohort, make_embed_demo
from medmoe.data.demo_mammo_images import STORED_SPAN, DicomTags, mammo_dataset
from medmoe.data.embed_adapter import COHORT_COLUMNS, VIEW_SLOTS

NUM_EXAMS = 64
MAMMO_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as handle:
        return list(csv.DictReader(handle))


def display_image(path: Path) -> np.ndarray:
    """The rendered [0, 1] image back from the stored values (MONOCHROME1 inverted): bright = dense."""
    ds = pydicom.dcmread(path)
    top = 2**ds.BitsStored - 1
    stored = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        stored = top - stored
    return (stored - (0.95 * top - STORED_SPAN)) / STORED_SPAN


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("embed_demo")
    csv_path = make_embed_demo(root, num_exams=NUM_EXAMS, seed=3)
    return root, read_rows(csv_path)


def test_csv_columns_and_labels(cohort):
    root, rows = cohort
    assert len(rows) == NUM_EXAMS
    assert list(rows[0]) == [*COHORT_COLUMNS, "age_group"]
    assert len({r["exam_id"] for r in rows}) == NUM_EXAMS
    allowed = {"density": {"0", "1", "2", "3", ""}, "birads": {"0", "1", "2", ""}, "risk": {"0", "1", ""}}
    for name, values in allowed.items():
        seen = {r[name] for r in rows}
        assert seen <= values and "" in seen, name
        assert len(seen - {""}) == len(values) - 1, f"{name} misses a class: {seen}"
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert {r["laterality"] for r in rows} == {"L", "R"}
    for r in rows:  # risk is mostly driven by suspicious masses
        if r["risk"] == "1" and r["birads"]:
            assert r["birads"] in {"1", "2"}


def test_missing_views_and_files(cohort):
    root, rows = cohort
    n_missing = [sum(r[s] == "" for s in VIEW_SLOTS) for r in rows]
    assert max(n_missing) <= 2 and 0.05 <= np.mean([n > 0 for n in n_missing]) <= 0.35
    written = sorted(p.relative_to(root).as_posix() for p in (root / "images").rglob("*.dcm"))
    listed = sorted(r[s] for r in rows for s in VIEW_SLOTS if r[s])
    assert written == listed  # missing views have no file, every listed file exists
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < len(listed) * (0.7 * 64 * 48 * 2 + 1500)  # compressed pixels + a small header per image


def test_dicom_tags_and_phi(cohort):
    root, rows = cohort
    seen = {"photometric": set(), "laterality": set(), "bits": set(), "desc": set()}
    patient_ids, csv_text = set(), (root / "cohort.csv").read_text()
    for r in rows:
        for slot in VIEW_SLOTS:
            if not r[slot]:
                continue
            ds = pydicom.dcmread(root / r[slot])
            kind, view = slot.split("_")
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
            assert ds.SOPClassUID == MAMMO_SOP_CLASS == ds.file_meta.MediaStorageSOPClassUID
            assert ds.Modality == "MG" and ds.PresentationIntentType == "FOR PRESENTATION"
            assert ds.ViewPosition == view.upper() and ds.ImageLaterality == r["laterality"]
            assert ds.ViewCodeSequence[0].CodeMeaning in {"cranio-caudal", "medio-lateral oblique"}
            assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
            assert list(ds.PatientOrientation)[0] == ("A" if r["laterality"] == "L" else "P")
            expected = f"{r['laterality']} {view.upper()}"
            assert ds.SeriesDescription == (expected if kind == "ffdm" else f"C-View {expected}")
            assert ("GENERATED_2D" in ds.ImageType) == (kind == "s2d")
            assert ds.BitsAllocated == 16 and ds.PixelRepresentation == 0 and ds.HighBit == ds.BitsStored - 1
            pixels = ds.pixel_array
            assert pixels.shape == (64, 48) and int(pixels.max()) < 2**ds.BitsStored
            assert int(pixels.max()) - int(pixels.min()) <= STORED_SPAN + 1  # 12 bits of range in every file
            if ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 16:  # a signed read would fail
                assert int(pixels.min()) > 2**15
            assert float(ds.WindowWidth) > 0 and float(ds.RescaleSlope) > 0
            assert str(ds.PatientName).startswith("DEMO^") and ds.PatientID.startswith("DEMO-")
            assert str(ds.PatientName) not in csv_text and ds.PatientID not in csv_text
            seen["photometric"].add(ds.PhotometricInterpretation)
            seen["laterality"].add(ds.ImageLaterality)
            seen["bits"].add(ds.BitsStored)
            seen["desc"].add(ds.SeriesDescription)
            patient_ids.add(ds.PatientID)
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["laterality"] == {"L", "R"} and seen["bits"] == {12, 14, 16}
    assert len(patient_ids) == NUM_EXAMS // 2
    header = read_rows(root / "cohort.csv")[0].keys()
    assert not {"PatientID", "PatientName", "patient_id", "empi_anon"} & set(header)


def test_splits_disjoint_by_patient(cohort):
    root, rows = cohort
    split_of_patient: dict[str, set[str]] = {}
    for r in rows:
        path = next(r[s] for s in VIEW_SLOTS if r[s])
        patient = pydicom.dcmread(root / path, stop_before_pixels=True).PatientID
        split_of_patient.setdefault(patient, set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_patient.values())
    counts = {name: sum(s == {name} for s in split_of_patient.values()) for name in ("train", "val", "test")}
    assert counts == {"train": 22, "val": 5, "test": 5}


def test_label_signal(cohort):
    root, rows = cohort
    density, mean_intensity, blob = [], [], {"0": [], "1": [], "2": []}
    for r in rows:
        if not r["ffdm_cc"]:
            continue
        image = ndimage.gaussian_filter(display_image(root / r["ffdm_cc"]), 1.0)
        if r["density"]:
            breast = ndimage.binary_erosion(image > 0.15, iterations=3)
            density.append(int(r["density"]))
            mean_intensity.append(image[breast].mean())
        if r["birads"]:  # largest connected very bright blob, in pixels
            labels, n = ndimage.label(image > 0.8)
            blob[r["birads"]].append(np.bincount(labels.ravel())[1:].max() if n else 0)
    assert stats.spearmanr(density, mean_intensity).statistic > 0.5
    assert np.mean(blob["2"]) > np.mean(blob["1"]) > np.mean(blob["0"])
    assert np.mean(blob["2"]) > np.mean(blob["0"]) + 10


@pytest.mark.parametrize("syntax", [pydicom.uid.RLELossless, pydicom.uid.ExplicitVRLittleEndian])
def test_transfer_syntaxes_are_lossless(syntax):
    image = np.random.default_rng(0).random((40, 32)).astype(np.float32)
    tags = DicomTags(1, "L", "CC", "ffdm", 16, "MONOCHROME2", (1.0, 0.0), "20200101", 55, ("x",))
    default = mammo_dataset(image, tags)
    assert default.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
    other = mammo_dataset(image, tags, syntax)
    assert other.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(other.pixel_array, default.pixel_array)
    expected = np.rint(image * STORED_SPAN + 0.95 * (2**16 - 1) - STORED_SPAN)
    np.testing.assert_array_equal(default.pixel_array, expected)
    assert default.SOPInstanceUID == default.file_meta.MediaStorageSOPInstanceUID == other.SOPInstanceUID
    with pytest.raises(ValueError, match="transfer_syntax"):
        mammo_dataset(image, tags, pydicom.uid.JPEGBaseline8Bit)
    with pytest.raises(ValueError, match="bits_stored"):
        mammo_dataset(image, DicomTags(1, "L", "CC", "ffdm", 10, "MONOCHROME2", (1.0, 0.0), "2020", 5, ("x",)))
    with pytest.raises(ValueError, match="at least 32 x 32"):
        mammo_dataset(image[:, :30], tags)
    assert mammo_dataset(image[:, :30], tags, syntax).Columns == 30


def test_deterministic(tmp_path):
    first = make_embed_demo(tmp_path / "a", num_exams=8, image_size=(48, 36), seed=7)
    second = make_embed_demo(tmp_path / "b", num_exams=8, image_size=(48, 36), seed=7)
    other = make_embed_demo(tmp_path / "c", num_exams=8, image_size=(48, 36), seed=8)
    assert first.read_bytes() == second.read_bytes()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert pydicom.dcmread(tmp_path / "a" / rel).pixel_array.shape == (48, 36)
    assert first.read_bytes() != other.read_bytes()


def test_cache_generates_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMOE_CACHE", str(tmp_path / "env_cache"))
    csv_path = embed_demo_cohort(num_exams=8, image_size=(32, 32))
    assert csv_path.is_file() and str(csv_path).startswith(str(tmp_path / "env_cache" / "demo" / DEMO_NAME))
    assert "generating" in capsys.readouterr().err
    mtime = csv_path.stat().st_mtime_ns
    assert embed_demo_cohort(num_exams=8, image_size=(32, 32)) == csv_path
    assert csv_path.stat().st_mtime_ns == mtime and "generating" not in capsys.readouterr().err
    assert not [p for p in csv_path.parent.parent.iterdir() if ".tmp" in p.name]  # no half cohort left behind
    explicit = embed_demo_cohort(tmp_path / "explicit", num_exams=8, image_size=(32, 32))
    assert explicit.parent.parent == tmp_path / "explicit" / "demo"


def test_cache_rejects_half_folder_and_bad_args(tmp_path):
    (tmp_path / "demo" / f"{DEMO_NAME}_n8_32x32_s0").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="delete it"):
        embed_demo_cohort(tmp_path, num_exams=8, image_size=(32, 32))
    with pytest.raises(ValueError, match="unknown argument"):
        embed_demo_cohort(tmp_path, num_exam=8)
    with pytest.raises(ValueError, match="num_exams"):
        make_embed_demo(tmp_path / "x", num_exams=4)
    with pytest.raises(ValueError, match="image_size"):
        make_embed_demo(tmp_path / "x", num_exams=8, image_size=(16, 16))
