"""The training data order: DistributedSampler's seeded permutation, resumable mid-epoch."""

from __future__ import annotations

import itertools

import torch


class ResumableSampler(torch.utils.data.Sampler):
    """``DistributedSampler``'s order (a permutation seeded by seed + epoch, split across ranks),
    started ``start_batch`` batches into the epoch so a resumed run takes the batches it missed.

    With ``drop_last`` every rank gets the same number of samples, and the batches of N ranks
    together hold exactly the samples of one process's batch of N times the size.
    """

    def __init__(self, dataset, world_size: int, rank: int, seed: int, per_rank_batch: int):
        self.inner = torch.utils.data.DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                                         seed=seed, drop_last=True)
        self.per_rank_batch = per_rank_batch
        self.skip = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.skip = start_batch * self.per_rank_batch

    def batches_per_epoch(self) -> int:
        return len(self.inner) // self.per_rank_batch

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
