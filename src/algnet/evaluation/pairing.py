"""Which prediction goes with which ground truth.

The ground truth is a dataset root in its published layout (read through
``algnet.data.find_pairs``) or a flat folder of sharp images. Predictions may mirror the ground
truth's relative layout, the blurred inputs' layout, or sit in one flat folder; they are matched by
relative path first, then by file name.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlgnetError
from .protocols import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ScoreItem:
    """One image to score. ``name`` is its unique relative id, ``group`` e.g. DPDD's indoor/outdoor."""

    name: str
    gt: Path
    blur: Path | None = None
    group: str | None = None
    pred: Path | None = None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def ground_truth_items(gt_root: str | Path, split: str = "test") -> tuple[list[ScoreItem], str | None]:
    """Lists the ground truth: (items, dataset name or None for a flat folder of images)."""
    root = Path(gt_root)
    if not root.is_dir():
        raise AlgnetError(f"{root}: no such ground-truth folder")
    flat = _images_in(root, recursive=False)
    if flat:  # a folder of sharp images: nothing to detect
        return [ScoreItem(name=p.name, gt=p) for p in flat], None
    from ..data.layouts import detect_layout, find_pairs

    dataset = detect_layout(root)
    pairs = find_pairs(root, dataset, split)
    if not pairs:
        raise AlgnetError(f"{root}: no {split} images found in its {dataset} layout")
    return [ScoreItem(name=p.name, gt=Path(p.sharp), blur=Path(p.blur), group=p.group) for p in pairs], dataset


def _relative(path: Path | None, root: Path) -> Path | None:
    try:
        return path.resolve().relative_to(root.resolve()) if path is not None else None
    except ValueError:  # a list file may point outside the root
        return None


def _with_suffixes(path: Path) -> list[Path]:
    return [path] + [path.with_suffix(s) for s in IMAGE_SUFFIXES if s != path.suffix.lower()]


def match_predictions(pred_root: str | Path, gt_root: str | Path, items: list[ScoreItem]) -> list[ScoreItem]:
    """Finds each item's prediction under ``pred_root``; an error lists the unmatched (up to 5).

    Tried in order: the ground truth's relative path, the blurred input's relative path, the item's
    relative id (also with ``/`` flattened to ``_`` or ``-``), each with any image suffix; then the
    file name (or stem) of the ground truth, then of the blurred input, anywhere under ``pred_root``
    when it is unique there.
    """
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    if not pred_root.is_dir():
        raise AlgnetError(f"{pred_root}: no such prediction folder")
    by_name: dict[str, list[Path]] = defaultdict(list)
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in _images_in(pred_root, recursive=True):
        by_name[p.name].append(p)
        by_stem[p.stem].append(p)

    def find(item: ScoreItem) -> Path | None:
        relatives = [_relative(item.gt, gt_root), _relative(item.blur, gt_root), Path(item.name),
                     Path(item.name.replace("/", "_")), Path(item.name.replace("/", "-"))]
        for rel in filter(None, relatives):
            for candidate in _with_suffixes(pred_root / rel):
                if candidate.is_file():
                    return candidate
        keys = [(item.gt.name, by_name), (item.gt.stem, by_stem)]
        if item.blur is not None:
            keys += [(item.blur.name, by_name), (item.blur.stem, by_stem)]
        for key, index in keys:
            if len(index.get(key, ())) == 1:
                return index[key][0]
            if len(index.get(key, ())) > 1:
                shown = ", ".join(str(p) for p in index[key][:3])
                raise AlgnetError(f"{item.gt}: its file name matches several predictions ({shown}); "
                                  f"mirror the ground-truth layout under {pred_root}")
        return None

    matched, missing = [], []
    for item in items:
        pred = find(item)
        if pred is None:
            missing.append(item.name)
        else:
            matched.append(ScoreItem(item.name, item.gt, item.blur, item.group, pred))
    if missing:
        raise AlgnetError(f"{pred_root}: no prediction for {len(missing)} of {len(items)} ground-truth images: "
                          f"{_listing(missing)}")
    users = defaultdict(list)
    for item in matched:
        users[item.pred].append(item.name)
    shared = {p: names for p, names in users.items() if len(names) > 1}
    if shared:  # e.g. a flat folder of GoPro frames, whose file names repeat across sequences
        pred, names = next(iter(shared.items()))
        raise AlgnetError(f"{pred} is the only match for several ground-truth images ({_listing(names)}); "
                          f"mirror the ground truth's layout under {pred_root} or name predictions by relative id")
    return matched


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more
