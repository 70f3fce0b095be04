"""torch.distributed set-up and the few collective helpers the engine needs.

A process started by `torchrun` finds RANK / WORLD_SIZE / LOCAL_RANK in its environment;
any other process is a world of one, and every helper here is then a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed() -> tuple[int, int, int]:
    """Join the process group when launched by torchrun: (rank, world_size, local_rank).

    NCCL on CUDA, gloo on CPU.
    """
    if not launched_by_torchrun():
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            if local_rank >= torch.cuda.device_count():
                raise RuntimeError(
                    f"LOCAL_RANK {local_rank} has no GPU: this machine has "
                    f"{torch.cuda.device_count()} CUDA device(s); launch torchrun with "
                    f"--nproc_per_node <= {torch.cuda.device_count()} (or hide CUDA with "
                    "CUDA_VISIBLE_DEVICES= to run the processes on the CPU with gloo)")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return rank, world, local_rank


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one without distribution)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: float, weight: float = 1.0) -> float:
    """The weighted mean of a scalar over all ranks."""
    if not is_distributed():
        return value
    t = torch.tensor([value * weight, weight], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t[0] / t[1]).item() if t[1] > 0 else 0.0


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index starting at `rank`, without the padding of
    DistributedSampler, so that gathered evaluation sees each sample exactly once."""

    def __init__(self, num_samples: int, rank: int, world_size: int):
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
