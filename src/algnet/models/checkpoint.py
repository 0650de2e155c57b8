"""Loading and saving checkpoints: the project's own and the authors' released ALGNet weights.

Nothing here unpickles arbitrary objects: ``.safetensors`` files are read by safetensors, others by
``torch.load(weights_only=True)``, which refuses any pickle that would run code.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import AlgnetError
from ..fileio import atomic_path
from .registry import create_model
from .tlc import to_tlc

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "network")
CONFIG_KEY = "algnet"


class CheckpointError(AlgnetError, RuntimeError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


def filter_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Converts an official ALGNet state dict (Tombs98/ALGNet) to this package's layout.

    Pure function. Official blocks compute ``x_g * (inside_all + 1) * lamb_g + x_l * lamb_l`` and
    carry ``gamma`` and ``conv3_2``, which they never use; here FA is ``g * F_G + w * F_L``.
    """
    out: dict[str, torch.Tensor] = {}
    prefixes = sorted({k[: -len("lamb_l")] for k in state_dict if k.endswith(".lamb_l")})
    unused = ("gamma", "conv3_2.weight", "conv3_2.bias", "inside_all", "lamb_g", "lamb_l")
    dropped = {p + u for p in prefixes for u in unused}
    for key, value in state_dict.items():
        if key not in dropped:
            out[key] = value
    for p in prefixes:
        c = state_dict[p + "lamb_l"].numel()
        g = (state_dict[p + "inside_all"].reshape(c) + 1.0) * state_dict[p + "lamb_g"].reshape(c)
        out[p + "aggregate.g"] = g.reshape(1, c, 1, 1)
        out[p + "aggregate.w"] = state_dict[p + "lamb_l"].reshape(1, c, 1, 1).clone()
    return out


def is_official_state_dict(state_dict: Mapping[str, Any]) -> bool:
    return any(k.endswith(".lamb_l") for k in state_dict)


def _count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def infer_model_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Guesses ``{"name", "kwargs"}`` (width, block counts, aggregation) from tensor shapes."""
    if "intro.weight" not in state_dict:
        raise CheckpointError("not an ALGNet or NAFNet state dict: there is no 'intro.weight' tensor")
    kwargs: dict[str, Any] = {
        "width": int(state_dict["intro.weight"].shape[0]),
        "enc_blocks": [_count_blocks(state_dict, f"encoders.{i}") for i in range(4)],
        "mid_blocks": _count_blocks(state_dict, "middle_blks"),
        "dec_blocks": [_count_blocks(state_dict, f"decoders.{i}") for i in range(4)],
    }
    keys = list(state_dict)
    if any(".sca.1.weight" in k for k in keys) and "SFE2.main.0.main.0.weight" not in state_dict:
        return {"name": "nafnet32", "kwargs": kwargs}
    has_global = any(".g_layer." in k for k in keys)
    has_local = any(".l_layer." in k for k in keys)
    if not has_global:
        kwargs["aggregation"] = "local"
    elif not has_local:
        kwargs["aggregation"] = "global"
    elif any(".aggregate.conv." in k for k in keys):
        kwargs["aggregation"] = "concat"
    elif any(k.endswith(".aggregate.w") for k in keys):
        kwargs["aggregation"] = "fa"
    else:
        kwargs["aggregation"] = "sum"
    a_log = next((v for k, v in state_dict.items() if k.endswith("mamba.A_log")), None)
    if a_log is not None:
        kwargs["d_state"] = int(a_log.shape[1])
    return {"name": "algnet", "kwargs": kwargs}


def _read_file(path: Path) -> tuple[dict, dict | None]:
    """Returns (raw object, embedded config or None) of a checkpoint file."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None
        config = json.loads(meta[CONFIG_KEY]) if CONFIG_KEY in meta else None
        return tensors, config
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused: the file holds pickled objects other than tensors, which could run code "
            f"when loaded ({str(err).splitlines()[0][:200]}). Load it only if you trust it, and re-save its state_dict."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint, the file is truncated or corrupt ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj, None


def _sibling_config(path: Path) -> dict | None:
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file():
            data = json.loads(candidate.read_text())
            if isinstance(data, dict) and "name" in data:
                return data
            if isinstance(data, dict) and isinstance(data.get(CONFIG_KEY), dict):
                return data[CONFIG_KEY]
    return None


def unwrap_state_dict(obj: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Finds the tensors in a (possibly wrapped, possibly DDP-prefixed) checkpoint dict."""
    config = obj.get(CONFIG_KEY) if isinstance(obj.get(CONFIG_KEY), dict) else None
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("the checkpoint holds no tensors (expected a state dict, possibly under "
                              f"one of {', '.join(WRAPPER_KEYS)})")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, config


def read_checkpoint(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """The tensors of a checkpoint as this package names them, its architecture config if it records
    one, and a label for messages: files and dicts as :func:`load_checkpoint` takes them, unwrapped,
    ``module.`` stripped, official ALGNet weights converted."""
    label = "state dict"
    config = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        obj, config = _read_file(path)
        config = config or _sibling_config(path)
    else:
        obj = source
    state_dict, embedded = unwrap_state_dict(obj)
    config = config or embedded
    if is_official_state_dict(state_dict):
        state_dict = filter_official_state_dict(state_dict)
    return state_dict, config, label


def load_weights_into(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *, partial: bool = False) -> list[str]:
    """Copies a checkpoint's tensors into an existing model (fine-tuning from any checkpoint).

    Strict by default: a missing, unexpected or differently shaped tensor raises a
    :class:`CheckpointError` that lists them. With ``partial`` the tensors whose name and shape
    match are loaded and the rest is returned as report lines (empty when everything matched).
    """
    state_dict, _, label = read_checkpoint(source)
    name = getattr(model, "model_config", {}).get("name", type(model).__name__)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if not partial and (missing or unexpected or wrong):
        raise CheckpointError(_mismatch_message(label, name, missing, unexpected, wrong)
                              + "; pass --init-partial to load the tensors that match")
    matching = {k: v for k, v in state_dict.items() if k in expected and v.shape == expected[k].shape}
    if not matching:
        raise CheckpointError(f"{label}: no tensor matches the {name!r} architecture by name and shape")
    model.load_state_dict(matching, strict=False)
    report = [f"loaded {len(matching)} of the model's {len(expected)} tensors from {label}"]
    for title, keys in (("left at their initial values (missing)", missing), ("skipped (not in the model)", unexpected),
                        ("left at their initial values (shape mismatch, checkpoint vs model)", wrong)):
        if keys:
            report.append(f"{title}: {', '.join(keys)}")
    return report if len(report) > 1 else []


def load_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    name: str | None = None,
    *,
    tlc: bool = False,
    train_size: int = 256,
    strict: bool = True,
    **overrides,
) -> nn.Module:
    """Builds a ready (eval-mode) model from a checkpoint file or an in-memory state dict.

    Args:
        source: path to ``.safetensors`` (config embedded or in a sibling JSON) or ``.pt``/``.pth``,
            or a state dict; wrapped (params, params_ema, state_dict, model) or not,
            ``module.``-prefixed or not; official ALGNet weights are converted.
        name: registered model name; default: from the checkpoint's config, else inferred.
        tlc: convert to TLC ("-local") inference, see :func:`algnet.models.tlc.to_tlc`.
        train_size: training patch side TLC assumes.
        strict: require every tensor to match.
        **overrides: constructor arguments that replace the config's.
    """
    state_dict, config, label = read_checkpoint(source)
    if config is None or name is not None:
        inferred = infer_model_config(state_dict)
        config = {"name": name or inferred["name"], "kwargs": inferred["kwargs"]}
        if name is not None:  # keep the named variant's design, take only the sizes from the tensors
            config["kwargs"] = {k: v for k, v in inferred["kwargs"].items() if k in _SIZE_KWARGS}
    model = _build(config["name"], {**config.get("kwargs", {}), **overrides}, label)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if wrong or (strict and (missing or unexpected)):
        raise CheckpointError(_mismatch_message(label, config["name"], missing, unexpected, wrong))
    model.load_state_dict(state_dict, strict=False)
    model.eval()
    return to_tlc(model, train_size) if tlc else model


_SIZE_KWARGS = ("width", "enc_blocks", "mid_blocks", "dec_blocks", "d_state")


def _build(name: str, kwargs: dict, label: str) -> nn.Module:
    try:
        return create_model(name, **kwargs)
    except TypeError:
        # e.g. d_state inferred from tensors, for a model without a Mamba layer
        sizes = {k: v for k, v in kwargs.items() if k in _SIZE_KWARGS[:4]}
        return create_model(name, **sizes)
    except ValueError as err:
        raise CheckpointError(f"{label}: {err}") from None


def _mismatch_message(label: str, name: str, missing: list[str], unexpected: list[str], wrong: list[str] = ()) -> str:
    def show(keys):
        return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = [f"{label}: does not match the {name!r} architecture"]
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if wrong:
        parts.append(f"shape mismatch (checkpoint vs model): {show(list(wrong))}")
    return "; ".join(parts)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: Mapping[str, str] | None = None) -> Path:
    """Writes weights and architecture config to one ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    config = getattr(model, "model_config", None)
    if config is None:
        raise ValueError("the model has no model_config; build it with algnet.create_model")
    meta = {CONFIG_KEY: json.dumps(config), **(extra or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path
