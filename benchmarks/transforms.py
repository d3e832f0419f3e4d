"""Throughput of the main read + preprocess chains (MRI, k-space, fundus, OCT) on 2 CPU cores.

For each chain: samples per second applying the chain directly, and through MONAI's CacheDataset on the second
epoch (deterministic steps cached, random ones re-run). Uses the real samples in ``tests/samples``.

    python benchmarks/transforms.py [--out benchmarks/results/transforms.json] [--repeats 8] [--figures docs/img]

``--figures DIR`` also writes the before / after pictures used in docs/transforms.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from medmoe.transforms import (
    ComplexCenterCropd,
    ComplexToMagnitudePhased,
    KspaceToImaged,
    LoadKspaced,
    UndersampleKspaced,
)
from medmoe.transforms.mri import mri_preprocess
from medmoe.transforms.oct import oct_preprocess
from medmoe.transforms.ophthalmology import fundus_preprocess
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

from medmoe.utils import atomic_write_text

DATA = Path(__file__).resolve().parents[1] / "tests" / "samples"


def chains() -> dict[str, tuple[Compose, dict]]:
    kspace = Compose(
        [
            LoadKspaced("kspace"),
            UndersampleKspaced("kspace", "equispaced", [0.08], [4]),
            KspaceToImaged("kspace"),
            ComplexCenterCropd("kspace", roi_size=(320, 320)),
            ComplexToMagnitudePhased("kspace", split=True),
        ]
    )
    return {
        "mri_nifti_2mm_96x112x96": (
            mri_preprocess("t1", pixdim=(2.0, 2.0, 2.0), spatial_size=(96, 112, 96)),
            {"t1": str(DATA / "mri" / "ch2.nii.gz")},
        ),
        "kspace_twix_undersample_magphase_320": (kspace, {"kspace": str(DATA / "kspace" / "gre.dat")}),
        "fundus_jpeg_fov_512": (fundus_preprocess("fundus", size=512), {"fundus": str(DATA / "fundus" / "retina.jpg")}),
        "oct_vol_denoise_32x256x256": (
            oct_preprocess("oct", num_bscans=32, size=(256, 256)),
            {"oct": str(DATA / "oct" / "Willis_B_716_0.vol")},
        ),
    }


def bench(chain: Compose, sample: dict, repeats: int) -> dict:
    chain(dict(sample))  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        chain(dict(sample))
    direct = repeats / (time.perf_counter() - start)
    data = [dict(sample) for _ in range(repeats)]
    start = time.perf_counter()
    ds = CacheDataset(data, chain, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(ds, batch_size=1, num_workers=0)
    for _ in loader:  # first epoch (cache filled at construction)
        pass
    first = repeats / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in loader:
        pass
    second = repeats / (time.perf_counter() - start)
    return {"direct_per_s": direct, "cache_epoch1_per_s": first, "cache_epoch2_per_s": second, "repeats": repeats}


def figures(out_dir: Path) -> None:  # pragma: no cover - documentation pictures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from medmoe.transforms import kspace as K
    from medmoe.transforms import mri as M
    from medmoe.transforms import oct as O
    from medmoe.transforms import ophthalmology as F

    out_dir.mkdir(parents=True, exist_ok=True)

    def save(name, panels):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
        for ax, (title, img) in zip(axes, panels, strict=True):
            img = np.asarray(img)
            ax.imshow(np.moveaxis(img, 0, -1) if img.ndim == 3 else img, cmap="gray")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)

    k = K.read_kspace(DATA / "kspace" / "gre.dat")
    rss = K.RootSumOfSquares()(K.KspaceToImage()(k))[0]
    k_os = K.RemoveReadoutOversampling()(k)
    under = K.UndersampleKspace("equispaced", [0.08], [4]).set_random_state(0)(k_os)
    rss_u = K.RootSumOfSquares()(K.KspaceToImage()(under))[0]
    brain = M.LoadVolume()(DATA / "mri" / "ch2.nii.gz")[0, :, :, 90].T.flip(0)
    img = K.ifft2c(K.fft2c(brain[None] / brain.max()))
    noisy = K.AddRicianNoise(percent=5).set_random_state(0)(img.abs())
    joint = K.ComplexToMagnitudePhase()(K.KspaceToImage()(k_os))
    save(
        "transforms_kspace.png",
        [
            ("TWIX |k| coil 0 (log)", torch.log1p(k[0].abs() * 1e5)),
            ("RSS, 2x readout oversampling", rss),
            ("RSS, oversampling removed", K.RootSumOfSquares()(K.KspaceToImage()(k_os))[0]),
            ("equispaced 4x undersampled", rss_u),
            ("phase, coil 0", joint[2]),
            ("real T1 slice + 5% Rician", noisy[0]),
        ],
    )
    vol = M.LoadVolume()(DATA / "mri" / "ch2.nii.gz")
    prep = M.mri_preprocess("t1", pixdim=(2.0, 2.0, 2.0), spatial_size=(96, 112, 96), n4=True, load=False)
    out = prep({"t1": vol})["t1"]
    save(
        "transforms_mri.png",
        [
            ("raw T1 (1 mm, axial 90)", vol[0, :, :, 90].T.flip(0)),
            ("RAS 2 mm, N4, crop, z-score", out[0, :, :, 45].T.flip(0)),
        ],
    )
    fundus = F.LoadFundus()(DATA / "fundus" / "retina.jpg")
    mask = F.fov_mask(fundus)
    chain = F.fundus_preprocess("f", size=512, clahe=True, load=False)({"f": fundus})["f"]
    disc = F.OpticDiscCrop((400, 400))(fundus, centre=(656, 252))
    save(
        "transforms_fundus.png",
        [
            ("raw fundus", fundus / 255),
            ("FOV mask", mask[0]),
            ("FOV crop, 512, CLAHE + FOV z-score (ch. 1)", chain[1]),
            ("optic-disc crop 400 px", disc / 255),
        ],
    )
    octv = O.LoadOCT()(DATA / "oct" / "Willis_B_716_0.vol")
    den = O.OCTNormalizeIntensity()(O.OCTDenoise("nl_means")(octv))
    save("transforms_oct.png", [("Spectralis B-scan (.vol)", octv[0, 0]), ("NL-means (log), normalised", den[0, 0])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/transforms.json")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figures", default=None, help="also write documentation pictures to this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    except ImportError:
        pass
    if not DATA.is_dir():
        raise SystemExit(f"sample data folder not found: {DATA}")
    results = {"threads": args.threads, "torch": torch.__version__, "machine": platform.machine(), "chains": {}}
    for name, (chain, sample) in chains().items():
        results["chains"][name] = r = bench(chain, sample, args.repeats)
        print(
            f"{name:42s} direct {r['direct_per_s']:7.2f}/s  CacheDataset epoch 1 {r['cache_epoch1_per_s']:7.2f}/s  "
            f"epoch 2 {r['cache_epoch2_per_s']:8.2f}/s"
        )
    out = atomic_write_text(args.out, json.dumps(results, indent=2))
    print(f"wrote {out}")
    if args.figures:
        figures(Path(args.figures))


if __name__ == "__main__":
    main()
