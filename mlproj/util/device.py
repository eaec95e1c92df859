"""Which device a process uses: `auto` resolved, and under torchrun the GPU of this process's rank.

Reading the environment needs no torch import; torch is imported only to ask whether CUDA exists.
"""

from __future__ import annotations

import os


def resolve_device(device: str) -> str:
    """`auto` becomes `cuda:0` when CUDA is available, else `cpu`; other names pass through."""
    if device != "auto":
        return device
    import torch  # lazy: data.image_folder imports this module, and registering the datasets must not import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def local_device(device: str) -> str:
    """`device` for this process: on CUDA under torchrun, the GPU of its `LOCAL_RANK`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
