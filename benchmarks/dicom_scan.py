"""Speed of ``cohort scan`` (headers) and ``cohort validate`` (decoding) against pydicom on the same files.

Run: ``python benchmarks/dicom_scan.py [--exams 200] [--size 512 416] [--workers 1 2] [--out PATH]``.

A demo cohort of full-structure DICOM mammograms (lossless JPEG 2000, 12-16 bits; ``--exams`` breasts, about 3.75
files each) is written once into a temp folder, then, side by side in one run and each timed as the best of
``--repeat``:

* **scan**: :func:`medmoe.data.dicom_scan.scan_dicom_folder` (headers only, grouping, pseudonyms) against the
  limit, pydicom's own header read of every file (``dcmread(stop_before_pixels=True)``);
* **validate**: :func:`medmoe.data.decode_check.decode_cohort` with the embed_m4oe bundle's preprocessing (decode,
  orient, crop, resize) at 1 and 2 worker processes against the limit, pydicom's decode of every file
  (``dcmread(...).pixel_array``) in one process.

Prints a table and writes JSON (``benchmarks/results/dicom_scan.json``): files/s for each, and each ratio to its
limit.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exams", type=int, default=200, help="breasts in the generated cohort (about 3.75 files each)"
    )
    parser.add_argument("--size", type=int, nargs=2, default=[512, 416], help="image rows, columns")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="validate worker counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dicom_scan.json"))
    args = parser.parse_args()

    import pydicom

    from medmoe.data import load_cohort, make_embed_demo
    from medmoe.data.decode_check import BundlePreprocessing, decode_cohort
    from medmoe.data.dicom_scan import scan_dicom_folder

    with tempfile.TemporaryDirectory() as tmp:
        csv = make_embed_demo(Path(tmp) / "demo", num_exams=args.exams, image_size=tuple(args.size))
        files = sorted((Path(tmp) / "demo" / "images").rglob("*.dcm"))
        n = len(files)
        key = bytes(32)
        config = str(REPO / "bundles" / "embed_m4oe" / "configs" / "train.json")
        modalities = ["ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo"]
        cohort = load_cohort(csv, modalities, {"density": 4, "birads": 3, "risk": 2}, id_column="exam_id")
        timings = {
            "pydicom_header_read": _best(
                lambda: [pydicom.dcmread(f, stop_before_pixels=True) for f in files], args.repeat
            ),  # fmt: skip
            "scan": _best(lambda: scan_dicom_folder(Path(tmp) / "demo" / "images", key), args.repeat),
            "pydicom_decode": _best(lambda: [pydicom.dcmread(f).pixel_array for f in files], args.repeat),
        }
        for w in args.workers:
            problems: list = []
            timings[f"validate_{w}_workers"] = _best(
                lambda w=w, problems=problems: problems.extend(decode_cohort(cohort, BundlePreprocessing(config), w)),
                args.repeat,
            )
            if problems:
                raise RuntimeError(f"the demo cohort should decode cleanly: {problems[:3]}")
    rates = {k: n / v for k, v in timings.items()}
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "files": n,
        "image_size": args.size,
        "seconds": timings,
        "files_per_second": rates,
        "scan_vs_header_read": rates["scan"] / rates["pydicom_header_read"],
        "validate_vs_decode": {
            f"{w}_workers": rates[f"validate_{w}_workers"] / rates["pydicom_decode"] for w in args.workers
        },  # fmt: skip
    }
    print(f"{n} files of {args.size[0]} x {args.size[1]} (JPEG 2000 lossless):")
    for k, r in rates.items():
        print(f"  {k:24s} {r:9.1f} files/s")
    print(
        f"  scan / header read: {result['scan_vs_header_read']:.2f}; validate / decode: {result['validate_vs_decode']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
