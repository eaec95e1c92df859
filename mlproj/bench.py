"""`make bench`: what mlproj's tracking costs against a bare PyTorch loop, and what the data path gains.

It measures, on the same network (LeNet-5), data (an MNIST-format fixture written into a temporary
folder) and batch size:

  (a) a bare PyTorch loop: a float tensor indexed by a permutation, forward / backward / step, loss
      and accuracy summed as tensors, one evaluation per epoch;
  (b) `MLProject.train` inside a Sacred run with full tracking: file observer (heartbeats rewriting
      metrics.json), TensorBoard, train scalars every 10 steps, evaluation and a checkpoint per epoch;
  (c) the data path alone, one epoch of batches: torchvision (a PIL image per sample) vs memory;
  (d) the same for your own images: `dataset=image_folder` (decoded once, then the memory path) vs
      torchvision's `ImageFolder` + `DataLoader`, on a generated folder of JPEGs, second epoch.

Each run of (a) and (b) is timed in a fresh Python process, as a user's run starts: nothing one
measurement leaves behind (allocator state, TensorBoard writer threads, Sacred's) reaches the next.
Runs alternate (a) and (b) in pairs, the order swapped every pair, and the figures are medians;
(a)/(b) come first, before anything else has run. Then (c), the start-up time of
`./main.py print_config` next to `python -c "import torch"`, and the cost of rewriting metrics.json
over a long run. The last line is `tracked/bare = X`.

    python -m mlproj.bench [--train 20000] [--epochs 2] [--repeats 5]

With `--runs N`, it measures listing instead: N generated runs whose train series hold `--steps`
logged steps, recorded by `RunFolderObserver`; `mlproj runs` is timed the first time and the
second time (wall time and peak memory of its process and of the largest of its worker processes),
then again as recorded by plain Sacred: no summaries, metrics.json indented as Sacred writes it.

    python -m mlproj.bench --runs 1000 --steps 10000

With `--board`, it measures `mlproj board` instead (mlproj/bench_board.py): its start, the runs
table's first page and a run page of 10 metrics x 200,000 steps in headless Chromium, and the
server's peak memory, over `--runs` generated runs (default 10,000).

    python -m mlproj.bench --board
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from mlproj.data import create_dataset_factory
from mlproj.data.mnist import NORMALIZATION, read_idx
from mlproj.nets import create_net
from mlproj.record.experiment import create_experiment
from mlproj.record.observers import RunFolderObserver
from mlproj.train.loop import MLProject

ROOT = Path(__file__).resolve().parents[1]


def write_mnist_fixture(root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """MNIST IDX files under `root/MNIST/raw`: noise plus a bright block whose place is the label."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for digit in range(10):
            row, col = divmod(digit, 5)
            images[labels == digit, 4 + 10 * row : 12 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (raw / name).write_bytes(header + array.tobytes())


def bench_config(data_dir: Path, runs: Path, epochs: int, batch_size: int) -> dict[str, Any]:
    return {
        "dataset": "mnist", "model": "lenet", "data_dir": str(data_dir), "download": False, "val_fraction": 0.0,
        "batch_size": batch_size, "optimizer": "adam", "lr": 1e-3, "n_epochs": epochs, "device": "cpu",
        "tensorboard_dir": str(runs / "tensorboard"), "seed": 0,
        "git_pin": False,  # the runs are deleted with their temporary folder: a pin would outlive them
    }


# ---------------------------------------------------------------------------------------- (a) bare
def bare_loop(config: dict[str, Any], epochs: int) -> tuple[float, float]:
    """(wall, CPU) seconds to train `epochs` epochs the way a careful PyTorch user writes it by hand."""
    raw = Path(config["data_dir"]) / "MNIST" / "raw"
    (mean,), (std,) = NORMALIZATION["MNIST"]

    def load(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(str(raw / f"{prefix}-images-idx3-ubyte")).float().div(255).sub(mean).div(std).unsqueeze(1)
        return images, read_idx(str(raw / f"{prefix}-labels-idx1-ubyte")).long()

    (x_train, y_train), (x_test, y_test) = load("train"), load("t10k")
    torch.manual_seed(0)
    net = create_net("lenet", (1, 28, 28), 10)
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    bs, n = config["batch_size"], len(y_train)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        loss_sum, correct = torch.zeros(()), torch.zeros(())
        for i in range(0, n, bs):
            index = order[i : i + bs]
            x, y = x_train[index], y_train[index]
            logits = net(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        net.eval()
        with torch.no_grad():
            test_correct = sum((net(x_test[i : i + bs]).argmax(1) == y_test[i : i + bs]).sum() for i in range(0, len(y_test), bs))
        _ = (loss_sum / n).item(), (correct / n).item(), float(test_correct) / len(y_test)
    return time.perf_counter() - start, time.process_time() - cpu_start


# ---------------------------------------------------------------------------------------- (b) tracked
def tracked_loop(config: dict[str, Any], runs: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `MLProject.train()` in a Sacred run with the file observer and TensorBoard."""
    previous = os.environ.get("MLPROJ_RUNS_DIR")
    os.environ["MLPROJ_RUNS_DIR"] = str(runs)
    ex = create_experiment("bench", save_git_info=False)
    ex.add_config(config)
    seconds: list[tuple[float, float]] = []

    @ex.main
    def train(_run: Any) -> float | None:
        project = MLProject.from_run(_run)
        # The tracker opens its TensorBoard writer on its first write: import tensorboard, as building
        # the project once did, outside the timed loop.
        import torch.utils.tensorboard  # noqa: F401

        start, cpu_start = time.perf_counter(), time.process_time()  # CPU time of all threads
        result = project.train()
        seconds.append((time.perf_counter() - start, time.process_time() - cpu_start))
        return result

    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # the progress bar; Sacred's log lines
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:
        run = ex.run()
    finally:
        sys.stderr.close(), sys.stdout.close()
        sys.stderr, sys.stdout = stderr, stdout
        if previous is None:
            del os.environ["MLPROJ_RUNS_DIR"]
        else:
            os.environ["MLPROJ_RUNS_DIR"] = previous
    run_dir = Path(run.observers[0].dir)
    assert (run_dir / "last.pt").exists() and (run_dir / "metrics.json").exists(), "the tracked run recorded nothing"
    return seconds[0]


# ---------------------------------------------------------------------------------------- fresh processes
def in_fresh_process(kind: str, config: dict[str, Any], runs: Path, epochs: int, threads: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `bare_loop` (kind "bare") or `tracked_loop` ("tracked"), run in a new
    Python process with `threads` torch threads; the process's start-up is not timed."""
    spec = {"kind": kind, "config": config, "runs": str(runs), "epochs": epochs, "threads": threads}
    code = "import json, sys; from mlproj import bench; print(json.dumps(bench.child(json.loads(sys.argv[1]))))"
    result = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the {kind} run failed:\n{result.stderr}")
    wall, cpu = json.loads(result.stdout.strip().splitlines()[-1])
    return wall, cpu


def child(spec: dict[str, Any]) -> tuple[float, float]:
    """The measurement `in_fresh_process` asks for, inside the new process."""
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "bare":
        return bare_loop(spec["config"], spec["epochs"])
    return tracked_loop(spec["config"], Path(spec["runs"]))


# ---------------------------------------------------------------------------------------- (c) data
def data_path(config: dict[str, Any], backend: str, min_seconds: float = 1.0, trials: int = 3) -> float:
    """Samples per second delivered by one backend's training loader (whole epochs), best of `trials`."""
    factory = create_dataset_factory({**config, "data_backend": backend})
    loader = factory.train_loader()
    rates = []
    for _ in range(trials):
        samples, epoch, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            factory.set_epoch(epoch)
            for images, _ in loader:
                samples += images.shape[0]
            epoch += 1
        rates.append(samples / (time.perf_counter() - start))
    return max(rates)  # on a shared machine the least disturbed trial is the closest to the truth


# ---------------------------------------------------------------------------------------- (d) image folder
def write_image_folder(root: Path, n_images: int, size: tuple[int, int] = (96, 80), n_classes: int = 4) -> None:
    """`root/train/<class>/*.jpg`: noisy photos-to-be whose dominant colour is the class."""
    rng = np.random.default_rng(0)
    for i in range(n_images):
        label = i % n_classes
        folder = root / "train" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 120, (size[1], size[0], 3))
        pixels[..., label % 3] += 100
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def _second_epoch_rate(loader: Any, set_epoch: Any) -> float:
    """Samples per second of the second pass over `loader` (the first warms caches and workers)."""
    for epoch in range(2):
        set_epoch(epoch)
        samples, start = 0, time.perf_counter()
        for images, _ in loader:
            samples += images.shape[0]
    return samples / (time.perf_counter() - start)


def image_folder_rates(root: Path, batch_size: int, image_size: int = 64) -> tuple[float, float, float, float]:
    """(torchvision samples/s, memory samples/s, seconds of the first build (decoding), seconds of a
    cached build) on the folder `root`, training transforms alike (crop with padding, flip, normalize)."""
    # lazy: torchvision takes seconds to import, and each (a)/(b) run starts a process that imports
    # this module; only (d) uses it.
    from torchvision import datasets, transforms

    config = {"dataset": "image_folder", "data_dir": str(root), "image_size": image_size, "batch_size": batch_size,
              "val_fraction": 0.0, "device": "cpu", "seed": 0}
    start = time.perf_counter()
    create_dataset_factory(config)
    first = time.perf_counter() - start
    start = time.perf_counter()
    factory = create_dataset_factory(config)
    cached = time.perf_counter() - start
    memory = _second_epoch_rate(factory.train_loader(), factory.set_epoch)
    mean, std = factory.train_set().transform.mean, factory.train_set().transform.std
    transform = transforms.Compose([
        transforms.Resize(image_size), transforms.CenterCrop(image_size),
        transforms.RandomCrop(image_size, padding=image_size // 8), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])
    loader = DataLoader(datasets.ImageFolder(str(root / "train"), transform=transform), batch_size=batch_size, shuffle=True)
    torchvision_rate = _second_epoch_rate(loader, lambda epoch: None)
    return torchvision_rate, memory, first, cached


# ---------------------------------------------------------------------------------------- start-up
def startup_seconds(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------- metrics.json
def metrics_json_cost(steps_per_second: float, n_steps: int, log_every: int = 10, beat: float = 10.0) -> tuple[float, float, int]:
    """The time spent rewriting metrics.json over a run of `n_steps` optimizer steps.

    Replays what Sacred's heartbeat hands the observer (every `beat` seconds, the scalars logged
    since the last one: train.loss, train.accuracy and lr every `log_every` steps) into a real
    `RunFolderObserver`, timing each rewrite. Returns (seconds writing, seconds training, rewrites).
    """
    steps_per_beat = max(1, int(steps_per_second * beat))
    with tempfile.TemporaryDirectory() as tmp:
        observer = RunFolderObserver(tmp)
        observer.started_event({"name": "bench", "base_dir": tmp, "sources": [], "dependencies": [], "repositories": []},
                               "train", {}, datetime.datetime.now(), {}, {}, None)
        now, total, writes = datetime.datetime.now(), 0.0, 0
        for first in range(0, n_steps, steps_per_beat):
            logged = [s for s in range(first + 1, min(first + steps_per_beat, n_steps) + 1) if s % log_every == 0]
            new = {name: {"steps": logged, "values": [0.123456789] * len(logged), "timestamps": [now] * len(logged)}
                   for name in ("train.loss", "train.accuracy", "lr")}
            start = time.perf_counter()
            observer.log_metrics(new, None)
            total += time.perf_counter() - start
            writes += 1
        start = time.perf_counter()
        observer.completed_event(datetime.datetime.now(), None)  # the last, complete write
        total += time.perf_counter() - start
    return total, n_steps / steps_per_second, writes + 1


# ------------------------------------------------------------------------------ listing many runs
def write_runs(runs_dir: Path, n_runs: int, n_steps: int, seed: int = 0) -> None:
    """`n_runs` finished runs as RunFolderObserver records them: a sweep over lr and seed, train
    loss, accuracy and lr at each of `n_steps` steps, validation metrics every 1,000 steps."""
    rng = np.random.default_rng(seed)
    start = datetime.datetime(2026, 1, 1)
    steps = list(range(1, n_steps + 1))
    evals = steps[999::1000] or [n_steps]
    base = {"dataset": "mnist", "model": "lenet", "batch_size": 64, "optimizer": "adam", "n_epochs": 10, "device": "cpu",
            "data_dir": "./datasets", "val_fraction": 0.1, "deterministic": False, "log_iteration_scalars": 10}
    for i in range(n_runs):
        observer = RunFolderObserver(str(runs_dir))
        config = {**base, "lr": [1e-4, 3e-4, 1e-3, 3e-3][i % 4], "seed": i // 4}
        observer.started_event({"name": "mlproj", "base_dir": str(runs_dir), "sources": [], "dependencies": [], "repositories": []},
                               "train", {"hostname": "bench"}, start, config, {}, None)
        loss = 2.3 * np.exp(-np.arange(n_steps) / n_steps * 3) + rng.normal(0, 0.05, n_steps)
        stamps = [start] * n_steps
        series = {"train.loss": loss, "train.accuracy": 1 - loss / 2.5, "lr": np.full(n_steps, config["lr"])}
        metrics = {name: {"steps": steps, "values": v.tolist(), "timestamps": stamps} for name, v in series.items()}
        metrics.update({name: {"steps": evals, "values": rng.uniform(0, 1, len(evals)).tolist(), "timestamps": [start] * len(evals)}
                        for name in ("validation.loss", "validation.accuracy")})
        observer.log_metrics(metrics, None)
        observer.heartbeat_event({"run_key": f"bench-{i}", "benchmark": {"metric": "validation.accuracy", "lower_is_better": False}},
                                 "", start + datetime.timedelta(hours=1), None)
        observer.completed_event(start + datetime.timedelta(hours=1), None)


# Runs `mlproj runs` and reports its peak memory, and that of the largest of its worker processes.
# The peak is the process's own (VmHWM of its address space), not ru_maxrss: a child forked from
# this process, which holds torch, would count this process's pages as its own until it execs. The
# workers' figure is ru_maxrss (the listing process holds no torch), which counts the pages they
# share with it: an upper bound.
_LISTING = """import atexit, re, resource, sys
def peak():
    with open('/proc/self/status') as f:
        own = int(re.search(r'VmHWM:\\s+(\\d+)', f.read()).group(1))
    print(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
atexit.register(peak)
from mlproj.cli import main
sys.exit(main(['runs', sys.argv[1]]))
"""


def timed_listing(runs_dir: Path) -> tuple[float, float, float]:
    """(wall seconds, peak MB, peak MB of its largest worker process, 0 without one) of one
    `mlproj runs` process over `runs_dir`."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _LISTING, str(runs_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"mlproj runs {runs_dir} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    own, worker = result.stderr.strip().splitlines()[-1].split()
    return seconds, int(own) / 1024, int(worker) / 1024  # both in KiB


def as_plain_sacred(runs_dir: Path) -> None:
    """Each run under `runs_dir` as Sacred's FileStorageObserver leaves it: no summary beside
    metrics.json, which is indented (`save_json`), and no cache of summaries."""
    for folder in runs_dir.glob("*/"):
        (folder / "metrics_summary.json").unlink(missing_ok=True)
        metrics = folder / "metrics.json"
        if metrics.exists():
            metrics.write_text(json.dumps(json.loads(metrics.read_text()), sort_keys=True, indent=2))
    shutil.rmtree(runs_dir / ".mlproj-cache", ignore_errors=True)


def first_and_second_listing(runs_dir: Path) -> str:
    """`mlproj runs` over `runs_dir` twice (the first may summarize and cache, the second reads the
    cache): each one's wall time and peak memory, then the load average after them."""
    figures = []
    for listing in (timed_listing(runs_dir), timed_listing(runs_dir)):
        seconds, own, worker = listing
        workers = f" (workers {worker:.0f} MB each)" if worker else ""
        figures.append(f"{seconds:6.2f} s {own:5.0f} MB{workers}")
    return f"first {figures[0]}   second {figures[1]}   load average {os.getloadavg()[0]:.1f}"


def measure_listing(n_runs: int, n_steps: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(tmp) / "runs"
        start = time.perf_counter()
        write_runs(runs_dir, n_runs, n_steps)
        text = (runs_dir / "1" / "metrics.json").read_text()
        sacred = len(json.dumps(json.loads(text), sort_keys=True, indent=2)) / 1e6
        print(f"listing: {n_runs:,} runs, train series of {n_steps:,} steps ({len(text) / 1e6:.1f} MB of metrics.json each, "
              f"{sacred:.1f} MB as plain Sacred indents it), "
              f"written in {time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"mlproj runs, {'recorded by mlproj':<28} {first_and_second_listing(runs_dir)}")
        as_plain_sacred(runs_dir)
        print(f"mlproj runs, {'plain Sacred (no summaries)':<28} {first_and_second_listing(runs_dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlproj.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60000, help="training samples in the fixture")
    parser.add_argument("--test", type=int, default=2000, help="test samples (evaluated each epoch)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--data-seconds", type=float, default=1.0, help="length of each data-path trial")
    parser.add_argument("--images", type=int, default=4000, help="JPEGs in the generated image folder of (d)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier figures when other processes share the CPUs)")
    parser.add_argument("--device", default="cpu", help="cuda: the GPU bench (mlproj/bench_gpu.py) instead")
    parser.add_argument("--runs", type=int, metavar="N", help="measure `mlproj runs` over N generated runs instead")
    parser.add_argument("--steps", type=int, default=10000, help="with --runs or --board: logged steps in each run's train series")
    parser.add_argument("--board", action="store_true", help="measure `mlproj board` over --runs generated runs (default 10,000) instead")
    args = parser.parse_args(argv)
    if args.board:
        from mlproj import bench_board  # lazy: the training bench needs none of it

        return bench_board.measure_board(args.runs or 10_000, args.steps)
    if args.device != "cpu":
        from mlproj import bench_gpu  # lazy: the CPU bench needs none of it

        return bench_gpu.measure(args, write_mnist_fixture)
    if args.runs:
        return measure_listing(args.runs, args.steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)  # called in-process (the tests), leave the process as it was


def _measure(args: argparse.Namespace) -> int:

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, runs = Path(tmp) / "data", Path(tmp) / "runs"
        write_mnist_fixture(data_dir, args.train, args.test)
        config = bench_config(data_dir, runs, args.epochs, args.batch_size)
        samples = args.train * args.epochs
        print(f"workload: LeNet-5, MNIST-format fixture {args.train} train / {args.test} test, batch {args.batch_size}, "
              f"{args.epochs} epoch(s) per run, Adam, CPU; {args.repeats} interleaved pairs, each run in a fresh process, medians")

        def measure(kind: str) -> tuple[float, float]:
            return in_fresh_process(kind, config, runs, args.epochs, torch.get_num_threads())

        bare, tracked = [], []
        for r in range(args.repeats):
            # Alternate which goes first, so a drift in the machine's load hits both alike.
            if r % 2:
                pair = (measure("tracked"), measure("bare"))[::-1]
            else:
                pair = (measure("bare"), measure("tracked"))
            bare.append(pair[0])
            tracked.append(pair[1])
        bare_wall, tracked_wall = (statistics.median(t[0] for t in runs_) for runs_ in (bare, tracked))
        bare_rate, tracked_rate = samples / bare_wall, samples / tracked_wall
        # Each pair ran back to back under the same load: the median of their ratios is the steadiest figure.
        wall_ratio = statistics.median(b[0] / t[0] for b, t in zip(bare, tracked, strict=True))
        cpu_ratio = statistics.median(b[1] / t[1] for b, t in zip(bare, tracked, strict=True))
        print(f"(a) bare PyTorch loop   {bare_rate:10,.0f} samples/s   (runs: {', '.join(f'{samples / t[0]:,.0f}' for t in bare)})")
        print(f"(b) MLProject, tracked  {tracked_rate:10,.0f} samples/s   (runs: {', '.join(f'{samples / t[0]:,.0f}' for t in tracked)})")
        per_epoch = (tracked_wall - bare_wall) / args.epochs
        print(f"    tracking costs {per_epoch * 1000:+.0f} ms per epoch of {args.train} samples; "
              f"tracked/bare in CPU time (all threads) = {cpu_ratio:.3f}")

        tv = data_path(config, "torchvision", args.data_seconds)
        mem = data_path(config, "memory", args.data_seconds)
        print(f"(c) data path alone     torchvision {tv:12,.0f} samples/s   memory {mem:12,.0f} samples/s   "
              f"memory/torchvision = {mem / tv:.0f}x")
        write_image_folder(Path(tmp) / "images", args.images)
        tv, mem, first, cached = image_folder_rates(Path(tmp) / "images", args.batch_size)
        print(f"(d) image_folder        ImageFolder+DataLoader {tv:8,.0f} samples/s   memory {mem:10,.0f} samples/s   "
              f"memory/torchvision = {mem / tv:.0f}x  (second epoch, {args.images} JPEGs 96x80 -> 64x64, "
              f"num_workers=0; decoding once {first:.1f} s, a cached start {cached:.2f} s)")
        from mlproj.bench_gpu import epoch_end_seconds  # lazy: only this line uses it

        end, saving, step = epoch_end_seconds({**config, "n_epochs": 3, "log_iteration_all": "epoch",
                                               "model_dir": str(Path(tmp) / "checkpoints")})
        print(f"(e) epoch end           {end:.3f} s beyond evaluation: histograms, images, progress line, last.pt/best.pt "
              f"({saving:.3f} s of it saving on the training thread; a step: {1000 * step:.1f} ms; median of 2 epoch ends, "
              "in this process)")

    python = sys.executable
    torch_s = startup_seconds([python, "-c", "import torch"], args.startup_repeats)
    config_s = startup_seconds([python, str(ROOT / "main.py"), "print_config"], args.startup_repeats)
    print(f"start-up: ./main.py print_config {config_s:.2f} s   python -c 'import torch' {torch_s:.2f} s")

    steps_per_second = bare_rate / args.batch_size
    n_steps = 100_000
    writing, training, beats = metrics_json_cost(steps_per_second, n_steps)
    print(f"metrics.json: {n_steps:,} steps ({n_steps // 10:,} logged steps x 3 scalars, {training / 60:.0f} min at the bare "
          f"rate), {beats} heartbeats spent {writing:.2f} s writing it = {100 * writing / training:.3f}% of training time")
    print(f"tracked/bare = {wall_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
