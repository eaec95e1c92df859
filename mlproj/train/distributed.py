"""Data-parallel training under `torchrun`: every process-group `if` of mlproj lives here.

`torchrun --nproc_per_node=N main.py with ...` starts N copies of main.py with `RANK`, `WORLD_SIZE`
and `LOCAL_RANK` in their environment. Each copy builds the same project; `setup()` joins the
process group (nccl on CUDA, gloo on CPU), the data factory gives each rank its own shard, the
networks are wrapped in `DistributedDataParallel`, and metrics are summed over ranks before they
are logged. Only rank 0 records: the Sacred run of the other ranks is unobserved, and they write no
TensorBoard events and no checkpoints, so a job leaves exactly one run.

Reading the rank needs no torch import (`rank()` is called while Sacred builds the run).
"""

from __future__ import annotations

import atexit
import inspect
import os
from typing import Any


def rank() -> int:
    """This process's global rank (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes in the job (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_global_zero() -> bool:
    """Whether this process is the one that records (rank 0, or the only process)."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def setup(device: Any) -> None:
    """Join the process group of a torchrun job (no-op for a single process or when joined already)."""
    # lazy: record.experiment imports this module (for rank()), and print_config must not import torch
    import torch
    import torch.distributed as dist

    if not is_distributed() or dist.is_initialized():
        return
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", device_id=torch.device(device))
    else:
        dist.init_process_group("gloo")
    atexit.register(_teardown)


def _teardown() -> None:
    import torch.distributed as dist  # lazy: torch, as in setup

    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: Any, device: Any) -> Any:
    """`module` in `DistributedDataParallel`, its gradients averaged over ranks at each backward.

    Buffers are not broadcast at each forward: evaluation then runs without collectives, so ranks
    whose evaluation shards differ by a batch cannot wait on each other (BatchNorm statistics stay
    per rank; rank 0's are the ones saved).
    """
    from torch.nn.parallel import DistributedDataParallel  # lazy: torch, as in setup

    device_ids = [device] if getattr(device, "type", "cpu") == "cuda" else None
    # torch >= 2.14 renamed the switch (and warns about the old name); older versions know only the old one.
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
    return DistributedDataParallel(module, device_ids=device_ids, **{no_sync: False})


def all_reduce_sum(tensor: Any) -> None:
    """Sum `tensor` over ranks, in place (through the GPU when the backend is nccl)."""
    import torch.distributed as dist  # lazy: torch, as in setup

    if not dist.is_initialized():
        return
    if dist.get_backend() == "nccl":
        on_gpu = tensor.cuda()
        dist.all_reduce(on_gpu)
        tensor.copy_(on_gpu)
    else:
        dist.all_reduce(tensor)
