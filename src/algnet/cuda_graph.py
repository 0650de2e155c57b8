"""Inference through CUDA graphs: one captured forward per input shape, replayed.

Eager ALGNet on a GPU is bound by the host: one 1280x720 forward launches ~1,550 kernels, and on an
H200 it took 92-101 ms eager against 68 ms of GPU kernel time, which is what one CUDA graph replay
of the same forward took (benchmarks/RESULTS.md). :class:`CUDAGraphModel` wraps a model so that a
no-grad call with an input shape (and dtype, and autocast state) seen once before warms the model
up on a side stream, captures one forward, and every later call with that shape copies the input
into the graph's buffer, replays, and returns copies of the outputs. The first call of a shape runs
eagerly, so a folder of images of all different sizes costs no captures; many images of one size
(a benchmark's test set, video frames, tiles of one size) pay one capture, about one forward.

Calls that need autograd, inputs off CUDA, and shapes whose capture failed run the model eagerly.
Graphs share one memory pool (each replay rewrites its intermediates; outputs are copied out at
once), and at most ``max_graphs`` are kept, least recently used first out.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.utils._pytree import tree_map


class _Captured(NamedTuple):
    graph: "torch.cuda.CUDAGraph"
    static_in: torch.Tensor
    static_out: object


class CUDAGraphModel(nn.Module):
    """Runs ``model`` through CUDA graphs at inference; see the module's docstring.

    Args:
        model: any module taking one tensor; its outputs (tensors, or lists/tuples/dicts of them)
            come back as fresh tensors.
        max_graphs: captured shapes kept at once.
        capture_after: eager calls of a shape before it is captured (0: capture at its first call).
    """

    def __init__(self, model: nn.Module, max_graphs: int = 4, capture_after: int = 1):
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        if capture_after < 0:
            raise ValueError(f"capture_after must be 0 or more, got {capture_after}")
        self.model = model
        self.max_graphs = int(max_graphs)
        self.capture_after = int(capture_after)
        self._graphs: OrderedDict = OrderedDict()
        self._seen: OrderedDict = OrderedDict()  # eager calls per shape not captured yet
        self._failed: set = set()
        self._pool = None

    def forward(self, x: torch.Tensor):
        if not self._graphable(x):
            return self.model(x)
        key = self._key(x)
        if key in self._failed:
            return self.model(x)
        entry = self._graphs.get(key)
        if entry is None and not self._due(key):
            return self.model(x)
        if entry is None:
            try:
                entry = self._capture(x)
            except Exception as err:  # an op that cannot be captured: this shape runs eagerly from now on
                self._failed.add(key)
                warnings.warn(f"CUDA graph capture failed for input {tuple(x.shape)} ({type(err).__name__}: {err}); "
                              "running eagerly", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(x.device)
                return self.model(x)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        entry.static_in.copy_(x)
        entry.graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, entry.static_out)

    def _due(self, key) -> bool:
        """Counts an eager call of a shape not yet captured; True once it has had capture_after of them."""
        count = self._seen.pop(key, 0)
        if count >= self.capture_after:
            return True
        self._seen[key] = count + 1
        while len(self._seen) > 64:  # shapes seen once, least recent first out
            self._seen.popitem(last=False)
        return False

    @property
    def captured_shapes(self) -> list[tuple]:
        """Keys of the graphs held, least recently used first: (shape, dtype, device, autocast)."""
        return list(self._graphs)

    def _graphable(self, x: torch.Tensor) -> bool:
        if type(x) is not torch.Tensor or x.device.type != "cuda":
            return False
        return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.model.parameters())))

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        return tuple(x.shape), x.dtype, x.device, autocast

    def _capture(self, x: torch.Tensor) -> _Captured:
        static_in = x.detach().clone()
        # The caller's autocast state, without autocast's cache of cast weights: cached copies made
        # during a capture would be freed when the autocast region ends, under the graph's feet.
        enabled, dtype = self._key(x)[3]
        autocast = lambda: torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)  # noqa: E731
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), torch.no_grad(), autocast():
            self.model(static_in)  # allocations and lazy set-up outside the capture
        torch.cuda.current_stream(x.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool), autocast():
            static_out = self.model(static_in)
        return _Captured(graph, static_in, static_out)
