"""The training loop: the paper's recipe (docs/DESIGN.md section 5), resumable bit for bit, on 1..N processes.

One optimizer step per global batch: Adam, a per-step cosine schedule from ``optim.lr`` to
``optim.min_lr``, optional autocast (bf16, or fp16 with a gradient scaler), gradient clipping and
EMA. Rank 0 validates (PSNR/SSIM of whole images, batch 1) and writes everything under the run
folder::

    OUT/config.yaml        the resolved config
    OUT/last.pt            resumable state (plain tensors and dicts: torch.load(weights_only=True))
    OUT/last.safetensors   inference weights at the last save (EMA weights when EMA is on)
    OUT/best.safetensors   inference weights of the best validation PSNR
    OUT/metrics.jsonl      one JSON object per validation
    OUT/tb/                TensorBoard events (when tensorboard is installed)

Exact resume: the data order is a pure function of (seed, epoch) (DistributedSampler's seeded
permutation), each sample's augmentation a pure function of (seed, epoch, index), and ``last.pt``
records the epoch and the number of batches already taken from it. A resumed run therefore takes
the same batches in the same order and, on the CPU, ends with bitwise the same weights as a run
that was never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import AlgnetError
from ..fileio import atomic_path
from . import distributed as dist_utils
from .config import Config, DatasetConfig, config_from_dict, config_to_dict, dump_config
from .distributed import DistContext
from .ema import EMA
from .sampler import ResumableSampler
from .schedule import CosineFactor

__all__ = ["Trainer", "TrainResult", "train", "build_model", "build_dataset", "validate", "NonFiniteLossError"]

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_tensorboard_warned = False


class NonFiniteLossError(AlgnetError):
    """The loss became NaN or infinite; the run stopped without saving the broken weights."""


@dataclass
class TrainResult:
    """How a call to :func:`train` ended.

    Attributes:
        status: ``finished`` (reached train.total_steps), ``stopped`` (reached --max-steps) or
            ``interrupted`` (Ctrl-C/SIGTERM; ``last.pt`` holds the state to resume from).
        step: optimizer steps done in all.
        metrics: the last validation's metrics, or None.
        best_psnr: best validation PSNR so far (-inf without validation).
    """

    status: str
    step: int
    metrics: dict | None
    best_psnr: float


# --- building blocks -------------------------------------------------------------------------------------------------


def build_model(config: Config) -> nn.Module:
    """The network of ``config.model``; a bad name or argument is an AlgnetError naming the key."""
    from ..models import create_model

    try:
        return create_model(config.model.name, **config.model.kwargs)
    except ValueError as err:
        raise AlgnetError(f"model.name / model.kwargs: {err}") from None
    except TypeError as err:
        raise AlgnetError(f"model.kwargs: {err}") from None


def build_dataset(spec: DatasetConfig, seed: int, root: str | None = None) -> torch.utils.data.Dataset:
    """A dataset whose items are ``{"blur", "sharp", "name"}`` as :mod:`algnet.data` defines them.

    ``root`` is used when ``spec.root`` is null (``data.root``).
    """
    from ..data import PairedImageDataset, SyntheticBlurDataset, find_pairs

    if spec.kind == "synthetic":
        length = spec.length
        if spec.max_images is not None:
            length = min(length or spec.max_images, spec.max_images)
        return SyntheticBlurDataset(split=spec.split, crop_size=spec.crop_size, length=length, seed=seed,
                                    kernel_size=spec.kernel_size, noise_sigma=spec.noise_sigma,
                                    saturation=spec.saturation, flips=spec.flips,
                                    scale_range=spec.scale_range, rot90=spec.rot90,
                                    shuffle_channels=spec.shuffle_channels, dead_leaves=spec.dead_leaves,
                                    text=spec.text, shake=spec.shake, packages=tuple(spec.packages))
    synthetic_only = [k for k in ("scale_range", "rot90", "shuffle_channels", "dead_leaves", "text", "shake")
                      if getattr(spec, k)]
    if synthetic_only:
        raise AlgnetError(f"{', '.join(synthetic_only)}: only synthetic datasets take these augmentations, "
                          f"not {spec.kind!r}")
    pairs = find_pairs(spec.root if spec.root is not None else root, spec.kind, spec.split)
    if spec.max_images is not None and len(pairs) > spec.max_images:
        keep = np.linspace(0, len(pairs) - 1, spec.max_images).round().astype(int)  # evenly spaced subset
        pairs = [pairs[i] for i in keep]
    return PairedImageDataset(pairs, crop_size=spec.crop_size, flips=spec.flips, seed=seed)


def _ignore_sigint(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; workers keep serving until the main process has
    # finished its step and saved, then it shuts them down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _to_numpy_hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)


@torch.no_grad()
def validate(model: nn.Module, dataset, device: torch.device, amp: str = "none", progress: bool = False) -> dict:
    """Mean PSNR/SSIM of the restored images and PSNR of the blurred inputs, whole images, batch 1.

    skimage metrics with ``data_range=1`` on outputs clamped to [0, 1]; these are training-time
    monitors, not the benchmark protocols of ``algnet eval``.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    sums = {"psnr": 0.0, "ssim": 0.0, "input_psnr": 0.0}
    for i in tqdm(range(len(dataset)), desc="validate", leave=False, disable=not progress):
        item = dataset[i]
        blur = item["blur"][None].to(device)
        with _autocast(device, amp):
            restored = model(blur)[-1]
        pred = _to_numpy_hwc(restored[0].float().clamp(0, 1))
        sharp, inp = _to_numpy_hwc(item["sharp"]), _to_numpy_hwc(item["blur"])
        sums["psnr"] += peak_signal_noise_ratio(sharp, pred, data_range=1)
        sums["ssim"] += structural_similarity(sharp, pred, channel_axis=2, data_range=1)
        sums["input_psnr"] += peak_signal_noise_ratio(sharp, inp, data_range=1)
    model.train(was_training)
    return {k: float(v / len(dataset)) for k, v in sums.items()}


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _rng_state() -> dict:
    # numpy's state holds an ndarray, which weights_only loading refuses: store it as a tensor.
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


class _StopSignal:
    """Turns the first Ctrl-C / SIGTERM into a request to stop after the current step.

    A second Ctrl-C restores the default handler's behaviour (KeyboardInterrupt, no save).
    Installed only in the main thread, where Python delivers signals.
    """

    def __init__(self, announce: bool):
        self.requested = False
        self.announce = announce
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving last.pt "
                  "(Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# --- the trainer -----------------------------------------------------------------------------------------------------


class Trainer:
    """Runs one training configuration in one process of a (possibly single-process) group.

    Construction only records its arguments; :meth:`fit` builds the model, data and optimizer,
    restores ``last.pt`` when resuming, and trains.

    Args:
        config: the resolved config.
        out_dir: the run folder.
        ctx: this process's place in the process group (:func:`algnet.train.distributed.setup`).
    """

    def __init__(self, config: Config, out_dir: str | os.PathLike, ctx: DistContext | None = None,
                 init: str | os.PathLike | None = None, init_partial: bool = False):
        self.config = config
        self.out = Path(out_dir)
        self.ctx = ctx or DistContext()
        self.init, self.init_partial = init, init_partial

    # -- setup --

    def _setup(self) -> None:
        cfg, ctx = self.config, self.ctx
        if cfg.train.batch_size % ctx.world_size:
            raise AlgnetError(f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by the "
                              f"{ctx.world_size} processes")
        self.per_rank_batch = cfg.train.batch_size // ctx.world_size
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and every run
        self.model = build_model(cfg)
        if self.init is not None:  # before the EMA copy and DDP's broadcast; optimiser and schedule start fresh
            from ..models.checkpoint import load_weights_into

            report = load_weights_into(self.model, self.init, partial=self.init_partial)
            if report and ctx.is_main:
                print("--init-partial: " + "\n  ".join(report), file=sys.stderr)
        self.model = self.model.to(ctx.device)
        self.ddp = self.model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        from ..losses import MultiScaleLoss

        self.criterion = MultiScaleLoss(cfg.loss.edge_weight, cfg.loss.freq_weight, cfg.loss.eps)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, CosineFactor(o.lr, o.min_lr, cfg.train.total_steps))
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.train.amp == "fp16")
        self.ema = EMA(self.model, o.ema) if o.ema is not None and ctx.is_main else None

        self.train_set = build_dataset(cfg.data.train, cfg.train.seed, cfg.data.root)
        if len(self.train_set) < cfg.train.batch_size:
            raise AlgnetError(f"data.train has {len(self.train_set)} samples, fewer than one batch "
                              f"(train.batch_size {cfg.train.batch_size})")
        # Validation data only on rank 0, which alone validates; seed 0 is the datasets' default,
        # so runs with different train.seed are scored on the same images.
        self.val_set = build_dataset(cfg.data.val, 0, cfg.data.root) if cfg.data.val is not None and ctx.is_main else None
        self.sampler = ResumableSampler(self.train_set, ctx.world_size, ctx.rank, cfg.train.seed, self.per_rank_batch)
        self.loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=self.per_rank_batch, sampler=self.sampler, drop_last=True,
            num_workers=cfg.train.num_workers, pin_memory=ctx.device.type == "cuda",
            worker_init_fn=_ignore_sigint if cfg.train.num_workers else None,
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_psnr, self.elapsed = -math.inf, 0.0
        self.saved_step: int | None = None
        self.last_metrics: dict | None = None
        self.writer = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    # -- checkpoints --

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as plain tensors and containers."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_psnr": self.best_psnr,
            "elapsed": self.elapsed,
            "rng": _rng_state(),
            "config": config_to_dict(self.config),
            "algnet": self.model.model_config,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state["ema"] is None:  # EMA switched on at resume: start it from the current weights
                self.ema.load_state_dict(state["model"])
            else:
                self.ema.load_state_dict(state["ema"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_psnr, self.elapsed = state["best_psnr"], state["elapsed"]
        self.saved_step = self.step
        _set_rng_state(state["rng"])

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise AlgnetError(f"--resume: {path} does not exist (nothing to resume in {self.out})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user-facing problem
            raise AlgnetError(f"--resume: cannot read {path} ({str(err).splitlines()[0][:200]})") from None
        old = config_to_dict(config_from_dict(state["config"], str(path)))
        changed = _diff(old, config_to_dict(self.config))
        if changed and self.ctx.is_main:
            print(f"note: resuming with a config that differs from the checkpoint's in {', '.join(changed)}; "
                  "the continuation is not the same run", file=sys.stderr)
        self.load_state_dict(state)

    def save(self) -> None:
        """Writes last.pt and last.safetensors atomically (rank 0); refuses non-finite weights."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise NonFiniteLossError(f"the weights are not finite at step {self.step}; {self.out / 'last.pt'} was "
                                     "not overwritten")
        if self.ctx.is_main:
            from ..models import save_checkpoint

            _atomic_torch_save(self.state_dict(), self.out / "last.pt")
            save_checkpoint(self.eval_model, self.out / "last.safetensors", extra={"step": str(self.step)})
        self.saved_step = self.step

    # -- logging --

    def _open_writer(self) -> None:
        global _tensorboard_warned
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not _tensorboard_warned:
                print("warning: tensorboard is not installed, logging to metrics.jsonl only "
                      "(pip install tensorboard)", file=sys.stderr)
                _tensorboard_warned = True
            return
        self.writer = SummaryWriter(log_dir=str(self.out / "tb"), purge_step=self.step + 1)

    def _log_scalars(self, prefix: str, values: dict) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, self.step)

    def _validate(self, train_loss: float) -> dict:
        metrics = validate(self.eval_model, self.val_set, self.ctx.device, self.config.train.amp, progress=True)
        metrics = {"step": self.step, "epoch": self.epoch, **metrics, "lr": self.scheduler.get_last_lr()[0],
                   "loss": train_loss, "time": round(self.elapsed, 3)}
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self._log_scalars("val", {k: metrics[k] for k in ("psnr", "ssim", "input_psnr")})
        if metrics["psnr"] > self.best_psnr:
            from ..models import save_checkpoint

            self.best_psnr = metrics["psnr"]
            save_checkpoint(self.eval_model, self.out / "best.safetensors",
                            extra={"step": str(self.step), "psnr": f"{metrics['psnr']:.4f}"})
        self.last_metrics = metrics
        return metrics

    # -- the loop --

    def _train_step(self, batch: dict, stop_requested: bool) -> float | None:
        """One optimizer step; returns the mean loss over ranks, or None when a stop was requested.

        The loss and the stop request are summed over ranks BEFORE the update, so every rank takes
        the same decision: a NaN on any rank, or a Ctrl-C seen by any rank, leaves all weights as
        they were after the previous step.
        """
        device, amp = self.ctx.device, self.config.train.amp
        blur = batch["blur"].to(device, non_blocking=True)
        sharp = batch["sharp"].to(device, non_blocking=True)
        with _autocast(device, amp):
            outputs = self.ddp(blur)
        loss = self.criterion([o.float() for o in outputs], sharp)  # the loss in float32 (FFT, sqrt)
        flags = torch.stack([loss.detach().float(), torch.tensor(float(stop_requested), device=device)])
        total_loss, stops = dist_utils.all_reduce_sum(self.ctx, flags).tolist()
        if stops > 0:
            return None
        mean_loss = total_loss / self.ctx.world_size
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(self._nan_message(mean_loss))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return mean_loss

    def _nan_message(self, value: float) -> str:
        last = self.out / "last.pt"
        kept = (f"{last} (step {self.saved_step}) is the last good checkpoint and was not overwritten"
                if self.saved_step is not None else "no checkpoint had been written yet")
        return (f"the training loss is {value} at step {self.step + 1}: stopped. {kept}. Lower optim.lr, set "
                f"optim.grad_clip, or use train.amp=bf16 instead of fp16, then continue with --resume")

    def fit(self, resume: bool = False, max_steps: int | None = None) -> TrainResult:
        """Trains until ``train.total_steps`` (or ``max_steps`` steps in all), validating and saving."""
        from tqdm.auto import tqdm

        cfg, ctx = self.config, self.ctx
        if ctx.is_main:
            if not resume and (self.out / "last.pt").exists():
                raise AlgnetError(f"{self.out} already holds a run (last.pt): pass --resume to continue it, "
                                  "or choose another --out")
            self.out.mkdir(parents=True, exist_ok=True)
        dist_utils.barrier(ctx)
        self._setup()
        if resume:
            self._resume()
        if ctx.is_main:
            (self.out / "config.yaml").write_text(dump_config(cfg))
            self._open_writer()
        stop_at = cfg.train.total_steps if max_steps is None else min(max_steps, cfg.train.total_steps)
        batches_per_epoch = self.sampler.batches_per_epoch()
        bar = tqdm(total=cfg.train.total_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not ctx.is_main)
        window = [0.0, 0]  # loss sum and count since the last validation
        status, started = "finished", time.perf_counter() - self.elapsed
        self.model.train()
        try:
            with _StopSignal(announce=ctx.is_main) as stop:
                while self.step < stop_at and status != "interrupted":
                    if self.batch_in_epoch >= batches_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if hasattr(self.train_set, "set_epoch"):
                        self.train_set.set_epoch(self.epoch)
                    self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                    for batch in self.loader:
                        loss = self._train_step(batch, stop.requested)
                        if loss is None:
                            status = "interrupted"
                            break
                        self.step += 1
                        self.batch_in_epoch += 1
                        self.elapsed = time.perf_counter() - started
                        window[0] += loss
                        window[1] += 1
                        bar.update(1)
                        self._after_step(loss, window, bar)
                        if self.step >= stop_at:
                            break
            if status != "interrupted" and self.step < cfg.train.total_steps:
                status = "stopped"
            if self.saved_step != self.step:
                self.save()
            dist_utils.barrier(ctx)
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if status == "interrupted" and ctx.is_main:
            print(f"interrupted at step {self.step}: saved {self.out / 'last.pt'}", file=sys.stderr)
        return TrainResult(status=status, step=self.step, metrics=self.last_metrics, best_psnr=self.best_psnr)

    def _after_step(self, loss: float, window: list, bar) -> None:
        cfg, ctx = self.config.train, self.ctx
        lr = self.scheduler.get_last_lr()[0]
        if ctx.is_main and self.step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self._log_scalars("train", {"loss": loss, "lr": lr})
        if self.config.data.val is not None:  # rank 0 validates, the others wait at the barrier
            if self.step % cfg.val_every == 0 or self.step == cfg.total_steps:
                if ctx.is_main:
                    m = self._validate(window[0] / max(window[1], 1))
                    bar.write(f"step {self.step}: psnr {m['psnr']:.3f} dB (input {m['input_psnr']:.3f}), "
                              f"ssim {m['ssim']:.4f}, loss {m['loss']:.4f}, lr {lr:.2e}")
                window[:] = [0.0, 0]
                dist_utils.barrier(ctx)
        if self.step % cfg.save_every == 0 or self.step == cfg.total_steps:
            self.save()


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def train(config: Config, out_dir: str | os.PathLike, *, resume: bool = False, max_steps: int | None = None,
          device: str = "auto", init: str | os.PathLike | None = None, init_partial: bool = False) -> TrainResult:
    """Trains ``config`` into ``out_dir``: one process, or one of N under ``torchrun``.

    Args:
        config: the resolved config (see :func:`algnet.train.config.load_config`).
        out_dir: the run folder; it must not hold a run already unless ``resume``.
        resume: continue from ``out_dir/last.pt`` exactly where it stopped.
        max_steps: stop once this many steps are done in all (the schedule still spans
            ``train.total_steps``); the state is saved so ``resume`` can continue.
        device: ``auto``, ``cpu`` or ``cuda``.
        init: start from this checkpoint's weights (any file :func:`algnet.load_checkpoint` reads),
            with a fresh optimiser and schedule; strict unless ``init_partial``.
        init_partial: load the tensors of ``init`` that match by name and shape, report the others.
    """
    if init is not None and resume:
        raise AlgnetError("--init starts a new run from a checkpoint's weights and --resume continues a run: "
                          "pass one of them")
    if init_partial and init is None:
        raise AlgnetError("--init-partial needs --init CKPT")
    ctx = dist_utils.setup(device)
    try:
        return Trainer(config, out_dir, ctx, init=init, init_partial=init_partial).fit(resume=resume, max_steps=max_steps)
    finally:
        dist_utils.cleanup(ctx)
