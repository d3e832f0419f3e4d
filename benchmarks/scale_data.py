"""Data loading at real mammography sizes: pydicom decode vs our first pass vs a disk-cached pass, and cache RSS.

Run: ``python benchmarks/scale_data.py [--images 24] [--size 3000 2500] [--out-size 1024 832] [--workers 1 2]
[--repeat 3] [--rss-scale 4] [--out benchmarks/results/scale_data.json]``.

``--images`` full-field 12-bit FFDM mammograms (``--size`` rows x columns; a breast rendered by the demo cohort's
anatomy model at a quarter of the size, upsampled, with the demo's full-resolution FFDM quantum noise, so the files
compress about 2:1 like real ones and the crop has a breast to find) are written per transfer syntax: JPEG 2000
lossless (pylibjpeg-openjpeg) and JPEG Lossless process 14 SV1 (GDCM). At most 4 distinct breasts are rendered and
encoded (L / R, CC / MLO); the other files carry the same pixel data under their own UIDs (decoding cost depends on
the content, not on which file holds it). Then, side by side in one run, each repeated ``--repeat`` times with the
repeats interleaved (min / median / max reported; ratios from medians):

* **decode**: ``pydicom.dcmread(f).pixel_array`` for every file in this process (the limit), and for each worker
  count w > 1 the same split over w forked processes (``decode ... wp``, pool start included). GDCM decodes JPEG
  2000 with OpenJPEG's threads (about 1.4 CPU-seconds in 0.8 s wall here), so one process already uses both cores of
  a 2-core machine and w workers cannot reach w times its rate; the limit at w workers is pydicom in w processes;
* **medmoe decode**: what the loader decodes with, :func:`medmoe.transforms.dicom_decode.stored_pixels` (GDCM's
  region reader for both syntaxes, the same values as pydicom's without its ``str`` round trip), in this process:
  reported beside the limit, with the first pass (1 worker) over it (what the chain and the worker add);
* **first pass**: the embed_m4oe bundle's deterministic preprocessing (``mammogram_preprocessing``: LoadMammogramd,
  CanonicalSided, CropBreastd, ResizeKeepAspectd to ``--out-size``) in a MONAI ``Dataset`` through a ``DataLoader``
  (batch 1) with each of ``--workers`` worker processes; target: images/s >= 0.8 x the decode limit at the same
  number of processes (per worker: ``first pass / w`` over ``decode / w``). Also reported: per worker against the
  one-process decode, for the whole pass and steady (after the first batch: a worker's start, ~0.1-0.9 s, is a
  large share of a pass of a few images and a negligible one of an epoch);
* **cached pass**: the same chain in the bundles' disk cache (``medmoe.data.make_dataset(cache="disk")``, MONAI's
  ``PersistentDataset`` keyed on the chain) after one pass that fills it; target >= 5 x the first pass;
* **peak RSS** of a cached pass (a fresh subprocess, ``num_workers=0``, ``resource.getrusage``) over the cohort and
  over ``--rss-scale`` times as many images (the extra images are JPEG Lossless copies, cached first); target: at
  ``--rss-scale`` 4, peak RSS <= 1.1 x.

The default, 24 images per syntax (48 files of 6.7 MB; with the ``--rss-scale`` copies 192 files, 1.3 GB, and
0.6 GB of cache), takes about 8 minutes on 2 cores; with 8 a worker's start was a third of a 2-worker pass.

Everything is written to a temporary folder (``--tmp`` to choose its parent) that is removed at the end. Prints a
table and writes JSON: args, machine, seconds per repeat with min / median / max, images/s, the ratios and targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYNTAXES = {"jpeg2000_lossless": "1.2.840.10008.1.2.4.90", "jpeg_lossless_sv1": "1.2.840.10008.1.2.4.70"}
TARGETS = {"first_pass_per_worker_vs_decode": 0.8, "cached_vs_first_pass": 5.0, "rss_at_scale_vs_n": 1.1}


def render_mammogram(index: int, size: tuple[int, int]) -> tuple[np.ndarray, str, str]:
    """``(image in [0, 1], laterality, view)`` of a demo breast at ``size`` (rendered at a quarter, upsampled,
    full-resolution FFDM noise); even indices are CC, ``index // 2`` odd ones right breasts (columns flipped)."""
    from scipy import ndimage

    from medmoe.data.demo_mammo_images import render_kind, render_view, sample_anatomy

    rng = np.random.default_rng(index)
    view, laterality = ("CC", "MLO")[index % 2], ("L", "R")[(index // 2) % 2]
    small = (max(32, size[0] // 4), max(32, size[1] // 4))
    anatomy = sample_anatomy(rng, density_class=index % 4, lesion_class=index % 3)
    image = render_view(anatomy, view, small)
    image = ndimage.zoom(image, (size[0] / small[0], size[1] / small[1]), order=1)[: size[0], : size[1]]
    image = render_kind(image, "ffdm", rng)
    return (image[:, ::-1] if laterality == "R" else image), laterality, view


def _gdcm_transcode(src: Path, dst: Path, syntax: str) -> None:
    """Re-encode ``src`` into ``dst`` with GDCM (pydicom has no JPEG Lossless encoder)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    writer = gdcm.ImageWriter()
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {src}")
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError(f"GDCM cannot encode {src} as {syntax}")
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError(f"GDCM cannot write {dst}")


def encode(image: np.ndarray, laterality: str, view: str, index: int, syntax: str, folder: Path) -> Path:
    """``image`` as a 12-bit For-Presentation mammogram in ``syntax`` (a key of :data:`SYNTAXES`) under ``folder``."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    from medmoe.data.demo_mammo_images import DicomTags, write_mammo

    tags = DicomTags(index, laterality, view, "ffdm", 12, "MONOCHROME2", (1.0, 0.0), "20200101", 55, (f"s{index}",))
    path = folder / f"{syntax}_template{index}.dcm"
    if syntax == "jpeg2000_lossless":
        write_mammo(str(path), image, tags, JPEG2000Lossless)
    else:
        write_mammo(str(folder / "plain.dcm"), image, tags, ExplicitVRLittleEndian)
        _gdcm_transcode(folder / "plain.dcm", path, SYNTAXES[syntax])
        (folder / "plain.dcm").unlink()
    return path


def copies(templates: list[Path], count: int, folder: Path, prefix: str) -> list[Path]:
    """``count`` files cycling through ``templates``, each with its own SOP Instance UID."""
    import pydicom
    from pydicom.uid import generate_uid

    datasets = [pydicom.dcmread(t) for t in templates]
    paths = []
    for i in range(count):
        ds = datasets[i % len(datasets)]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        paths.append(folder / f"{prefix}_{i:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def make_cohort(folder: Path, images: int, size: tuple[int, int]) -> tuple[dict[str, list[Path]], dict[str, Path]]:
    """``images`` files per transfer syntax under ``folder``, and the templates (one per distinct breast)."""
    folder.mkdir(parents=True, exist_ok=True)
    rendered = [render_mammogram(i, size) for i in range(min(images, 4))]
    files, templates = {}, {}
    for syntax in SYNTAXES:
        kept = [encode(image, lat, view, i, syntax, folder) for i, (image, lat, view) in enumerate(rendered)]
        files[syntax] = copies(kept, images, folder, syntax)
        templates[syntax] = kept
    return files, templates


def preprocessing(out_size: tuple[int, int]):
    """The embed_m4oe bundle's deterministic chain on one key, ``"image"``."""
    from medmoe.transforms import mammogram_preprocessing
    from monai.transforms import Compose

    return Compose(mammogram_preprocessing(["image"], out_size))


def disk_dataset(records: list[dict], transform, cache_dir: Path):
    """``(dataset, implementation)``: the bundles' disk cache, ``medmoe.data.make_dataset(cache="disk")``."""
    from medmoe.data import make_dataset

    dataset = make_dataset(records, transform, cache="disk", cache_dir=str(cache_dir))
    return dataset, "medmoe.data.make_dataset(cache='disk')"


def run_loader(
    dataset, workers: int, each: Callable[[], None] | None = None, first_batch: list[float] | None = None
) -> int:
    """Iterate ``dataset`` once through a MONAI DataLoader (batch 1), calling ``each`` after every batch and
    appending the seconds to the first batch (worker start included) to ``first_batch``; returns the image count."""
    from monai.data import DataLoader

    count, start = 0, time.perf_counter()
    for batch in DataLoader(dataset, batch_size=1, num_workers=workers):
        if count == 0 and first_batch is not None:
            first_batch.append(time.perf_counter() - start)
        count += int(batch["image"].shape[0])
        if each is not None:
            each()
    return count


def current_rss_mib() -> float:
    """This process's resident set now (Linux ``/proc/self/status``, ``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (the RSS measurement needs Linux)")


def decode_all(paths: list[Path]) -> int:
    import pydicom

    for path in paths:
        pydicom.dcmread(path).pixel_array  # noqa: B018 - the decode is the point
    return len(paths)


def read_stored(paths: list[Path]) -> int:
    """What the loader decodes with: :func:`medmoe.transforms.dicom_decode.stored_pixels` (GDCM's region reader for
    these syntaxes) for every file in this process."""
    import pydicom
    from medmoe.transforms.dicom_decode import stored_pixels

    for path in paths:
        stored_pixels(pydicom.dcmread(path), path)
    return len(paths)


def decode_in_processes(paths: list[Path], processes: int) -> int:
    """:func:`decode_all` split over ``processes`` forked processes, file ``i`` to process ``i % processes`` (as a
    DataLoader hands out batches); raises if one of them fails."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=decode_all, args=(paths[k::processes],)) for k in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [k for k, worker in enumerate(workers) if worker.exitcode != 0]
    if failed:
        raise RuntimeError(f"decoding failed in process(es) {failed} (their traceback is above)")
    return len(paths)


def timed(fn: Callable[[], int], expected: int) -> float:
    start = time.perf_counter()
    done = fn()
    seconds = time.perf_counter() - start
    if done != expected:
        raise RuntimeError(f"expected {expected} images, got {done}")
    return seconds


def summary(seconds: list[float], images: int, first_batch: list[float]) -> dict:
    """min / median / max seconds of the repeats and images/s at the median; for DataLoader passes also the
    steady rate, ``images - 1`` over the median seconds after the first batch (worker start and the first image
    left out: the rate of an epoch of thousands of images)."""
    median = statistics.median(seconds)
    row = {
        "seconds": seconds,
        "min_s": min(seconds),
        "median_s": median,
        "max_s": max(seconds),
        "images": images,
        "images_per_s": images / median,
    }
    if first_batch and images > 1:
        row["first_batch_s"] = first_batch
        row["steady_images_per_s"] = (images - 1) / statistics.median(s - f for s, f in zip(seconds, first_batch))
    return row


def peak_rss(records: list[dict], cache_dir: Path, out_size: tuple[int, int]) -> dict:
    """Peak RSS (MiB) of a fresh process that makes one cached pass over ``records`` (``num_workers=0``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"records": records, "cache_dir": str(cache_dir), "out_size": list(out_size)}, handle)
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", handle.name]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"the RSS subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_child(spec_file: str) -> None:
    """The subprocess of :func:`peak_rss`: prints ``{"peak_rss_mib", "rss_before_pass_mib", ...}`` as JSON."""
    import torch

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_file).read_text())
    cache_dir = Path(spec["cache_dir"])
    entries = len(list(cache_dir.iterdir()))
    dataset, _ = disk_dataset(spec["records"], preprocessing(tuple(spec["out_size"])), cache_dir)
    before, samples = current_rss_mib(), []
    seconds = timed(lambda: run_loader(dataset, 0, lambda: samples.append(current_rss_mib())), len(spec["records"]))
    if len(list(cache_dir.iterdir())) != entries:
        raise RuntimeError("the RSS pass wrote cache entries: it was not a cached pass")
    result = {
        "images": len(spec["records"]),
        "pass_peak_rss_mib": max(samples),  # sampled after every batch: the pass's own peak
        "rss_before_pass_mib": before,
        "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # imports included
        "seconds": seconds,
    }
    print(json.dumps(result))


def machine() -> dict:
    import pydicom
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pydicom": pydicom.__version__,
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def print_table(result: dict) -> None:
    (rows, cols), (out_rows, out_cols) = result["args"]["size"], result["args"]["out_size"]
    print(f"{result['images_per_syntax']} images per syntax, {rows} x {cols} 12-bit -> {out_rows} x {out_cols}")
    print(f"cache: {result['cache']['implementation']}")
    print(f"{'pass':34s} {'images/s':>9s} {'steady':>7s} {'min s':>7s} {'median s':>9s} {'max s':>7s}")
    for name, row in result["timings"].items():
        steady = f"{row['steady_images_per_s']:7.2f}" if "steady_images_per_s" in row else f"{'':7s}"
        times = f"{row['min_s']:7.2f} {row['median_s']:9.2f} {row['max_s']:7.2f}"
        print(f"{name:34s} {row['images_per_s']:9.2f} {steady} {times}")
    for name, value in result["ratios"].items():
        print(f"  {name:62s} {value:6.2f}")
    rss = result["peak_rss"]
    for key in ("pass_peak_rss_mib", "process_peak_rss_mib"):
        low, high, ratio = rss["n"][key], rss["scaled"][key], rss["ratio"][key]
        counts = f"{rss['n']['images']} / {rss['scaled']['images']} images"
        print(f"  {key}: {low:.0f} / {high:.0f} MiB at {counts} (x{ratio:.3f})")
    for name, met in result["targets_met"].items():
        print(f"  target {name}: {'met' if met else 'MISSED'}")


def run(args: argparse.Namespace, tmp: Path) -> dict:
    import torch
    from monai.data import Dataset

    torch.set_num_threads(args.threads)
    size, out_size = tuple(args.size), tuple(args.out_size)
    start = time.perf_counter()
    host = machine()
    files, templates = make_cohort(tmp / "dicom", args.images, size)
    generate_s = time.perf_counter() - start
    chain = preprocessing(out_size)
    records = {s: [{"image": str(p)} for p in paths] for s, paths in files.items()}
    everything = [r for s in SYNTAXES for r in records[s]]
    n = args.images
    cached, implementation = disk_dataset(everything, chain, tmp / "cache")
    build_workers = max(args.workers)
    build_s = timed(lambda: run_loader(cached, build_workers), len(everything))  # fills the cache
    passes: dict[str, Callable[[list[float]], int]] = {}  # each takes the list its first-batch time goes to
    for syntax in SYNTAXES:
        passes[f"decode {syntax}"] = lambda first, s=syntax: decode_all(files[s])
        passes[f"medmoe decode {syntax}"] = lambda first, s=syntax: read_stored(files[s])
        for w in (w for w in args.workers if w > 1):
            passes[f"decode {syntax} {w}p"] = lambda first, s=syntax, w=w: decode_in_processes(files[s], w)
        for w in args.workers:
            passes[f"first pass {syntax} {w}w"] = lambda first, s=syntax, w=w: run_loader(
                Dataset(records[s], chain), w, first_batch=first
            )
    for w in args.workers:
        passes[f"cached pass {w}w"] = lambda first, w=w: run_loader(cached, w, first_batch=first)
    expected = {name: (len(everything) if name.startswith("cached") else n) for name in passes}
    seconds: dict[str, list[float]] = {name: [] for name in passes}
    first_batch: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(args.repeat):  # interleaved: a busy spell on the shared cores hits every pass alike
        for name, fn in passes.items():
            seconds[name].append(timed(lambda fn=fn, name=name: fn(first_batch[name]), expected[name]))
    timings = {name: summary(s, expected[name], first_batch[name]) for name, s in seconds.items()}

    scaled_count = args.rss_scale * len(everything) - len(everything)
    extra = copies(templates["jpeg_lossless_sv1"], scaled_count, tmp / "dicom", "extra")
    scaled = everything + [{"image": str(p)} for p in extra]
    scaled_dataset, _ = disk_dataset(scaled, chain, tmp / "cache")
    extra_build_s = timed(lambda: run_loader(scaled_dataset, build_workers), len(scaled))
    rss_n, rss_scaled = peak_rss(everything, tmp / "cache", out_size), peak_rss(scaled, tmp / "cache", out_size)
    disk_mib = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 2**20

    rate = {name: t["images_per_s"] for name, t in timings.items()}
    steady = {name: t.get("steady_images_per_s", t["images_per_s"]) for name, t in timings.items()}
    ratios = {}
    for syntax in SYNTAXES:
        for w in args.workers:
            first, decode = f"first pass {syntax} {w}w", rate[f"decode {syntax}"]
            ratios[f"{first} per worker / decode"] = rate[first] / w / decode
            ratios[f"{first} per worker / decode, steady"] = steady[first] / w / decode
            ratios[f"cached pass {w}w / {first}"] = rate[f"cached pass {w}w"] / rate[first]
            same = f"decode {syntax}" + (f" {w}p" if w > 1 else "")
            ratios[f"{first} / decode in {w} process{'es' if w > 1 else ''}"] = rate[first] / rate[same]
        ours = f"medmoe decode {syntax}"
        ratios[f"{ours} / decode"] = rate[ours] / rate[f"decode {syntax}"]
        if 1 in args.workers:  # what the chain and the worker cost on top of the loader's own decode
            ratios[f"first pass {syntax} 1w / medmoe decode"] = rate[f"first pass {syntax} 1w"] / rate[ours]
    rss_ratio = {k: rss_scaled[k] / rss_n[k] for k in ("pass_peak_rss_mib", "process_peak_rss_mib")}
    same_processes = [v for k, v in ratios.items() if " / decode in " in k]
    per_worker = [v for k, v in ratios.items() if k.endswith("per worker / decode")]
    per_worker_steady = [v for k, v in ratios.items() if k.endswith("per worker / decode, steady")]
    cached_gain = [v for k, v in ratios.items() if k.startswith("cached")]
    return {
        "args": vars(args),
        "machine": {**host, "load_average_1min_at_end": os.getloadavg()[0]},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "images_per_syntax": n,
        "distinct_images": min(n, 4),
        "file_mib": {s: statistics.mean(p.stat().st_size for p in files[s]) / 2**20 for s in SYNTAXES},
        "generate_s": generate_s,
        "cache": {
            "implementation": implementation,
            "build_s": build_s,
            "build_workers": build_workers,
            "extra_build_s": extra_build_s,
        },
        "timings": timings,
        "ratios": ratios,
        "peak_rss": {"n": rss_n, "scaled": rss_scaled, "scale": args.rss_scale, "ratio": rss_ratio},
        "disk_mib": disk_mib,
        "targets": TARGETS,
        "targets_met": {
            "first_pass_vs_decode_in_as_many_processes": min(same_processes)
            >= TARGETS["first_pass_per_worker_vs_decode"],
            "first_pass_per_worker_vs_decode": min(per_worker) >= TARGETS["first_pass_per_worker_vs_decode"],
            "first_pass_per_worker_vs_decode, steady": min(per_worker_steady)
            >= TARGETS["first_pass_per_worker_vs_decode"],
            "cached_vs_first_pass": min(cached_gain) >= TARGETS["cached_vs_first_pass"],
            "rss_at_scale_vs_n": max(rss_ratio.values()) <= TARGETS["rss_at_scale_vs_n"],
        },
    }


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="mammograms per transfer syntax")
    parser.add_argument("--size", type=int, nargs=2, default=[3000, 2500], help="rows, columns of each mammogram")
    parser.add_argument("--out-size", type=int, nargs=2, default=[1024, 832], help="ResizeKeepAspect size")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rss-scale", type=int, default=4, help="cohort multiple for the peak RSS comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    parser.add_argument("--tmp", default=None, help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale_data.json"))
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return None
    if args.images < 1 or args.repeat < 1 or args.rss_scale < 2 or min(args.workers) < 1:
        parser.error("need --images >= 1, --repeat >= 1, --rss-scale >= 2 and --workers >= 1")
    child_args = {k: v for k, v in vars(args).items() if k != "rss_child"}
    tmp = Path(tempfile.mkdtemp(prefix="scale_data_", dir=args.tmp))
    try:
        result = run(argparse.Namespace(**child_args), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(result)
    from medmoe.utils import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
