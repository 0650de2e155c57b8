"""Sharp images to learn from, with nothing downloaded: photos that installed packages ship, and
procedural images (dead leaves, rendered text).

Every photo has a source name (``"skimage:astronaut"``) and a split. The held-out photos
(``VAL_PHOTOS``: scikit-image's chelsea and coffee) are used only for validation and the ``shake``
benchmark; no training split contains them. Sources and licenses:

- scikit-image's ``skimage/data`` (BSD-3-Clause package; the photos are public domain or CC0, as
  ``skimage/data/README.txt`` lists);
- scikit-learn's ``sklearn/datasets/images`` (``china.jpg``, ``flower.jpg``: CC BY 2.0, credited in
  that folder's ``README.txt``), when scikit-learn is installed;
- matplotlib's ``mpl-data/sample_data`` (``grace_hopper.jpg``: public domain, U.S. Navy), when
  matplotlib is installed;
- text and document pages rendered with the DejaVu fonts that matplotlib ships (Bitstream Vera
  license), or OpenCV's built-in Hershey fonts without matplotlib.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

from ..errors import AlgnetError

__all__ = ["PHOTO_SOURCES", "VAL_PHOTOS", "photo_names", "source_path", "render_text"]

# name -> (package, file inside the package's image folder)
PHOTO_SOURCES: dict[str, tuple[str, str]] = {
    "skimage:astronaut": ("skimage", "astronaut.png"),
    "skimage:rocket": ("skimage", "rocket.jpg"),
    # motorcycle_left/right are one scene from two viewpoints, so both stay in train. retina.jpg is
    # left out: a fundus photo so smooth that a 17-pixel blur of a 256 crop stays above 40 dB.
    "skimage:motorcycle_left": ("skimage", "motorcycle_left.png"),
    "skimage:motorcycle_right": ("skimage", "motorcycle_right.png"),
    "skimage:hubble_deep_field": ("skimage", "hubble_deep_field.jpg"),
    "skimage:immunohistochemistry": ("skimage", "ihc.png"),
    "skimage:camera": ("skimage", "camera.png"),
    "skimage:brick": ("skimage", "brick.png"),
    "skimage:grass": ("skimage", "grass.png"),
    "skimage:gravel": ("skimage", "gravel.png"),
    "skimage:coins": ("skimage", "coins.png"),
    "skimage:text": ("skimage", "text.png"),
    "skimage:page": ("skimage", "page.png"),
    "skimage:chelsea": ("skimage", "chelsea.png"),
    "skimage:coffee": ("skimage", "coffee.png"),
    "sklearn:china": ("sklearn", "china.jpg"),
    "sklearn:flower": ("sklearn", "flower.jpg"),
    "matplotlib:grace_hopper": ("matplotlib", "grace_hopper.jpg"),
}
VAL_PHOTOS = ("skimage:chelsea", "skimage:coffee")


def _package_dir(package: str) -> Path | None:
    """The image folder a package ships, or None when the package is not installed."""
    try:
        if package == "skimage":
            import skimage.data

            return Path(skimage.data.__file__).parent
        if package == "sklearn":
            import sklearn.datasets

            return Path(sklearn.datasets.__file__).parent / "images"
        if package == "matplotlib":
            import matplotlib

            return Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        return None
    raise AlgnetError(f"unknown image package {package!r}")


def _pip_name(package: str) -> str:
    return {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(package, package)


def source_path(name: str) -> Path:
    """The file of a photo source; an error names the package to install when it is missing."""
    if name not in PHOTO_SOURCES:
        raise AlgnetError(f"unknown photo {name!r}; available: {', '.join(PHOTO_SOURCES)}")
    package, file = PHOTO_SOURCES[name]
    folder = _package_dir(package)
    if folder is None:
        raise AlgnetError(f"photo {name} comes with {_pip_name(package)}, which is not installed: "
                          f"pip install {_pip_name(package)}")
    return folder / file


def photo_names(split: str, packages: tuple[str, ...] = ("skimage",)) -> list[str]:
    """The photos of a split (``train`` or ``val``) that ``packages`` ship.

    ``val`` is always :data:`VAL_PHOTOS`; ``train`` never contains them. A package that is not
    installed is an error naming it (a run must not silently train on fewer photos); a file that an
    installed version does not ship is left out.
    """
    if split not in ("train", "val"):
        raise AlgnetError(f"unknown split {split!r}; expected 'train' or 'val'")
    if split == "val":
        return list(VAL_PHOTOS)
    known = {pkg for pkg, _ in PHOTO_SOURCES.values()}
    for pkg in packages:
        if pkg not in known:
            raise AlgnetError(f"unknown photo package {pkg!r}; expected some of {', '.join(sorted(known))}")
        if _package_dir(pkg) is None:
            raise AlgnetError(f"photos from {pkg} need {_pip_name(pkg)}: pip install {_pip_name(pkg)} (or algnet[train])")
    names = [n for n, (pkg, _) in PHOTO_SOURCES.items() if pkg in packages and n not in VAL_PHOTOS]
    return [n for n in names if source_path(n).is_file()]


_WORDS = ("the quick brown fox jumps over lazy dog invoice total page chapter street station exit open "
          "closed receipt amount date name address phone road north south east west menu coffee price "
          "tea hotel platform gate ticket paper table figure section results method image motion blur").split()


def _fonts() -> list[Path]:
    folder = _package_dir("matplotlib")
    if folder is None:
        return []
    ttf = folder.parent / "fonts" / "ttf"
    return sorted(p for p in ttf.glob("DejaVu*.ttf"))


def render_text(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A page of text: lines of random words in a random font, size, ink and paper colour, with
    sometimes a ruled line or a box. Signs and pages are common subjects of deblurring, and their
    thin strokes at many sizes are what blur erases first.

    Returns:
        (height, width, 3) uint8.
    """
    from PIL import Image, ImageDraw, ImageFont

    paper = rng.integers(170, 256, 3) if rng.random() < 0.8 else rng.integers(0, 90, 3)
    ink = rng.integers(0, 80, 3) if paper.mean() > 128 else rng.integers(180, 256, 3)
    img = Image.new("RGB", (width, height), tuple(int(c) for c in paper))
    draw = ImageDraw.Draw(img)
    fonts = _fonts()
    y = int(rng.integers(-8, 8))
    while y < height:
        size = int(np.exp(rng.uniform(np.log(7), np.log(max(8, height / 3)))))
        if fonts:
            font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size)
        else:  # pragma: no cover - matplotlib is installed with the training extra
            font = ImageFont.load_default(size=size)
        words = [str(rng.choice(_WORDS)) for _ in range(int(rng.integers(2, 12)))]
        if rng.random() < 0.3:
            words.append("".join(rng.choice(list(string.digits + ".,-/"), int(rng.integers(3, 9)))))
        line = " ".join(w.upper() if rng.random() < 0.2 else w for w in words)
        x = int(rng.integers(-size, max(1, width // 4)))
        colour = tuple(int(c) for c in (ink if rng.random() < 0.85 else rng.integers(0, 256, 3)))
        draw.text((x, y), line, fill=colour, font=font)
        if rng.random() < 0.15:
            draw.line((0, y + size + 2, width, y + size + 2), fill=colour, width=int(rng.integers(1, 3)))
        y += int(size * rng.uniform(1.1, 1.8))
    if rng.random() < 0.3:
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.rectangle((x0, y0, x0 + int(rng.integers(10, width)), y0 + int(rng.integers(10, height))),
                       outline=tuple(int(c) for c in ink), width=int(rng.integers(1, 4)))
    return np.asarray(img, dtype=np.uint8)
