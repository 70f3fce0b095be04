"""Training on several image sets at once: a '+'-joined DATASET.TRAIN_SET and its shares.

Without shares the sets are concatenated (each image once an epoch). With shares an epoch
draws from each set its share of the samples: the first set is seen once (every image, as an
ordinary epoch) and the others fill the rest, drawn without replacement while they last.
Self-training uses it to fine-tune on a few dozen pseudo-labelled lab images without forgetting
the synthetic ones: 60 pseudo images and a share of 0.5 make epochs of 60 + 60 images, where a
plain concatenation with 4000 synthetic ones would see the lab images in 1.5% of the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from lib.utils.io import split_image_sets


def epoch_counts(sizes: Sequence[int], shares: Sequence[float]) -> list[int]:
    """Images drawn from each set in an epoch: the first set's size, the others in proportion
    to their shares of it (rounded; the shares need not sum to 1)."""
    total = sizes[0] / shares[0]
    return [sizes[0]] + [round(total * share) for share in shares[1:]]


def epoch_indices(sizes: Sequence[int], shares: Sequence[float],
                  generator: torch.Generator) -> torch.Tensor:
    """One epoch's indices into the concatenation of the sets, shuffled: every image of the
    first set, and each other set's count (:func:`epoch_counts`) drawn without replacement,
    going round the set again when its count is larger than the set."""
    offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()[:-1]]
    parts = []
    for size, count, offset in zip(sizes, epoch_counts(sizes, shares), offsets, strict=True):
        rounds = max(1, math.ceil(count / size))  # a share rounded to nothing draws none
        order = torch.cat([torch.randperm(size, generator=generator) for _ in range(rounds)])
        parts.append(order[:count] + offset)
    drawn = torch.cat(parts)
    return drawn[torch.randperm(len(drawn), generator=generator)]


class MixedSampler(Sampler[int]):
    """Epochs of :func:`epoch_indices`, reproducible from ``seed`` and the epoch (set_epoch,
    as DistributedSampler: a resumed run draws the same), split over ``world_size`` ranks
    (padded by wrapping round, so that every rank runs as many steps)."""

    def __init__(self, sizes: Sequence[int], shares: Sequence[float], seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if len(sizes) != len(shares):
            raise ValueError(f"{len(sizes)} image sets but {len(shares)} shares")
        self.sizes, self.shares = list(sizes), list(shares)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.per_rank = math.ceil(sum(epoch_counts(self.sizes, self.shares)) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = epoch_indices(self.sizes, self.shares, generator)
        wanted = self.per_rank * self.world_size
        indices = indices.repeat(math.ceil(wanted / len(indices)))[:wanted]
        return iter(indices[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def training_sets(build: Callable[[str], Dataset], image_set: str) -> Dataset:
    """``build(name)`` for each '+'-joined image set of ``image_set``, concatenated (the one
    set itself where there is one)."""
    sets = [build(name) for name in split_image_sets(image_set)]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def image_sets(dataset: Dataset) -> list[Dataset]:
    """The image sets a training set of :func:`training_sets` is made of."""
    return list(getattr(dataset, "datasets", [dataset]))


def set_sizes(dataset: Dataset) -> list[int]:
    """The sizes of the image sets a training set is made of."""
    return [len(part) for part in image_sets(dataset)]
