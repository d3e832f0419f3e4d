"""Write docs/img/mammography_chain.png: real mammograms before and after ``mammogram_preprocessing``.

Usage:
    python docs/make_mammography_figure.py [--data tests/samples] [--out docs/img/mammography_chain.png]

Samples (see tests/samples/README.md): ``monai_density/B/sample_B1.jpg`` (Project-MONAI model-zoo
breast_density_classification sample data, images from Mayo Clinic, Apache-2.0) and
``cbis_ddsm/P_00820_LEFT_CC.dcm`` (CBIS-DDSM, Sawyer-Lee et al. 2016, doi:10.7937/K9/TCIA.2016.7O02S9CY,
CC BY 3.0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from medmoe.transforms import LoadMammogram, mammogram_preprocessing  # noqa: E402
from monai.transforms import Compose  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLES = (
    ("mammography/monai_density/B/sample_B1.jpg", "MONAI model-zoo sample B1 (Mayo Clinic), JPEG"),
    ("mammography/cbis_ddsm/P_00820_LEFT_CC.dcm", "CBIS-DDSM P_00820 left CC, DICOM"),
)


def main(data: Path, out: Path, spatial_size: tuple[int, int] = (512, 384)) -> None:
    chain = Compose(mammogram_preprocessing(["img"], spatial_size=spatial_size))
    figure, axes = plt.subplots(2, len(SAMPLES), figsize=(3.2 * len(SAMPLES), 7.6), dpi=72)
    for column, (relative, caption) in enumerate(SAMPLES):
        path = data / relative
        loaded = LoadMammogram()(path)
        before = loaded[0, ::8, ::8]  # subsampled, only for display
        after = chain({"img": str(path)})["img"]
        meta = after.meta
        axes[0, column].imshow(before, cmap="gray", vmin=0, vmax=1)
        axes[0, column].set_title(f"{caption}\nloaded {tuple(loaded.shape[1:])}", fontsize=7)
        axes[1, column].imshow(after[0], cmap="gray", vmin=0, vmax=1)
        axes[1, column].set_title(
            f"after chain {tuple(after.shape[1:])}\nflipped={meta['flipped']} ({meta['chest_wall_source']}), "
            f"view={meta['view'] or '?'}, side={meta['laterality'] or '?'}",
            fontsize=7,
        )
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("LoadMammogramd -> CanonicalSided -> CropBreastd -> ResizeKeepAspectd", fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "samples")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "mammography_chain.png")
    arguments = parser.parse_args()
    main(arguments.data, arguments.out)
