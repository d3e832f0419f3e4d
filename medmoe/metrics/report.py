"""Write an evaluation result to an output folder: metrics.json, CSVs, PNG plots and report.md (all atomic)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import atomic_write_csv, atomic_write_text
from ..utils.safe_names import id_file_stem
from .masks import load_pair
from .plots import plot_groups, plot_overlay, plot_pr, plot_reliability, plot_roc, safe_name

__all__ = ["metrics_table", "write_report"]


def metrics_table(result: dict[str, Any]) -> pd.DataFrame:
    """The flat metrics list of a result as a table (one row per task / metric / class / group)."""
    return pd.DataFrame(result["metrics"])


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(e: dict[str, Any]) -> str:
    if e["value"] is None or not np.isfinite(e["value"]):
        return "undefined"
    if not np.isfinite(e["ci_low"]):
        return _fmt(e["value"])
    return f"{_fmt(e['value'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write_csv(path, df, index=False)


def _write_json(path: Path, obj: Any) -> Path:
    """Indented JSON, written atomically; NaN and inf become ``null``."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


_ORDER = [
    "auroc",
    "auprc",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ece",
    "dice",
    "iou",
    "hd95",
    "assd",
]


def _pivot(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows = (class, group), columns = metrics, cells = 'value [lo, hi]' (class 'overall' = task level)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for e in entries:
        key = (e["class"] if e["class"] is not None else "overall", e["group"] or "all")
        row = rows.setdefault(key, {"class": key[0], "group": key[1], "n": e["n"]})
        row[e["metric"]] = _ci(e)
    df = pd.DataFrame(list(rows.values()))
    cols = ["class", "group", "n"] + [c for c in _ORDER if c in df.columns]
    return df[cols + [c for c in df.columns if c not in cols]].fillna("")


def write_report(result: dict[str, Any], out_dir: str | Path, title: str | None = None, n_worst: int = 3) -> dict:
    """Write ``metrics.json``, CSVs, plots and ``report.md`` for a classification or segmentation result.

    Every file is written to a temp file in ``out_dir`` and renamed, so no file is ever half written.

    Args:
        result: output of :func:`.evaluate_classification` or :func:`.evaluate_segmentation`.
        out_dir: output folder (created).
        title: report title.
        n_worst: segmentation only: overlay PNGs for this many worst cases (lowest mean Dice).

    Returns:
        ``{"metrics_json", "report", "csv": [...], "plots": [...]}`` paths.

    Example:
        >>> res = evaluate_classification(df_pred, df_true, n_bootstrap=1000)  # doctest: +SKIP
        >>> write_report(res, "eval/")["report"]  # doctest: +SKIP
        PosixPath('eval/report.md')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result["kind"] == "classification":
        return _classification(result, out, title or "Classification evaluation")
    if result["kind"] == "segmentation":
        return _segmentation(result, out, title or "Segmentation evaluation", n_worst)
    raise ValueError(f"unknown result kind {result.get('kind')!r}")


def _header(title: str, result: dict[str, Any]) -> list[str]:
    c = result["config"]
    pct = round(100 * c["ci"])
    return [
        f"# {title}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `medmoe.metrics`. "
        f"Cells: point estimate on all evaluated cases [{pct}% confidence interval: {c['ci_method']}, "
        f"{c['n_bootstrap']} resamples, seed {c['seed']}].",
        "",
    ]


def _json_payload(result: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {"kind": result["kind"], "config": result["config"], **extra, "metrics": result["metrics"]}


def _files_section(written: dict[str, Any], out: Path, result: dict[str, Any]) -> list[str]:
    """Write ``metrics.csv`` and return the report's list of files."""
    written["csv"].append(_write_csv(out / "metrics.csv", metrics_table(result)))
    return [
        "## Files",
        "",
        "- `metrics.json`: every value with ci_low, ci_high and n (machine-readable)",
        "- `metrics.csv`: the same as a table",
    ]


def _classification(result: dict[str, Any], out: Path, title: str) -> dict:
    written: dict[str, Any] = {"csv": [], "plots": []}
    lines = _header(title, result)
    for t in result["tasks"]:
        name, kind = t["name"], t["kind"]
        entries = [e for e in result["metrics"] if e["task"] == name]
        overall = [e for e in entries if e["group"] is None]
        lines += [f"## Task `{name}` ({kind}, n={t['n']})", ""]
        if t["thresholds"]:
            thr = ", ".join(f"{k}: {'none' if v is None else format(v, '.4g')}" for k, v in t["thresholds"].items())
            lines += [f"Decision threshold ({t['threshold_source']}): {thr}.", ""]
        if t["n_missing_label"]:
            lines += [f"{t['n_missing_label']} case(s) without a label were ignored.", ""]
        lines += [f"> {note}" for note in t["notes"]] + ([""] if t["notes"] else [])
        lines += [_md_table(_pivot(overall)), ""]
        curves = result["curves"].get(name, {})
        per_class = {"auroc": {}, "auprc": {}}
        for e in overall:
            if e["metric"] in per_class:
                per_class[e["metric"]][e["class"] if e["class"] is not None else "1"] = e
        stem = safe_name(name)
        pics = []
        if curves.get("roc"):
            pics.append(plot_roc(name, kind, curves, per_class["auroc"], out / f"roc_{stem}.png"))
            pics.append(plot_pr(name, kind, curves, per_class["auprc"], out / f"pr_{stem}.png"))
        if curves.get("reliability"):
            ece = next((e for e in overall if e["metric"] == "ece" and e["class"] is None), None)
            pics.append(plot_reliability(name, curves["reliability"], ece, out / f"calibration_{stem}.png"))
        grouped = [e for e in entries if e["group"] is not None]
        if grouped:
            g = [e for e in entries if e["metric"] == "auroc" and e["class"] is None]
            if any(e["group"] for e in g):
                pics.append(plot_groups(f"AUROC by subgroup: {name}", g, "AUROC", out / f"groups_{stem}.png"))
            lines += ["### Subgroups", "", _md_table(_pivot(grouped)), ""]
        lines += [f"![{p.stem}]({p.name})" for p in pics] + [""]
        written["plots"] += pics
    if result["comparisons"]:
        cmp = pd.DataFrame(result["comparisons"])
        written["csv"].append(_write_csv(out / "comparisons.csv", cmp))
        show = cmp[["task", "class", "auroc_a", "auroc_b", "difference", "ci_low", "ci_high", "p_value", "n"]]
        show = show.map(lambda v: _fmt(v, 4) if isinstance(v, float) else ("all" if v is None else v))
        lines += [
            "## Model comparison (DeLong's test, two-sided; A = predictions, B = --compare-with)",
            "",
            _md_table(show),
            "",
        ]
    lines += _files_section(written, out, result)
    tasks = [{k: v for k, v in t.items()} for t in result["tasks"]]
    written["metrics_json"] = _write_json(
        out / "metrics.json", _json_payload(result, {"tasks": tasks, "comparisons": result["comparisons"]})
    )
    written["report"] = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return written


def _segmentation(result: dict[str, Any], out: Path, title: str, n_worst: int) -> dict:
    written: dict[str, Any] = {"csv": [], "plots": []}
    per_case: pd.DataFrame = result["per_case"]
    lines = _header(title, result)
    n_cases = per_case["id"].nunique()
    lines += [
        f"{n_cases} case(s), labels {result['labels']}. Distances in the images' physical units (spacing).",
        "A label absent from both masks is not counted; present in one mask only: Dice = IoU = 0 and the "
        "distances undefined (`n_undefined`).",
        "",
    ]
    overall = [e for e in result["metrics"] if e["group"] is None]
    lines += ["## Summary (mean over cases)", "", _md_table(_pivot(overall)), ""]
    undefined = {(e["class"]): e["n_undefined"] for e in overall if e["metric"] == "hd95" and e["n_undefined"]}
    if undefined:
        lines += [f"Cases with undefined distances (one mask empty), by label: {undefined}.", ""]
    grouped = [e for e in result["metrics"] if e["group"] is not None]
    if grouped:
        lines += ["## Subgroups", "", _md_table(_pivot(grouped)), ""]
        g = [e for e in result["metrics"] if e["metric"] == "dice" and e["class"] is None]
        p = plot_groups("Mean Dice by subgroup", g, "Dice", out / "groups_dice.png")
        written["plots"].append(p)
        lines += [f"![{p.stem}]({p.name})", ""]
    worst = result["worst"][: max(n_worst, 0)]
    if worst:
        lines += ["## Worst cases (lowest mean Dice)", ""]
        table = per_case[per_case["id"].isin(worst)][["id", "label", "dice", "iou", "hd95", "assd"]]
        table = table.iloc[np.argsort([worst.index(i) for i in table["id"]], kind="stable")]
        lines += [_md_table(table.map(lambda v: _fmt(v) if isinstance(v, float) else v)), ""]
        for cid in worst:
            p_path, t_path = result["paths"][cid]
            pred, truth, sp = load_pair(cid, p_path, t_path, result["config"].get("spacing"))
            dice = per_case[per_case["id"] == cid]["dice"].mean()
            pic = plot_overlay(
                pred, truth, sp, f"{cid}: mean Dice {_fmt(float(dice))}", out / f"overlay_{id_file_stem(cid)}.png"
            )
            written["plots"].append(pic)
            lines.append(f"![{pic.stem}]({pic.name})")
        lines.append("")
    written["csv"].append(_write_csv(out / "per_case.csv", per_case))
    lines += _files_section(written, out, result) + ["- `per_case.csv`: one row per case and label"]
    written["metrics_json"] = _write_json(out / "metrics.json", _json_payload(result, {"labels": result["labels"]}))
    written["report"] = atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return written
