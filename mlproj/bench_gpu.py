"""`make bench-gpu` (`python -m mlproj.bench --device cuda`): the same job on one GPU, side by side.

On the bench's MNIST-format fixture, LeNet-5, Adam, one batch size: (a) a bare loop written by hand
(the split one tensor on the GPU, batches cut by a permutation, evaluation each epoch), (b)
`MLProject.train()` without a Sacred run (checkpoints and TensorBoard in a temporary folder), and,
when `lightning` can be imported (otherwise one line says it was skipped), Lightning's `Trainer` on
the same network, optimizer, precision and evaluation, without checkpoints or logger: (c) fed
batches cut on the GPU as in (a), its fast path, and (d) fed torchvision's MNIST through a
`DataLoader` with worker processes, as its users write it. For each it prints the first epoch (the
warm-up: allocator, cuDNN, compilation) apart from the steady state, steady-state samples/s over the
later epochs, peak GPU memory and the GPU's name; the last line is `tracked/bare = X`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlproj.errors import MLProjError


def require_cuda() -> None:
    """`MLProjError` in one line when this machine has no usable GPU."""
    if not torch.cuda.is_available():
        raise MLProjError("python -m mlproj.bench --device cuda needs a CUDA GPU, and torch sees none on this machine: "
                          "run it on a GPU machine, or run `make bench` for the CPU figures.")


def _report(name: str, epoch_seconds: list[float], n_samples: int) -> float:
    steady = epoch_seconds[1:] or epoch_seconds
    rate = n_samples * len(steady) / sum(steady)
    print(f"{name}: warm-up (first epoch) {epoch_seconds[0]:.2f} s, steady {rate:,.0f} samples/s over "
          f"{len(steady)} epochs, peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    torch.cuda.reset_peak_memory_stats()
    return rate


def bare(config: dict[str, Any], device: torch.device) -> list[float]:
    """Seconds per epoch of a hand-written loop on `device`, evaluation included."""
    from mlproj.data import create_dataset_factory  # lazy: only the bench reads the fixture this way
    from mlproj.nets import create_net

    factory = create_dataset_factory({**config, "device": "cpu"})
    x_train, y_train = _whole(factory.train_set(), device)
    x_test, y_test = _whole(factory.test_set(), device)
    torch.manual_seed(0)
    net = create_net(config["model"], tuple(x_train.shape[1:]), 10).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    loss_fn, bs, n, seconds = nn.CrossEntropyLoss(), config["batch_size"], len(y_train), []
    for epoch in range(config["n_epochs"]):
        torch.cuda.synchronize()
        start = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, n, bs):
            index = order[i : i + bs]
            loss = loss_fn(net(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
        net.eval()
        with torch.no_grad():
            correct = sum((net(x_test[i : i + bs]).argmax(1) == y_test[i : i + bs]).sum() for i in range(0, len(y_test), bs))
        _ = loss_sum.item(), float(correct)
        seconds.append(time.perf_counter() - start)
    return seconds


def _whole(split: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(split[i] for i in range(len(split))), strict=True)
    return torch.stack(images).to(device), torch.as_tensor(labels).to(device)


class DeviceBatches:
    """An epoch of batches cut from `images` and `labels` (on the training device) by a permutation
    drawn anew for each pass (`shuffle`), or in order: the bare loop's batches, as an iterable that
    Lightning takes for a dataloader."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool):
        self.images, self.labels, self.batch_size, self.shuffle, self.passes = images, labels, batch_size, shuffle, 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Any:
        n, seed, self.passes = len(self.labels), self.passes, self.passes + 1  # the bare loop's order: seeded by the epoch
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(0, n, self.batch_size):
            index = order[i : i + self.batch_size]
            yield self.images[index], self.labels[index]


def lightning_epochs(config: dict[str, Any], device: torch.device, fast: bool, sync: Any = torch.cuda.synchronize) -> list[float]:
    """Seconds per epoch of Lightning's `Trainer.fit` (evaluation included) on `device`: `fast`, the
    splits on the device cut into batches as the bare loop does; else torchvision's MNIST read from
    the fixture through a `DataLoader` of up to 8 worker processes. `sync` waits for the device."""
    import logging
    import warnings

    import lightning.pytorch as pl  # lazy: optional, only this leg needs it
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mlproj.data.mnist import NORMALIZATION
    from mlproj.nets import create_net

    bs = config["batch_size"]
    if fast:
        from mlproj.data import create_dataset_factory

        factory = create_dataset_factory({**config, "device": "cpu"})
        train = DeviceBatches(*_whole(factory.train_set(), device), bs, shuffle=True)
        test = DeviceBatches(*_whole(factory.test_set(), device), bs, shuffle=False)
    else:
        (mean,), (std,) = NORMALIZATION["MNIST"]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
        workers = min(8, os.cpu_count() or 1)
        train, test = (DataLoader(datasets.MNIST(config["data_dir"], train=split, transform=transform), batch_size=bs,
                                  shuffle=split, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=True)
                       for split in (True, False))
    torch.manual_seed(0)
    net = create_net(config["model"], (1, 28, 28), 10)
    ends: list[float] = [time.perf_counter()]

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.loss_fn, self.correct = net, nn.CrossEntropyLoss(), None

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            return self.loss_fn(self.net(batch[0]), batch[1])

        def validation_step(self, batch: Any, index: int) -> None:
            hits = (self.net(batch[0]).argmax(1) == batch[1]).sum()
            self.correct = hits if self.correct is None else self.correct + hits

        def on_validation_epoch_end(self) -> None:  # the epoch's end: its training, then its evaluation
            _, self.correct = float(self.correct), None
            sync()
            ends.append(time.perf_counter())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=config["lr"])

    precision = {"off": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[config.get("amp", "off")]
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # its lines about the hardware found, and tips
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its advice (workers, tensor cores, SLURM): the bench measures as configured
        trainer = pl.Trainer(accelerator=device.type, devices=[device.index or 0] if device.type == "cuda" else 1,
                             precision=precision, max_epochs=config["n_epochs"], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(Classifier(), train_dataloaders=train, val_dataloaders=test)
    return [b - a for a, b in zip(ends, ends[1:], strict=False)]


def tracked(config: dict[str, Any]) -> list[float]:
    """Seconds per epoch of `MLProject.train()`, evaluation, checkpoint and TensorBoard included."""
    from mlproj.train.callbacks import Callback  # lazy: as in bare
    from mlproj.train.loop import MLProject

    class EpochClock(Callback):
        def __init__(self) -> None:
            self.ends = [time.perf_counter()]

        def on_epoch_end(self, project: Any, metrics: dict[str, float]) -> None:
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    clock = EpochClock()
    MLProject(config, callbacks=[clock]).train()
    return [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]


def epoch_end_seconds(config: dict[str, Any], sync: Any = lambda: None) -> tuple[float, float, float]:
    """(epoch end, its checkpoint save, one step) in seconds, medians over the epoch boundaries of
    one `MLProject.train()`.

    An epoch's end is the time from the end of its last step to the start of the next epoch's first,
    less the evaluation: what the end adds on the training thread (histograms and images, the
    progress line, hooks, last.pt and best.pt, the next epoch's first batch); the save is the part
    spent in `save_checkpoint`. Called with `n_epochs` >= 2; `sync` waits for the device
    (`torch.cuda.synchronize`).
    """
    import statistics

    from mlproj.train.callbacks import Callback  # lazy: as in bare
    from mlproj.train.loop import MLProject

    starts: dict[int, float] = {}  # epoch: when its first step started
    ends: list[tuple[int, float]] = []  # (epoch, time) at the end of each step
    evaluations: list[float] = []
    saves: list[float] = []

    class StepClock(Callback):
        def on_train_batch_end(self, project: Any, metrics: Any) -> None:
            sync()
            ends.append((project.epoch, time.perf_counter()))

    class Clocked(MLProject):
        def evaluate(self, split: str | None = None) -> dict[str, float]:
            start = time.perf_counter()
            metrics = super().evaluate(split)
            evaluations.append(time.perf_counter() - start)
            return metrics

        def save_checkpoint(self, best: bool = False) -> str | None:
            start = time.perf_counter()
            path = super().save_checkpoint(best)
            saves.append(time.perf_counter() - start)
            return path

    project = Clocked(config, callbacks=[StepClock()])
    train_batch = project.model.train_batch

    def started(batch: Any) -> Any:
        sync()
        starts.setdefault(project.epoch, time.perf_counter())
        return train_batch(batch)

    project.model.train_batch = started  # on the instance: the loop's call, timed without a change to the model
    project.train()
    step = statistics.median(b - a for (ea, a), (eb, b) in zip(ends, ends[1:], strict=False) if ea == eb)
    last_ends = {epoch: at for epoch, at in ends}  # the last step of each epoch
    gaps = [starts[epoch + 1] - last_ends[epoch] - evaluations[epoch] for epoch in sorted(last_ends) if epoch + 1 in starts]
    return statistics.median(gaps), statistics.median(saves[: len(gaps)]), step


def measure(args: Any, write_fixture: Any) -> int:
    """Run (a), (b) and Lightning's line on the GPU `args.device` names; 1 with one line without CUDA."""
    try:
        require_cuda()
    except MLProjError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from mlproj.util.device import canonical_device  # lazy: as in bare

    device = canonical_device(args.device)
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fixture(root / "data", args.train, args.test)
        config = {"dataset": "mnist", "model": "lenet", "data_dir": str(root / "data"), "download": False,
                  "val_fraction": 0.0, "batch_size": args.batch_size, "optimizer": "adam", "lr": 1e-3,
                  "n_epochs": max(args.epochs, 3), "device": str(device), "seed": 0, "git_pin": False,
                  "tensorboard_dir": str(root / "tensorboard"), "model_dir": str(root / "checkpoints")}
        os.environ.setdefault("MLPROJ_RUNS_DIR", str(root / "runs"))
        bare_rate = _report("bare loop", bare(config, device), args.train)
        tracked_rate = _report("mlproj, tracked", tracked(config), args.train)
        end, saving, step = epoch_end_seconds(config, torch.cuda.synchronize)
        print(f"epoch end: {end:.3f} s beyond evaluation, of which {saving:.3f} s saving last.pt on the training thread "
              f"(a step: {1000 * step:.1f} ms)")
        try:
            import lightning  # noqa: F401  (asked only whether it is installed; lightning_epochs imports it)
        except ImportError:
            print("lightning: skipped (not importable; pip install lightning to compare)")
        else:
            for fast, name in ((True, "fast path, batches on the GPU"), (False, "torchvision MNIST, DataLoader")):
                rate = _report(f"lightning {lightning.__version__}, {name}", lightning_epochs(config, device, fast), args.train)
                print(f"tracked/lightning ({name}) = {tracked_rate / rate:.2f}")
    print(f"tracked/bare = {tracked_rate / bare_rate:.2f}")
    return 0
