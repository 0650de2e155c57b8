"""Finding blurred/sharp image pairs in the published layouts of the deblurring benchmarks.

Each dataset is read from a local folder exactly as its authors ship it (DESIGN.md section 6), plus
the flattened ``{input,target}`` / ``{blur,sharp}`` folders that MIMO-UNet, MPRNet and Restormer
prepare. The result is always a list of :class:`ImagePair`, sorted by ``name``; anything that
does not pair up is an :class:`~algnet.errors.AlgnetError` naming the files.

Layouts (``root`` is the folder given by the user):

- ``gopro``: ``root/{split}/GOPRxxxx_xx_xx/{blur,sharp}/*.png`` (``blur_gamma`` is ignored), or
  ``root/{split}/{blur,sharp}`` / ``root/{split}/{input,target}``; the same directly under
  ``root`` when ``root/{split}`` does not exist.
- ``hide``: ``root/test/{test-close-ups,test-long-shot}/*.png`` with the sharp images of the same
  names in ``root/GT`` (official release) or ``root/test/GT``; or ``{input,target}``.
- ``realblur_j`` / ``realblur_r``: ``root/RealBlur_{J,R}_{split}_list.txt``, lines
  ``<gt_relpath> <blur_relpath>`` relative to ``root``.
- ``dpdd``: ``root/{split}_c/{source,target}`` (the centre view); Restormer's
  ``root/{inputC,target}`` is accepted too.
- ``folders``: ``root/{blur,sharp}`` or ``root/{input,target}``, paired by file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlgnetError
from ..metrics.dpdd import DPDD_INDOOR

__all__ = ["ImagePair", "DATASETS", "IMAGE_EXTENSIONS", "find_pairs", "detect_layout", "DPDD_INDOOR_TEST_INDICES"]

DATASETS = ("gopro", "hide", "realblur_j", "realblur_r", "dpdd", "folders")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# The (blurred, sharp) folder names of a flat paired layout, in order of preference.
_FLAT_PAIRS = (("blur", "sharp"), ("input", "target"))
_HIDE_SUBSETS = ("test-close-ups", "test-long-shot")
_MAX_LISTED = 5

# 0-based indices of the name-sorted 76 DPDD test images that are indoor scenes (37 of them); a
# third-party list, used only when the dataset's own indoor_labels.npy/outdoor_labels.npy are absent.
DPDD_INDOOR_TEST_INDICES = tuple(DPDD_INDOOR)


@dataclass(frozen=True)
class ImagePair:
    """One blurred image and its sharp ground truth.

    Attributes:
        blur: path of the blurred (network input) image.
        sharp: path of the sharp (ground-truth) image.
        name: identifier unique within the set, relative and with '/' separators,
            e.g. ``"GOPR0384_11_00/000001.png"``; evaluation writes results under it.
        group: the subset the pair belongs to, for per-group scores: the GoPro sequence, HIDE
            ``"test-close-ups"`` / ``"test-long-shot"``, DPDD ``"indoor"`` / ``"outdoor"``, the
            RealBlur scene; ``None`` where the layout has none.
    """

    blur: Path
    sharp: Path
    name: str
    group: str | None = None


def _images(folder: Path) -> dict[str, Path]:
    """Image files directly in ``folder``, by file name (hidden files skipped)."""
    return {
        p.name: p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    }


def _listing(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _pair_folders(blur_dir: Path, sharp_dir: Path, prefix: str = "", group: str | None = None,
                  strict: bool = True) -> list[ImagePair]:
    """Pairs the images of two folders by file name.

    Args:
        strict: also refuse sharp images without a blurred partner; off for HIDE, whose ``GT``
            folder is shared by the train and test splits.
    """
    blurs, sharps = _images(blur_dir), _images(sharp_dir)
    if not blurs:
        raise AlgnetError(f"no images in {blur_dir}")
    if not sharps:
        raise AlgnetError(f"no images in {sharp_dir}")
    lonely = sorted(set(blurs) - set(sharps))
    if lonely:
        raise AlgnetError(
            f"{len(lonely)} blurred image(s) in {blur_dir} have no sharp partner in {sharp_dir}: {_listing(lonely)}"
        )
    orphans = sorted(set(sharps) - set(blurs))
    if strict and orphans:
        raise AlgnetError(
            f"{len(orphans)} sharp image(s) in {sharp_dir} have no blurred partner in {blur_dir}: {_listing(orphans)}"
        )
    return [ImagePair(blurs[n], sharps[n], prefix + n, group) for n in sorted(blurs)]


def _flat_pair_dirs(folder: Path) -> tuple[Path, Path] | None:
    for b, s in _FLAT_PAIRS:
        if (folder / b).is_dir() and (folder / s).is_dir():
            return folder / b, folder / s
    return None


def _gopro_sequences(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and (d / "blur").is_dir() and (d / "sharp").is_dir())


def _find_gopro(root: Path, split: str) -> list[ImagePair]:
    base = root / split if (root / split).is_dir() else root
    sequences = _gopro_sequences(base)
    if sequences:
        pairs = []
        for seq in sequences:
            pairs += _pair_folders(seq / "blur", seq / "sharp", prefix=seq.name + "/", group=seq.name)
        return pairs
    flat = _flat_pair_dirs(base)
    if flat:
        return _pair_folders(*flat)
    raise AlgnetError(
        f"no GoPro layout in {base}: expected GOPRxxxx_xx_xx/{{blur,sharp}}/ sequence folders, "
        f"or blur/ and sharp/, or input/ and target/"
    )


def _find_hide(root: Path, split: str) -> list[ImagePair]:
    base = root / split if (root / split).is_dir() else root
    flat = _flat_pair_dirs(base)
    if flat:
        return _pair_folders(*flat)
    # The official release keeps GT/ next to test/; some copies move it inside.
    gt = next((g for g in (base / "GT", base.parent / "GT", root / "GT") if g.is_dir()), None)
    subsets = [base / s for s in _HIDE_SUBSETS if (base / s).is_dir()]
    if gt is None or not subsets:
        raise AlgnetError(
            f"no HIDE layout in {root}: expected {split}/test-close-ups/ and {split}/test-long-shot/ with GT/ "
            f"(in {root} or {base}), or input/ and target/"
        )
    pairs = []
    for subset in subsets:
        pairs += _pair_folders(subset, gt, prefix=subset.name + "/", group=subset.name, strict=False)
    return pairs


def _resolve_listed(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.exists():
        # Tolerate a list file copied into the RealBlur-X_... folder itself, whose name the
        # listed paths start with.
        first, _, rest = rel.partition("/")
        if first == root.name and rest:
            return root / rest
    return path


def _realblur_name(rel: str) -> tuple[str, str | None]:
    """(name, scene) of a listed path: the ``RealBlur-X_...`` prefix dropped, the scene folder."""
    parts = rel.split("/")
    if len(parts) > 1 and parts[0].lower().startswith("realblur"):
        parts = parts[1:]
    scene = next((p for p in parts[:-1] if p.lower().startswith("scene")), parts[0] if len(parts) > 1 else None)
    return "/".join(parts), scene


def _find_realblur(root: Path, variant: str, split: str) -> list[ImagePair]:
    list_file = root / f"RealBlur_{variant}_{split}_list.txt"
    if not list_file.is_file():
        raise AlgnetError(f"no RealBlur-{variant} list file: {list_file} does not exist")
    pairs, missing = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise AlgnetError(f"{list_file} line {number}: expected '<gt_path> <blur_path>', got {line.strip()!r}")
        gt_rel, blur_rel = (f.replace("\\", "/") for f in fields)
        sharp, blur = _resolve_listed(root, gt_rel), _resolve_listed(root, blur_rel)
        missing += [str(p) for p in (sharp, blur) if not p.is_file()]
        name, scene = _realblur_name(blur_rel)
        pairs.append(ImagePair(blur, sharp, name, scene))
    if missing:
        raise AlgnetError(f"{list_file} lists {len(missing)} missing file(s): {_listing(missing)}")
    if not pairs:
        raise AlgnetError(f"{list_file} lists no image pairs")
    return pairs


def _dpdd_groups(root: Path, n: int) -> list[str | None]:
    """indoor/outdoor of the name-sorted DPDD test images, or None for each when unknown."""
    indoor_file, outdoor_file = root / "indoor_labels.npy", root / "outdoor_labels.npy"
    groups: list[str | None] = [None] * n
    if indoor_file.is_file() or outdoor_file.is_file():
        import numpy as np

        for group, file in (("indoor", indoor_file), ("outdoor", outdoor_file)):
            if not file.is_file():
                continue
            labels = np.load(file).astype(int).ravel()  # 1-based (Restormer subtracts 1)
            bad = [int(i) for i in labels if not 1 <= i <= n]
            if bad:
                raise AlgnetError(f"{file}: indices {_listing(map(str, bad))} are outside 1..{n}, the number of test images")
            for i in labels:
                groups[i - 1] = group
        return groups
    if n == 76:
        indoor = set(DPDD_INDOOR_TEST_INDICES)
        return ["indoor" if i in indoor else "outdoor" for i in range(n)]
    return groups


def _find_dpdd(root: Path, split: str) -> list[ImagePair]:
    base = root / f"{split}_c"
    if (base / "source").is_dir() and (base / "target").is_dir():
        pairs = _pair_folders(base / "source", base / "target")
    elif (root / "inputC").is_dir() and (root / "target").is_dir():
        pairs = _pair_folders(root / "inputC", root / "target")
    else:
        raise AlgnetError(f"no DPDD layout in {root}: expected {split}_c/source/ and {split}_c/target/ (or inputC/ and target/)")
    if split == "test":
        groups = _dpdd_groups(root, len(pairs))
        pairs = [ImagePair(p.blur, p.sharp, p.name, g) for p, g in zip(pairs, groups)]
    return pairs


def _find_folders(root: Path) -> list[ImagePair]:
    flat = _flat_pair_dirs(root)
    if flat is None:
        raise AlgnetError(f"no paired folders in {root}: expected blur/ and sharp/, or input/ and target/")
    return _pair_folders(*flat)


def find_pairs(root: str | os.PathLike, dataset: str, split: str = "test") -> list[ImagePair]:
    """Lists the blurred/sharp pairs of a dataset stored in its published layout.

    Args:
        root: the dataset's folder.
        dataset: one of :data:`DATASETS`.
        split: ``"train"``, ``"test"`` (or ``"val"`` for DPDD); the ``folders`` layout ignores it.

    Returns:
        The pairs, sorted by name.

    Raises:
        AlgnetError: naming the folder or files, when the root is missing, no layout is found, a
            folder is empty, an image has no partner, or a list file points at missing files.
    """
    root = Path(root).expanduser()
    if dataset not in DATASETS:
        raise AlgnetError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if not root.is_dir():
        raise AlgnetError(f"dataset folder {root} does not exist")
    if dataset == "gopro":
        pairs = _find_gopro(root, split)
    elif dataset == "hide":
        pairs = _find_hide(root, split)
    elif dataset in ("realblur_j", "realblur_r"):
        pairs = _find_realblur(root, dataset[-1].upper(), split)
    elif dataset == "dpdd":
        pairs = _find_dpdd(root, split)
    else:
        pairs = _find_folders(root)
    pairs.sort(key=lambda p: p.name)
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AlgnetError(f"{root}: the same image is listed more than once: {_listing(dup)}")
    return pairs


def detect_layout(root: str | os.PathLike) -> str:
    """Guesses which of :data:`DATASETS` a folder holds, from its files and folder names.

    Raises:
        AlgnetError: when the root is missing, nothing is recognised, or both RealBlur-J and
            RealBlur-R list files are present (name the dataset explicitly then).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AlgnetError(f"dataset folder {root} does not exist")
    realblur = [v for v in ("J", "R") if any(root.glob(f"RealBlur_{v}_*_list.txt"))]
    if len(realblur) == 2:
        raise AlgnetError(f"{root} holds both RealBlur-J and RealBlur-R list files: name the dataset (realblur_j or realblur_r)")
    if realblur:
        return f"realblur_{realblur[0].lower()}"
    if any((root / f"{s}_c" / "source").is_dir() for s in ("train", "val", "test")) or (root / "inputC").is_dir():
        return "dpdd"
    hide_bases = [root, root / "test"]
    if any((b / s).is_dir() for b in hide_bases for s in _HIDE_SUBSETS):
        return "hide"
    for base in (root, root / "train", root / "test"):
        if base.is_dir() and _gopro_sequences(base):
            return "gopro"
    if _flat_pair_dirs(root):
        return "folders"
    if any((root / s).is_dir() and _flat_pair_dirs(root / s) for s in ("train", "test")):
        return "gopro"
    raise AlgnetError(
        f"no known dataset layout in {root} (GoPro, HIDE, RealBlur-J/R list files, DPDD, or blur/ and sharp/ folders)"
    )
