"""Checkpoint files: written atomically, read back with `torch.load(weights_only=True)`.

A checkpoint is one plain dict with stable keys (see `MLProject.checkpoint`): tensors, numbers,
strings, lists and dicts only, so loading one never runs code from the file.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import json
import os
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from mlproj.errors import MLProjError
from mlproj.train.context import RunContext
from mlproj.train.state import TrainState, capture_rng
from mlproj.util.files import atomic_copy, atomic_link, atomic_write, check_writable, describe_os_error
from mlproj.util.refs import BEST, LAST, resolve_checkpoint

FORMAT = "mlproj.checkpoint/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path` atomically (see `mlproj.util.files.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def host_copy(obj: Any) -> Any:
    """A snapshot of `obj` (a checkpoint dict) that training may go on changing under: every tensor
    copied to host memory, every dict and list copied (a dict keeps its type and attributes: a
    state_dict's `_metadata`). Tensors sharing memory (tied weights) share it in the copy too, as
    `torch.save` would keep them, so the file holds them once. Copies from a GPU are started together
    and waited for once."""
    devices: set[torch.device] = set()
    storages: dict[tuple[torch.device, int], torch.Tensor] = {}  # each storage copied once, as bytes

    def host_tensor(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.layout != torch.strided:  # sparse and other layouts have no one storage to share
            return tensor.to("cpu", copy=True)
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if key not in storages:
            whole = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(storage)
            if tensor.device.type == "cuda":  # into pinned memory, without a sync per tensor
                devices.add(tensor.device)
                storages[key] = whole.to("cpu", non_blocking=True)
            else:
                storages[key] = whole.to("cpu", copy=True)
        copied = storages[key].untyped_storage()
        return torch.empty(0, dtype=tensor.dtype).set_(copied, tensor.storage_offset(), tensor.size(), tensor.stride())

    def snapshot(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return host_tensor(value.detach())
        if isinstance(value, dict):
            copied = copy.copy(value)
            for key, item in value.items():
                copied[key] = snapshot(item)
            return copied
        if isinstance(value, list) or type(value) is tuple:
            return type(value)(snapshot(item) for item in value)
        return value  # numbers, strings, None: never changed in place

    snapshotted = snapshot(obj)
    for device in devices:
        torch.cuda.synchronize(device)
    return snapshotted


def checkpoint_dict(model: Any, state: dict[str, Any], config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of `model` (weights, optimizers, schedulers, scaler) at `state`, with the
    `config` it trained with (as JSON values) and who wrote it (`run`: id, key, git)."""
    return {
        "format": FORMAT,
        **model.training_state(),
        "state": state,
        "config": json.loads(json.dumps(config, default=str)),
        "run": run,
    }


# What to do when a checkpoint does not fit the model that resumes or tests it.
TRAINING_FIX = "it was written for another model or dataset; resume or test with the config of the run that wrote it."


def load_into(model: Any, checkpoint: dict[str, Any], path: str, *, weights_only: bool = False, fix: str = TRAINING_FIX) -> None:
    """Load `checkpoint` (read from `path`) into `model`: its whole training state
    (`model.load_training_state`: weights, optimizers, schedulers, scaler), or with `weights_only`
    (or a plain `nn.Module`) its weights alone, their names mapped onto the model's (`fit_keys`).

    Raises:
        MLProjError: when the checkpoint does not fit the model, ending with `fix`.
    """
    try:
        if weights_only or not hasattr(model, "load_training_state"):
            model.load_state_dict(fit_keys(checkpoint["model"], model.state_dict()))
        else:
            model.load_training_state(checkpoint)
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise MLProjError(f"checkpoint {path} does not fit this model ({first}): {fix}") from None


def fit_keys(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """`state` with each parameter named as `expected` (a model's `state_dict`) names it, where the
    two differ only by DDP's `module.` level (`net.module.0.weight` and `net.0.weight`), so weights
    saved with or without torchrun load into a model with or without it; other names are kept."""
    def plain(key: str) -> str:
        return ".".join(part for part in key.split(".") if part != "module")

    names = {plain(key): key for key in [*expected, *getattr(expected, "_metadata", {})]}
    return rename_keys(state, lambda key: names.get(plain(key), key))


def rename_keys(state: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    """`state` (a `state_dict`) with every key renamed by `rename`, and the module versions in its
    `_metadata` (which `load_state_dict` reads) renamed the same way."""
    renamed = collections.OrderedDict((rename(key), value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        renamed._metadata = type(metadata)((rename(key), value) for key, value in metadata.items())  # type: ignore[attr-defined]
    return renamed


def write_checkpoint(obj: dict[str, Any], folder: str, best: bool, step: int, fix: str) -> list[str]:
    """Write `obj` to `folder`/last.pt atomically, and make best.pt the same file when `best` (a hard
    link: the checkpoint is serialized and fsynced once).

    Returns:
        The paths written: last.pt, then best.pt when `best`.

    Raises:
        MLProjError: naming the file whose write failed and what to do (`fix`); atomic writes kept
            the previous file, so a full disk does not cost the last good checkpoint.
    """
    written = [os.path.join(folder, "last.pt")]
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_save(obj, written[0])
        if best:
            written.append(os.path.join(folder, "best.pt"))
            atomic_link(written[0], written[1])
    except OSError as err:
        raise MLProjError(
            f"writing checkpoint {written[-1]} failed at step {step} ({describe_os_error(err)}); "
            f"the previous checkpoint is kept. {fix}"
        ) from None
    return written


class RunCheckpoints:
    """A run's checkpoint folder and the record its files go into: `MLProject` saves and resumes
    through it.

    Inside `writing(background=True)`, a save copies the state to host memory and returns; a thread
    serializes, fsyncs and renames it into place while training goes on. At most one write is in
    flight: each save (and `flush`) first waits for the one before, and records its files.

    Args:
        context: the run: its checkpoint folder (None: no checkpoints), its id, key and git pin (kept
            in each checkpoint), its sink (notes where a resumed run continued from).
        tracker: records each file written with the run (`add_artifact`).
        writes: False on the processes that do not write (every rank holds rank 0's weights).
    """

    def __init__(self, context: RunContext, tracker: Any, writes: bool):
        self.context, self.folder, self.tracker, self.writes = context, context.checkpoint_dir, tracker, writes
        self._writer: ThreadPoolExecutor | None = None  # set inside `writing(background=True)`
        self._pending: Future[list[str]] | None = None  # the write in flight: the paths it writes

    def content(self, model: Any, state: Any, config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint dict of `model` at `state` (a `TrainState`, its RNG states captured now);
        `data` describes its inputs (shape, class names, normalization: for predict)."""
        state.rng = capture_rng()
        run = {"id": self.context.run_id, "key": self.context.run_key, "git": self.context.git}
        return {**checkpoint_dict(model, state.saved(), config, run), "data": data}

    def load(self, model: Any, path: str, checkpoint: dict[str, Any] | None) -> tuple[dict[str, Any], TrainState]:
        """Load `checkpoint` (read from `path` on the CPU when None) into `model`: the checkpoint, and the `TrainState` it saved."""
        checkpoint = checkpoint if checkpoint is not None else load_checkpoint(path)
        load_into(model, checkpoint, path)
        return checkpoint, TrainState(**checkpoint["state"])

    def check_writable(self) -> None:
        """`MLProjError` before training when the folder cannot be written."""
        if self.writes and self.folder is not None:
            check_writable(self.folder, "checkpoint folder", "Pass model_dir=<a folder you can write>")

    def continue_with(self) -> str:
        """How to continue this run from its last.pt (see `RunContext.continue_with`)."""
        return self.context.continue_with()

    def save(self, content: Callable[[], dict[str, Any]], best: bool, step: int) -> str | None:
        """Write `content()` to last.pt (and best.pt when `best`), record them; the path of last.pt,
        or None without a folder. `content` is only called on the writing process. Inside
        `writing(background=True)` the write is still under way when this returns (see `flush`).

        Raises:
            MLProjError: when this write, or the background write before it, failed.
        """
        if self.folder is None:
            return None
        if not self.writes:
            return os.path.join(self.folder, "last.pt")
        self.flush()
        fix = f"Free space or pass model_dir=<another folder>, then continue with {self.continue_with()}."
        if self._writer is None:  # host tensors too, so a checkpoint's devices do not depend on when it was saved
            self._record(write_checkpoint(host_copy(content()), self.folder, best, step, fix))
        else:  # a snapshot now (training changes the tensors next step), the write in the thread
            self._pending = self._writer.submit(write_checkpoint, host_copy(content()), self.folder, best, step, fix)
        return os.path.join(self.folder, "last.pt")

    def flush(self) -> None:
        """Wait for the background write in flight, if any, and record its files with the run.

        Raises:
            MLProjError: naming the file whose write failed (the previous one is kept).
        """
        pending = self._pending
        if pending is None:
            return
        try:
            written = pending.result()
        finally:  # kept while still running: an interrupted wait (Ctrl-C) is waited for again
            if pending.done():
                self._pending = None
        self._record(written)

    def _record(self, written: list[str]) -> None:
        for path in written:  # on the training thread, as every other call into the run's record
            self.tracker.add_artifact(path, os.path.basename(path))

    @contextlib.contextmanager
    def writing(self, background: bool) -> Iterator[None]:
        """In the body, saves write in the background when `background` (see the class); leaving it
        waits for the last write. When the body raises, a failed last write is reported as one line
        on stderr and the body's exception goes on; an `MLProjError` from the body instead comes
        back as one `MLProjError` saying both.

        Raises:
            MLProjError: when the last write failed (the body ended normally or with an MLProjError).
        """
        if not (background and self.writes and self.folder is not None):
            yield
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlproj-checkpoint") as writer:
            self._writer = writer
            try:
                yield
            except BaseException as body_error:
                try:
                    self.flush()
                except MLProjError as err:
                    if isinstance(body_error, MLProjError):  # one line for the user: both mistakes in it
                        raise MLProjError(f"{body_error} Also: {err}") from None
                    # the body's error is the one to raise; this one still gets its line
                    print(f"error: {err}", file=sys.stderr, flush=True)
                raise
            finally:
                self._writer = None
            self.flush()

    def resumed_from(self, path: str, checkpoint: dict[str, Any], step: int) -> None:
        """Adopt the checkpoints beside `path` into this run's folder and note in the run's info
        which run, file and step it continues."""
        if self.writes and self.folder is not None:
            for copy in adopt_checkpoints(path, self.folder):
                self.tracker.add_artifact(copy, os.path.basename(copy))
        self.context.sink.set_info("resumed_from", {
            "checkpoint": os.path.abspath(path),
            "run_id": checkpoint["run"].get("id"),
            "run_key": checkpoint["run"].get("key"),
            "global_step": step,
        })


def adopt_checkpoints(path: str, folder: str) -> list[str]:
    """Copy the last.pt and best.pt lying beside `path` (a last.pt) into `folder`, where absent.

    A resumed run's folder so starts with the checkpoints it continues from, and is complete even
    when nothing is left to train (a run killed after its last save). Returns the copies made.
    """
    copies = []
    for name in ("last.pt", "best.pt") if os.path.basename(path) == "last.pt" else ():
        source, copy = os.path.join(os.path.dirname(path), name), os.path.join(folder, name)
        if os.path.exists(source) and not os.path.exists(copy):
            os.makedirs(folder, exist_ok=True)
            atomic_copy(source, copy)
            copies.append(copy)
    return copies


def checkpoint_path(ref: str | int | os.PathLike, which: str = BEST, runs_root: str | None = None) -> str:
    """The checkpoint file `ref` names (see `mlproj.util.refs`): a .pt path, or a run folder's (or
    with `runs_root`, a run id's) `which` file: `LAST` for `resume=`, `BEST` (else last.pt) for
    `test`, `predict` and `load_run`.

    Raises:
        MLProjError: when `ref` is a folder or run id without that file, saying what may be passed.
    """
    path = resolve_checkpoint(ref, which, runs_root)
    if which == LAST and (path is None or not os.path.isfile(path)):
        where = f"a run id in {runs_root}, " if runs_root is not None else ""
        raise MLProjError(f"config resume={str(ref)!r} names no checkpoint: pass a run folder holding last.pt, {where}or the path of a .pt file.")
    if path is None:
        raise MLProjError(
            f"checkpoint {os.fspath(ref) if not isinstance(ref, int) else ref} is a folder without best.pt or last.pt: pass the folder "
            "of a training run (a `test` run saves no checkpoint) or the path of a .pt file."
        )
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read an mlproj checkpoint (a .pt file, or a run folder: its best, see `checkpoint_path`);
    `MLProjError` naming the file if it is missing, corrupt or foreign."""
    path = checkpoint_path(path)
    if not os.path.isfile(path):
        raise MLProjError(f"checkpoint {path} does not exist: pass the path of a last.pt or best.pt file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MLProjError(
            f"checkpoint {path} was refused by the safe loader (weights_only=True): {first[:200]}. "
            "Only load checkpoints written by mlproj; never unpickle files you do not trust."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise MLProjError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}): use another checkpoint "
            "(last.pt and best.pt are written separately) or retrain."
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise MLProjError(
            f"checkpoint {path} is not an mlproj checkpoint (no format {FORMAT!r}): pass a last.pt or "
            "best.pt written by mlproj."
        )
    return checkpoint


# What a run is: a resumed run keeps these recorded values, because other ones would not load its
# checkpoint (model, dataset, optimizer) or would not continue its data order (batch_size counts
# the steps into an epoch; val_fraction moves samples between training and validation; seed draws
# each epoch's order). Everything else (n_epochs, device, lr, data_dir, ...) may be given anew.
RESUME_FIXED_KEYS = ("dataset", "model", "optimizer", "batch_size", "val_fraction", "seed")


def check_resumable(checkpoint: dict[str, Any], config: dict[str, Any], target: Any) -> None:
    """`MLProjError` when `config` gives a `RESUME_FIXED_KEYS` value other than the one recorded in
    `checkpoint`, the checkpoint that `resume=target` names.

    Checked before a run is recorded, so a mistake costs nothing; a deeper mismatch (another width
    of the same net) is still caught when the weights are loaded.
    """
    recorded = checkpoint.get("config") or {}
    differ = [key for key in RESUME_FIXED_KEYS if key in recorded and key in config and recorded[key] != config[key]]
    if differ:
        theirs = " ".join(f"{key}={recorded[key]}" for key in differ)
        ours = " ".join(f"{key}={config[key]}" for key in differ)
        raise MLProjError(
            f"resume={target} continues a run of {theirs}, but this run is given {ours}: drop {ours} to "
            "continue that run as recorded, or start a new run without resume."
        )
