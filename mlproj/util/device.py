"""Which device a process uses: one canonical `torch.device`, with its index, for every spelling.

`auto`, `cpu`, `cuda` and `cuda:N` all become one `torch.device`; `cuda` gets the index of this
process's GPU (`LOCAL_RANK`, 0 outside torchrun), and under a torchrun job of several processes
every CUDA spelling becomes this rank's GPU. Devices are compared only in this form: `cuda` and
`cuda:0` compare unequal as `torch.device`s, though they are the same GPU.

torch is imported when a device is built, not when this module is imported (data.image_folder
imports it, and registering the datasets must not import torch).
"""

from __future__ import annotations

import os
from typing import Any


def canonical_device(device: Any) -> Any:
    """The `torch.device` (with its index on CUDA) that `device` means for this process.

    Args:
        device: `auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:N` or a `torch.device`.

    Returns:
        A `torch.device`: `cpu`, or `cuda:N` with N this process's GPU.

    Example:
        >>> canonical_device("cuda")  # outside torchrun
        device(type='cuda', index=0)
    """
    import torch  # lazy: see the module docstring

    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type != "cuda":
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or device.index is None:
        return torch.device("cuda", local_rank)  # under torchrun: the GPU of this process's rank
    return device
