"""Scoring a set of images: per-image rows, the summary a paper table reports, JSON/CSV/table output."""

from __future__ import annotations

import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import AlgnetError
from ..fileio import atomic_path, atomic_write_text
from .pairing import ScoreItem, ground_truth_items, match_predictions
from .protocols import check_protocol, read_ground_truth, read_prediction, score_pair

METRICS = {"gopro": ("psnr", "ssim"), "hide": ("psnr", "ssim"), "realblur": ("psnr", "ssim"),
           "dpdd": ("psnr", "ssim", "mae", "lpips"), "dpdd16": ("psnr", "ssim", "mae", "lpips")}


@dataclass
class ScoreResult:
    """Per-image ``rows`` (name, metrics, ...), the ``summary`` dict, and ``notes`` worth printing once."""

    protocol: str
    rows: list[dict]
    summary: dict
    notes: list[str] = field(default_factory=list)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _dpdd_groups(items: list[ScoreItem]) -> list[str | None]:
    """indoor/outdoor of each item: the dataset's labels if find_pairs gave them, else Restormer's list."""
    from ..metrics import DPDD_INDOOR, DPDD_TEST_COUNT

    given = [(it.group or "").lower() for it in items]
    if all(g in ("indoor", "outdoor") for g in given):
        return given
    if len(items) == DPDD_TEST_COUNT:
        order = sorted(range(len(items)), key=lambda i: items[i].name)
        groups: list[str | None] = [None] * len(items)
        for rank, i in enumerate(order):
            groups[i] = "indoor" if rank in DPDD_INDOOR else "outdoor"
        return groups
    return [None] * len(items)


def summarize(protocol: str, rows: list[dict]) -> dict:
    """The summary JSON: means of the per-image metrics, DPDD's breakdowns, RealBlur's ECC failures."""
    names = METRICS[protocol]
    summary = {"protocol": protocol, "count": len(rows), **{m: _mean([r[m] for r in rows]) for m in names}}
    if protocol == "realblur":
        summary["ecc_failures"] = sum(bool(r["ecc_failed"]) for r in rows)
    if protocol in ("dpdd", "dpdd16"):
        for group in ("indoor", "outdoor", "combined"):
            chosen = rows if group == "combined" else [r for r in rows if r.get("group") == group]
            has_groups = group == "combined" or any(r.get("group") for r in rows)
            summary[group] = ({"count": len(chosen), **{m: _mean([r[m] for r in chosen]) for m in names}}
                              if has_groups else None)
    return summary


# Worker side: each process reads, scores and loads LPIPS once for itself.
_LPIPS_CACHE: dict = {}


def _lpips_fn(want: bool):
    if not want:
        return None
    if "fn" not in _LPIPS_CACHE:
        from ..metrics import load_lpips

        _LPIPS_CACHE["fn"] = load_lpips()
    return _LPIPS_CACHE["fn"]


def score_item(item: ScoreItem, protocol: str, use_lpips: bool = False, pred: np.ndarray | None = None,
               lpips_fn=None) -> dict:
    """Scores one item from its files (or a given prediction array); returns its row (with "_notes").

    ``use_lpips`` loads LPIPS once per process; ``lpips_fn`` passes one already loaded.
    """
    notes: list[str] = []
    gt = read_ground_truth(item.gt, protocol, notes)
    if pred is None:
        pred = read_prediction(item.pred, protocol, notes)
    if pred.shape != gt.shape:
        raise AlgnetError(f"size mismatch: prediction {item.pred or 'for ' + str(item.blur)} is {pred.shape[1]}x{pred.shape[0]}, "
                          f"ground truth {item.gt} is {gt.shape[1]}x{gt.shape[0]}")
    try:
        row = {"name": item.name, **score_pair(pred, gt, protocol, lpips_fn or _lpips_fn(use_lpips))}
    except ValueError as err:  # e.g. an image too small for the SSIM window
        raise AlgnetError(f"{item.pred or item.blur} vs {item.gt}: {err}") from None
    if item.group is not None:
        row["group"] = item.group
    row["_notes"] = notes
    return row


def _score_star(args):
    return score_item(*args)


def collect(protocol: str, items: list[ScoreItem], rows: Iterable[dict]) -> ScoreResult:
    """Attaches groups, gathers notes and builds the summary from rows in item order."""
    rows = list(rows)
    notes: list[str] = []
    for row in rows:
        notes += [n for n in row.pop("_notes", []) if n not in notes]
    if protocol in ("dpdd", "dpdd16"):
        for row, group in zip(rows, _dpdd_groups(items)):
            row.pop("group", None)
            if group:
                row["group"] = group
    return ScoreResult(protocol, rows, summarize(protocol, rows), notes)


def score_folders(pred_root: str | Path, gt_root: str | Path, protocol: str, split: str = "test",
                  workers: int = 0, progress: bool = True) -> ScoreResult:
    """Scores saved predictions against a ground truth folder (dataset layout or flat) with one protocol.

    Args:
        pred_root: folder of predictions, flat or mirroring the ground truth's layout.
        gt_root: dataset root in its published layout, or a flat folder of sharp images.
        protocol: one of :data:`algnet.evaluation.protocols.PROTOCOLS`.
        split: the dataset split to read from a dataset root.
        workers: processes to score with (0 or 1: in this process).
        progress: show a tqdm bar.
    """
    from tqdm import tqdm

    check_protocol(protocol)
    items, _ = ground_truth_items(gt_root, split)
    items = match_predictions(pred_root, gt_root, items)
    use_lpips = protocol in ("dpdd", "dpdd16") and _lpips_fn(True) is not None  # says once if missing
    jobs = [(item, protocol, use_lpips) for item in items]
    bar = dict(total=len(jobs), desc=f"score {protocol}", unit="img", disable=not progress, leave=False)
    if workers and workers > 1:
        with ProcessPoolExecutor(min(workers, os.cpu_count() or 1)) as pool:
            rows = list(tqdm(pool.map(_score_star, jobs, chunksize=4), **bar))
    else:
        rows = [score_item(*job) for job in tqdm(jobs, **bar)]
    return collect(protocol, items, rows)


def write_json(result: ScoreResult, path: str | Path, extra: dict | None = None) -> Path:
    """Writes the summary (plus ``extra`` keys) as standard JSON.

    An infinite PSNR (identical images) or any other non-finite number is written as ``null``:
    JSON has no infinity, and ``Infinity`` would break jq, JavaScript and most other readers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = _finite_or_null({**result.summary, **(extra or {})})
    atomic_write_text(path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return path


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def write_csv(result: ScoreResult, path: str | Path) -> Path:
    """One row per image: name, the protocol's metrics, and group / ecc_failed where they apply."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["name", *METRICS[result.protocol]]
    columns += [c for c in ("group", "ecc_failed") if any(c in r for r in result.rows)]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path


def format_table(result: ScoreResult) -> str:
    """A short table of the summary for the terminal."""
    s = result.summary
    names = METRICS[result.protocol]

    def fmt(v, metric):
        if v is None:
            return "n/a"
        return f"{v:.2f}" if metric == "psnr" else f"{v:.4f}"

    lines = [f"protocol {result.protocol}: {s['count']} images"]
    header = f"{'':10s}" + "".join(f"{m.upper():>9s}" for m in names) + f"{'images':>8s}"
    lines.append(header)
    groups = [("all", s)]
    if result.protocol in ("dpdd", "dpdd16"):
        groups = [(g, s[g]) for g in ("indoor", "outdoor", "combined") if s.get(g)]
    for label, d in groups:
        lines.append(f"{label:10s}" + "".join(f"{fmt(d[m], m):>9s}" for m in names) + f"{d['count']:>8d}")
    if result.protocol == "realblur":
        lines.append(f"ECC failures (scored unaligned): {s['ecc_failures']}")
    return "\n".join(lines)
