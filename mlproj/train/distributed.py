"""Data-parallel training under `torchrun`: every process-group `if` of mlproj lives here.

`torchrun --nproc_per_node=N main.py with ...` starts N copies of main.py with `RANK`, `WORLD_SIZE`
and `LOCAL_RANK` in their environment. Each copy builds the same project; `setup()` joins the
process group (nccl on CUDA, gloo on CPU), the data factory gives each rank its own shard, the
networks are wrapped in `DistributedDataParallel`, and metrics are summed over ranks before they
are logged. Only rank 0 records: the Sacred run of the other ranks is unobserved, and they write no
TensorBoard events and no checkpoints, so a job leaves exactly one run.

Reading the rank needs no torch import (`rank()` is called while Sacred builds the run).

A process that waits for another one in a collective (a gradient or metric all-reduce) gives up
after `MLPROJ_DIST_TIMEOUT` seconds (default 600: above a slow checkpoint write on rank 0); one
whose peer was killed fails as soon as the connection drops. Either way it ends with one line
(`peer_failure`) and a non-zero exit, and torchrun stops the job.
"""

from __future__ import annotations

import atexit
import inspect
import os
import re
from typing import Any

from mlproj.errors import MLProjError

TIMEOUT_ENV = "MLPROJ_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600


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
    from datetime import timedelta

    timeout = timedelta(seconds=timeout_s())
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl", device_id=torch.device(device), timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    atexit.register(_teardown)


def timeout_s() -> int:
    """How long a process waits for the others in a collective: `$MLPROJ_DIST_TIMEOUT` seconds, else 600.

    Raises:
        MLProjError: when the variable is not a positive whole number.
    """
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    if not text.isdigit() or int(text) < 1:
        raise MLProjError(f"{TIMEOUT_ENV}={text}: give whole seconds, e.g. {TIMEOUT_ENV}=600")
    return int(text)


def peer_failure(err: BaseException) -> str | None:
    """One line for a collective that failed because another process of the job went away (killed,
    or silent for `timeout_s()`): what happened and what to do. None for any other error."""
    if not is_distributed():
        return None
    import torch.distributed as dist  # lazy: torch, as in setup

    if not (dist.is_available() and dist.is_initialized()):
        return None
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not (isinstance(err, dist.DistError) or re.search(r"gloo|nccl|connection (reset|closed)|timed out", text, re.I)):
        return None
    reason = re.sub(r"^\[[^\]]*\] ", "", text).split(". ", 1)[0].rstrip(".")  # gloo's "[file.cc:545] " off
    return (f"rank {rank()} of {world_size()} lost another process of the torchrun job ({reason}): a node stopped, "
            f"or was silent for {TIMEOUT_ENV}={timeout_s()}s. Start the job again on every node with resume=<the run> "
            "to continue from its last checkpoint")


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
