"""Deploy, end to end for each bundle: train (tiny), standalone ``inference.json``, export to TorchScript and ONNX,
and inference from the exported file (``--use_exported``); exported outputs equal the eager model's on the demo
test split.

Each bundle run goes through ``python -m monai.bundle run`` / ``python -m medmoe.apps.export`` in a subprocess as a
user types it (``configs/inference.json`` alone, not layered on train.json).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from bundle_runner import REPO, ok, run_bundle
from monai.bundle import ConfigParser

from medmoe.data import make_adni_demo, make_embed_demo, make_fastmri_demo, make_gamma_demo
from medmoe.export import read_metadata

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # max abs difference of probabilities, exported vs eager

# bundle -> (demo writer, tiny overrides, id column)
BUNDLES = {
    "embed_m4oe": (
        lambda root: make_embed_demo(root, num_exams=24, image_size=(48, 40)),
        {"image_size": [32, 32], "batch_size": 5},
        "exam_id",
    ),
    "gamma_m4oe": (
        lambda root: make_gamma_demo(root, num_cases=24, fundus_size=64, num_bscans=4, bscan_size=32),
        {"image_size": [32, 32], "num_bscans": 4, "bscan_size": [16, 16], "batch_size": 5},
        "case_id",
    ),
    "adni_i2moe": (
        lambda root: make_adni_demo(root, num_subjects=32, image_size=16),
        {"image_size": [16, 16, 16], "batch_size": 5},
        "subject_id",
    ),
    "fastmri_i2m2": (
        lambda root: make_fastmri_demo(root, num_volumes=12, num_slices=4, image_size=32),
        {"image_size": [24, 24], "batch_size": 5},
        "slice_id",
    ),
}


# test rows whose modalities are removed: embed's default fill is the retriever, gamma's a learned token
BLANK = {"embed_m4oe": {0: ["s2d_mlo"], 1: ["ffdm_cc", "s2d_cc"]}, "gamma_m4oe": {0: ["oct"]}}


def _export(bundle: str, run: dict) -> subprocess.CompletedProcess:
    """``python -m medmoe.apps.export`` with the bundle's inference.json and ``run``'s overrides."""
    cmd = [
        sys.executable,
        "-m",
        "medmoe.apps.export",
        "--config_file",
        str(REPO / "bundles" / bundle / "configs" / "inference.json"),
    ]
    for key, value in run.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)


def _probabilities(frame: pd.DataFrame, id_column: str = "id") -> pd.DataFrame:
    columns = [c for c in frame.columns if "_prob_" in c]
    return frame.set_index(id_column)[columns].astype(float).sort_index()


def _exported_predictions(bundle: str, run: dict, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Probabilities of ``model.ts`` and ``model.onnx`` (onnxruntime) on the inference cohort, per id; and the
    largest difference of every output (segmentation included) to the eager model."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "inference.json"))
    parser.update({**run, "validate#dataset#cache_rate": 0.0})
    prepare, loader = parser.get_parsed_content("prepare_batch"), parser.get_parsed_content("validate#dataloader")
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    meta = read_metadata(root / "models" / "model.ts")
    scripted = torch.jit.load(str(root / "models" / "model.ts"))
    session = onnxruntime.InferenceSession(str(root / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    id_key = parser.get_parsed_content("id_column")
    rows = {"ts": [], "onnx": []}
    worst = 0.0
    for batch in loader:
        inputs = prepare(batch, "cpu")[0]
        x = [torch.as_tensor(inputs[k]).as_subclass(torch.Tensor) for k in meta["inputs"]]
        with torch.no_grad():
            eager = network(inputs)
            outs = {"ts": [t.numpy() for t in scripted(*x)]}
        outs["onnx"] = session.run(None, {k: t.numpy() for k, t in zip(meta["inputs"], x, strict=True)})
        for kind, values in outs.items():
            for name, value in zip(meta["outputs"], values, strict=True):
                probs = torch.from_numpy(value).softmax(1)
                worst = max(worst, float((probs - eager[name].softmax(1)).abs().max()))
            for i, sample_id in enumerate(batch[id_key]):
                row = {"id": sample_id}
                for name, value in zip(meta["outputs"], values, strict=True):
                    if value.ndim == 2:  # classification: the columns predictions.csv has
                        probs = torch.from_numpy(value[i]).softmax(0).numpy()
                        row.update({f"{name}_prob_{k}": float(p) for k, p in enumerate(probs)})
                rows[kind].append(row)
    return _probabilities(pd.DataFrame(rows["ts"])), _probabilities(pd.DataFrame(rows["onnx"])), worst


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_train_export_infer(bundle: str, tmp_path: Path) -> None:
    make_demo, tiny, id_column = BUNDLES[bundle]
    cohort = make_demo(tmp_path / "demo")
    root = tmp_path / "b"
    run = {"bundle_root": str(root), "cohort_csv": str(cohort), "device": "cpu", **tiny}
    ok(run_bundle(bundle, "train.json", **run, max_epochs=1))
    assert (root / "models" / "model_options.json").is_file()

    # the demo test split as a new cohort: no split column, no labels
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    test = rows[rows["split"] == "test"].drop(columns=["split"]).reset_index(drop=True)
    assert len(test) >= 2
    for row, columns in BLANK.get(bundle, {}).items():  # missing views for the missing-modality fill
        test.loc[row, columns] = ""
    test_csv = tmp_path / "test.csv"
    test.to_csv(test_csv, index=False)
    infer = {**run, "cohort_csv": str(test_csv), "data_root": str(cohort.parent)}
    ok(run_bundle(bundle, "inference.json", **infer))  # standalone: inference.json alone
    eager = _probabilities(pd.read_csv(root / "inference" / "predictions.csv", dtype={"id": str}))
    assert list(eager.index) == sorted(test[id_column])
    if bundle == "embed_m4oe":  # the retriever filled the removed views
        assert len(pd.read_csv(root / "inference" / "retrieval.csv")) == 3

    if bundle == "gamma_m4oe":  # the case: other mask classes than training, named before anything runs
        failed = run_bundle(bundle, "inference.json", **infer, mask_classes=3)
        assert failed.returncode != 0 and "mask_classes (cup): 2 in the checkpoint, 3 here" in failed.stderr

    ok(_export(bundle, infer))
    meta = read_metadata(root / "models" / "model.ts")
    assert meta["inputs"][-1] == "modality_mask" and meta["model_options"]["modalities"] == meta["inputs"][:-1]
    assert meta["contains_training_data"] is (bundle == "embed_m4oe")  # the retriever's bank of training embeddings
    ts, onnx, worst = _exported_predictions(bundle, infer, root)
    assert worst <= TOLERANCE
    for exported in (ts, onnx):
        assert list(exported.index) == list(eager.index) and list(exported.columns) == list(eager.columns)
        assert np.abs(exported.to_numpy() - eager.to_numpy()).max() <= TOLERANCE

    # inference.json from the exported file: the same predictions
    ok(run_bundle(bundle, "inference.json", **infer, use_exported=True, output_dir=str(tmp_path / "exported")))
    from_file = _probabilities(pd.read_csv(tmp_path / "exported" / "predictions.csv", dtype={"id": str}))
    assert list(from_file.index) == list(eager.index)
    assert np.abs(from_file.to_numpy() - eager.to_numpy()).max() <= TOLERANCE
