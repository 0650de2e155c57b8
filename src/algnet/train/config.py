"""Training configuration: a tree of typed dataclasses that YAML files serialise.

A config file mirrors :class:`Config`; keys it leaves out keep the defaults below, which are the
paper's recipe (section 4.1.2: Adam 0.9/0.999, lr 5e-4 cosine-annealed to 1e-7, batch 32, 256x256
crops, flips). Unknown keys and values of the wrong type are errors that name the key path, so a
typo cannot silently fall back to a default. ``--set a.b=c`` overrides any key; the value is read
as a YAML scalar (``--set optim.ema=0.999``, ``--set data.val=null``).

Shipped configs live in ``algnet/configs/*.yaml`` and can be named without the suffix
(``algnet train synthetic-tiny``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from ..data.shake import ShakeSpec
from ..errors import AlgnetError

__all__ = [
    "Config", "ModelConfig", "DatasetConfig", "DataConfig", "OptimConfig", "LossConfig", "TrainConfig",
    "DATASET_KINDS", "AMP_MODES", "load_config", "config_from_dict", "config_to_dict", "apply_overrides",
    "dump_config", "list_configs", "config_path",
]

DatasetKind = Literal["synthetic", "gopro", "hide", "realblur_j", "realblur_r", "dpdd", "folders"]
AmpMode = Literal["none", "bf16", "fp16"]
DATASET_KINDS = typing.get_args(DatasetKind)
AMP_MODES = typing.get_args(AmpMode)


@dataclass
class ModelConfig:
    """Which network to train: a registered name and constructor overrides.

    Attributes:
        name: a name from ``algnet.list_models()``.
        kwargs: keyword arguments for ``algnet.create_model`` (width, block counts, ...).
    """

    name: str = "algnet"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    """One dataset: where the pairs come from and how they are cropped.

    Attributes:
        kind: ``synthetic`` (motion blur on photos scikit-image ships; no download) or a benchmark
            layout read by :func:`algnet.data.find_pairs`.
        root: the dataset folder (benchmarks only); null uses ``data.root``.
        split: ``train``/``test`` (``val`` for DPDD and synthetic).
        crop_size: side of the random square crop; ``null`` uses whole images (validation).
        flips: random horizontal and vertical flips.
        max_images: keep this many evenly spaced pairs (validating on a subset of a big test set).
        length: samples per epoch (synthetic only; default eight per photo, one for val).
        kernel_size: blur kernel side (synthetic only).
        noise_sigma: Gaussian noise on the blurred image (synthetic only).
        saturation: gain that smears highlights into saturated streaks (synthetic only).
        scale_range: ``[low, high]`` random shrink of each photo before cropping (synthetic only).
        rot90: random transposition, all eight orientations with the flips (synthetic only).
        shuffle_channels: random permutation of the colour channels (synthetic only).
        dead_leaves: probability of a dead-leaves image instead of a photo crop (synthetic only).
        text: probability of a rendered text page instead of a photo crop (synthetic only).
        packages: the packages whose photos are used: ``skimage``, ``sklearn``, ``matplotlib``
            (synthetic only; the held-out photos are never in a training split).
        shake: camera shake as a camera records it (:class:`algnet.data.shake.ShakeSpec`: path
            extents in pixels, linear light, highlights, sensor noise, JPEG, rotation); replaces
            ``kernel_size``, ``noise_sigma`` and ``saturation`` when set (synthetic only).
    """

    kind: DatasetKind = "synthetic"
    root: str | None = None
    split: str = "train"
    crop_size: int | None = 256
    flips: bool = True
    max_images: int | None = None
    length: int | None = None
    kernel_size: int = 17
    noise_sigma: float = 0.0
    saturation: float = 0.0
    scale_range: tuple[float, float] | None = None
    rot90: bool = False
    shuffle_channels: bool = False
    dead_leaves: float = 0.0
    text: float = 0.0
    packages: list[str] = field(default_factory=lambda: ["skimage"])
    shake: ShakeSpec | None = None


def _default_val() -> DatasetConfig:
    return DatasetConfig(split="val", crop_size=None, flips=False)


@dataclass
class DataConfig:
    """Training pairs and (optional) validation pairs; validation runs on whole images, batch 1.

    Attributes:
        root: the dataset folder for ``train`` and ``val`` when theirs is null, so one
            ``--set data.root=PATH`` points a shipped config at your copy of the dataset.
    """

    root: str | None = None
    train: DatasetConfig = field(default_factory=DatasetConfig)
    val: DatasetConfig | None = field(default_factory=_default_val)

    def root_of(self, spec: DatasetConfig) -> str | None:
        return spec.root if spec.root is not None else self.root


@dataclass
class OptimConfig:
    """Adam with a per-step cosine schedule from ``lr`` to ``min_lr`` over ``train.total_steps``.

    Attributes:
        grad_clip: clip the global gradient norm to this value (``null``: no clipping).
        ema: decay of an exponential moving average of the weights (``null``: none); when set,
            validation and the exported ``.safetensors`` use the averaged weights.
    """

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    min_lr: float = 1e-7
    grad_clip: float | None = None
    ema: float | None = None


@dataclass
class LossConfig:
    """Weights of the multi-scale loss: Charbonnier + edge_weight * Edge + freq_weight * FFT-L1."""

    edge_weight: float = 0.05
    freq_weight: float = 0.1
    eps: float = 1e-3


@dataclass
class TrainConfig:
    """Loop settings.

    Attributes:
        batch_size: the GLOBAL batch; each of N DDP processes takes batch_size / N.
        total_steps: optimizer steps; the cosine schedule spans them.
        val_every: validate every this many steps (and at the end).
        save_every: write ``last.pt`` every this many steps (and at the end).
        log_every: log the training loss every this many steps.
        amp: autocast dtype: ``none`` (float32), ``bf16`` or ``fp16`` (with a gradient scaler).
        seed: seeds the initial weights and every augmentation.
        num_workers: DataLoader worker processes per rank.
    """

    batch_size: int = 32
    total_steps: int = 200_000
    val_every: int = 5_000
    save_every: int = 5_000
    log_every: int = 100
    amp: AmpMode = "none"
    seed: int = 0
    num_workers: int = 4


@dataclass
class Config:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """Checks values that are well-typed but meaningless; raises AlgnetError naming the key."""
        t, o = self.train, self.optim
        positive = {"train.batch_size": t.batch_size, "train.total_steps": t.total_steps,
                    "train.val_every": t.val_every, "train.save_every": t.save_every, "train.log_every": t.log_every}
        for key, value in positive.items():
            if value < 1:
                raise AlgnetError(f"{key} must be a positive integer, got {value}")
        if t.num_workers < 0 or t.seed < 0:
            raise AlgnetError(f"train.num_workers and train.seed must be >= 0, got {t.num_workers} and {t.seed}")
        if not 0 < o.min_lr <= o.lr:
            raise AlgnetError(f"optim: need 0 < min_lr <= lr, got min_lr={o.min_lr}, lr={o.lr}")
        if o.ema is not None and not 0 < o.ema < 1:
            raise AlgnetError(f"optim.ema must be a decay in (0, 1) or null, got {o.ema}")
        if o.grad_clip is not None and o.grad_clip <= 0:
            raise AlgnetError(f"optim.grad_clip must be positive or null, got {o.grad_clip}")
        for name, spec in (("data.train", self.data.train), ("data.val", self.data.val)):
            if spec is None:
                continue
            if spec.kind != "synthetic" and not self.data.root_of(spec):
                raise AlgnetError(f"{name}.root: the {spec.kind} dataset needs its folder (--set data.root=PATH)")
            if spec.crop_size is not None and spec.crop_size < 1:
                raise AlgnetError(f"{name}.crop_size must be positive or null, got {spec.crop_size}")
        if self.data.train.crop_size is None:
            raise AlgnetError("data.train.crop_size: training batches need a crop size (whole images differ in size)")


# --- dict <-> dataclass ---------------------------------------------------------------------------------------------


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts it (lists to tuples, ints to floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AlgnetError(f"{path}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return _from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path)
    if origin is Literal:
        if value not in args:
            raise AlgnetError(f"{path}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise AlgnetError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise AlgnetError(f"{path}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise AlgnetError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise AlgnetError(f"{path}: expected {_type_name(bool)}, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AlgnetError(f"{path}: expected {_type_name(int)}, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads "5e-4" (no dot) as a string; accept any spelling Python reads as a number.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AlgnetError(f"{path}: expected {_type_name(float)}, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise AlgnetError(f"{path}: expected {_type_name(str)}, got {value!r}")
        return value
    return value


def _from_dict(cls, data: dict, path: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            raise AlgnetError(f"unknown key {where!r} (known at this level: {', '.join(sorted(known))})")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict | None, source: str = "config") -> Config:
    """Builds a checked :class:`Config` from a (possibly partial) nested dict.

    Raises:
        AlgnetError: for unknown keys or ill-typed values, naming ``source`` and the key path.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AlgnetError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        config = _from_dict(Config, data, "")
        config.validate()
    except AlgnetError as err:
        raise AlgnetError(f"{source}: {err}") from None
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: Config) -> dict:
    """Nested dict of plain YAML/JSON types (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def dump_config(config: Config) -> str:
    """YAML text of the whole resolved config (every key, defaults included)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Returns a copy of ``data`` with ``a.b.c=value`` overrides applied (values read as YAML).

    Keys are not checked here; :func:`config_from_dict` rejects unknown ones with their path.
    """
    out = _plain(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise AlgnetError(f"--set {item!r}: expected KEY=VALUE, e.g. train.batch_size=8")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise AlgnetError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise AlgnetError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


# --- files and shipped configs ---------------------------------------------------------------------------------------


def _configs_dir():
    return resources.files("algnet") / "configs"


def list_configs() -> list[str]:
    """Names of the configs shipped with the package (without ``.yaml``)."""
    folder = _configs_dir()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def config_path(name_or_path: str) -> Path:
    """Resolves a config file path or the name of a shipped config.

    Raises:
        AlgnetError: when neither a file nor a shipped config of that name exists.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    if path.parent == Path(".") and name in list_configs():
        return Path(str(_configs_dir() / f"{name}.yaml"))
    raise AlgnetError(f"config {name_or_path!r}: no such file, and no shipped config of that name "
                      f"(shipped: {', '.join(list_configs())})")


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    """Reads a YAML config (a path or a shipped name), applies ``--set`` overrides and checks it."""
    path = config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AlgnetError(f"{path}: not valid YAML ({err})") from None
    base = config_from_dict(data, str(path))
    if not overrides:
        return base
    return config_from_dict(apply_overrides(config_to_dict(base), overrides), f"{path} with --set {' '.join(overrides)}")
