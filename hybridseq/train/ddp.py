"""Devices, and data-parallel training under ``torchrun``: process group, ranks, small collectives.

``torchrun --nproc_per_node N -m hybridseq.cli train CONFIG`` (or ``python -m torch.distributed.run``)
sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; `setup` then joins the group (NCCL on GPUs, gloo on CPU).
Every rank trains on its `DistributedSampler` share of each global batch; gradients are averaged by
``DistributedDataParallel``. Validation, checkpoints and logs happen on rank 0 only, and its decisions
(early stopping) are broadcast so every rank stops together.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is CUDA when available, else CPU; asking for absent CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", f"'{name}' asked for, but CUDA is not available here",
                          choices=("auto", "cpu"), got=name)
    return torch.device(name)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"            # where collectives put their tensors (NCCL needs CUDA ones)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    comm = "cpu"
    if device.type == "cuda":
        comm = f"cuda:{local_rank}"
        torch.cuda.set_device(comm)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, comm)


def mean(value: float, d: Dist) -> float:
    """``value`` averaged over all ranks."""
    if not d.active:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def broadcast(obj, d: Dist):
    """Rank 0's ``obj`` on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
