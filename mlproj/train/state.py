"""Seeds and random-number-generator state: one seed drives every RNG, and their state is saved
whole in checkpoints so a resumed run draws exactly what the uninterrupted one would have."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from mlproj.util.goals import is_better


@dataclass
class TrainState:
    """Everything that changes while training: counters, best score and RNG states are saved whole
    in each checkpoint; the fields marked `scratch` belong to the running loop and are not."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps completed
    # Batches completed within the current epoch (with accumulate_grad_batches > 1, several per
    # optimizer step; checkpoints are written between optimizer steps, so resuming starts a group).
    epoch_step: int = 0
    best_score: float | None = None  # best value of the model's benchmark metric so far
    best_step: int | None = None  # global_step at which best_score was reached
    rng: dict[str, Any] = field(default_factory=dict)  # every RNG's state, captured at save time
    # Why training stops ("n_epochs", "n_global_iterations", "SIGINT", ...): None while it goes on.
    stop_reason: str | None = field(default=None, metadata={"scratch": True})
    last_eval_step: int | None = field(default=None, metadata={"scratch": True})  # global_step of the last evaluation
    window: Any = field(default=None, metadata={"scratch": True})  # train metrics since the last logging step

    def improve(self, value: float | None, lower_is_better: bool) -> bool:
        """Keep `value` as the best score (at this step) if it beats the best so far; whether it did."""
        if value is None or not is_better(value, self.best_score, "min" if lower_is_better else "max"):
            return False
        self.best_score, self.best_step = value, self.global_step
        return True

    def saved(self) -> dict[str, Any]:
        """The fields a checkpoint keeps (plain values and tensors), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("scratch")}


def seed_everything(seed: int, deterministic: bool = False, then: dict[str, Any] | None = None,
                    cudnn_benchmark: bool = False) -> None:
    """Seed python's, numpy's and torch's (CPU and CUDA) generators; optionally make torch deterministic.
    `then`: RNG states (`capture_rng`'s) to put back after seeding: a resumed run's, which continue its draws.
    `cudnn_benchmark`: let cuDNN autotune its convolutions (never with `deterministic`)."""
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matrix products on CUDA.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if then:
        restore_rng(then)


def capture_rng() -> dict[str, Any]:
    """Every generator's state as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what `capture_rng` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][: torch.cuda.device_count()]])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with every generator seeded from `seed`, then give the caller's states back:
    what the body builds (initial weights) is the seed's, and the caller's draws are untouched."""
    caller = capture_rng()
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng(caller)
