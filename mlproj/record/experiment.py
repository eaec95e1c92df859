"""Sacred glue: the experiment class `main.py` builds on, its observers, checks and commands.

`create_experiment(name)` returns a Sacred `Experiment` that
- starts from the machinery defaults (`mlproj.train.config`), so `main.py` holds only its own keys;
- records every run: a file observer under the runs dir unless one was given with `-F`, and a
  MongoDB observer when `MONGODB_URI` is set (unless `-m` gave one); `-u` records nothing;
- starts `with resume=RUN` from RUN's recorded config, and `test with checkpoint=FILE` from the
  config of the run that wrote FILE (keys given on the command line override it);
- checks the config and the dataset files before the run starts, so a mistake writes nothing:
  with the `check_config` and `prepare_data` of the main file's project class (its module-level
  `Project`, else its one `MLProject` subclass: the class `mlproj.load_run` builds), else of `MLProject`;
- prints user mistakes as one line and exits 1, without a traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import re
import sys
import time
import types
import uuid
import warnings
from typing import Any

# sacred 0.8.7 imports pkg_resources, which setuptools<81 (pinned for it) marks deprecated on import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

import wrapt  # noqa: E402  (Sacred's own dependency: the proxy that keeps a captured function's attributes)
from sacred import Experiment, commands  # noqa: E402

# Private (no public way to record another file's sources): test_record_sacred_api.py checks its signature.
from sacred.dependencies import gather_sources_and_dependencies  # noqa: E402
from sacred.observers import FileStorageObserver, MongoObserver, QueuedMongoObserver  # noqa: E402

# Sacred's own parser of its `-m` option, not exported: test_record_sacred_api.py checks what it returns.
from sacred.observers.mongo import parse_mongo_db_arg  # noqa: E402
from sacred.utils import ConfigAddedError, NamedConfigNotFoundError, SacredError  # noqa: E402

from mlproj.errors import MLProjError  # noqa: E402
from mlproj.record.checks import check_mongo_option, check_run, main_command, test_inputs, test_needs_checkpoint  # noqa: E402
from mlproj.record.context import RunNotes, context_of, note_run, notes_of, runs_root  # noqa: E402
from mlproj.record.gitpin import pin_or_warn  # noqa: E402
from mlproj.record.mongo import BackgroundMongoObserver  # noqa: E402
from mlproj.record.observers import RunFolderObserver, collapse_redraws, mongo_observer  # noqa: E402
from mlproj.train import distributed  # noqa: E402
from mlproj.train.config import machinery_defaults, runs_dir, tensorboard_root  # noqa: E402
from mlproj.train.main_file import project_class  # noqa: E402
from mlproj.train.signals import hold_sigterm, release_sigterm, terminate_as_interrupt  # noqa: E402
from mlproj.util.git import repository_root  # noqa: E402
from mlproj.util.refs import CHECKPOINT_OF  # noqa: E402

# Sacred's own commands only read the config; they need no data and record nothing.
READ_ONLY_COMMANDS = {"print_config", "print_dependencies", "save_config", "print_named_configs"}
# Set by `mlproj reproduce` for the run it starts: the run being reproduced, as JSON.
REPRODUCES_ENV = "MLPROJ_REPRODUCES"


class MLProjExperiment(Experiment):
    """A Sacred `Experiment` with mlproj's observers, checks and error handling (module docstring).

    The main file's project class is its module-level `Project`, else its one `MLProject` subclass
    (the class `mlproj.load_run` builds too), else `MLProject` (`mlproj.train.main_file`). That class's `check_config`
    checks each run's config before anything is written.
    """

    def __init__(self, name: str, save_git_info: bool = True, **kwargs: Any):
        # Sacred finds the main file and the sources to record in the globals of whoever called
        # Experiment(); here that is this module, so point it at the experiment's own file instead.
        caller = _experiment_file_globals()
        super().__init__(name, save_git_info=False, **kwargs)
        self.doc = caller.get("__doc__") or ""  # `--help` describes the experiment's file, not this module
        self.command(print_config, unobserved=True)  # replaces Sacred's: colours only on a terminal
        self.base_dir = os.path.abspath(kwargs.get("base_dir") or os.path.dirname(caller.get("__file__") or "."))
        self._main_globals = caller  # read when a run starts: `Project` is defined below `ex` in the file
        self._gather_sources(caller, save_git_info)
        self.captured_out_filter = collapse_redraws  # `\r` redraws: keep each line as the terminal shows it
        self.add_config(machinery_defaults())
        self._on_command_line = False
        # `-F DIR` of the run being created: Sacred adds its observer only after the config hooks ran.
        self._file_storage: str | None = None
        self._read_checkpoint: tuple[str, dict[str, Any]] | None = None  # what the config hook read

        # Sacred checks a hook's argument names: plain functions with exactly those.
        def recorded_config(config: dict[str, Any], command_name: str, logger: Any) -> dict[str, Any]:
            return self._recorded_config(config, command_name)

        def command_line_options(options: dict[str, Any]) -> None:
            check_mongo_option(options.get("--mongo_db"))
            self._file_storage = options.get("--file_storage") or None  # for the config hook

        self.config_hook(recorded_config)
        self.option_hook(command_line_options)

    def _gather_sources(self, caller: dict[str, Any], save_git_info: bool) -> None:
        """Record the main file, its sources and dependencies, as Sacred does for its caller."""
        try:
            self.mainfile, self.sources, self.dependencies = gather_sources_and_dependencies(
                caller, save_git_info, self.base_dir
            )
        except ValueError as err:  # a Git repo without commits: Sacred cannot read its HEAD
            warnings.warn(f"Git info not recorded ({err}); commit once to record it.", stacklevel=3)
            save_git_info = False
            self.mainfile, self.sources, self.dependencies = gather_sources_and_dependencies(
                caller, save_git_info, self.base_dir
            )
        self.save_git_info = save_git_info
        # mlproj's modules are imported lazily, after Sacred looked: record the package's files when
        # the project carries its own copy of it (the template layout), so every run keeps them.
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # mlproj/, above record/
        if package_dir.startswith(self.base_dir + os.sep):
            for folder, _, files in os.walk(package_dir):
                for filename in sorted(files):
                    if filename.endswith(".py"):
                        self.add_source_file(os.path.join(folder, filename))

    @property
    def project_class(self) -> type:
        """The main file's project class: its `Project`, else its one `MLProject` subclass, else `MLProject`."""
        return project_class(self._main_globals, self._main_globals.get("__file__"))

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise `MLProjError` for a config value the experiment's project class refuses (`MLProject.check_config`)."""
        self.project_class.check_config(config)

    def _recorded_config(self, config: dict[str, Any], command_name: str) -> dict[str, Any]:
        """Config hook: start from the config recorded in the checkpoint a run continues from.

        `with resume=RUN` continues RUN as it was recorded, and `test with checkpoint=FILE` evaluates
        the run that wrote FILE, so both take that run's config (from the checkpoint, which also
        holds it when it lies outside a run folder) as their base. Sacred applies the keys given on
        the command line and in named configs on top of what a config hook returns
        (`Scaffold.run_config_hooks`), so those still win without this hook knowing which they
        are; `check_run` then compares the result with the recorded config and refuses keys that
        would change the run being resumed. So `config.json` records what actually runs.
        """
        self._read_checkpoint = None
        resuming = command_name == self.default_command or command_name in READ_ONLY_COMMANDS
        target = config.get("resume") if resuming else config.get("checkpoint")
        if target is None or target == "":
            return {}
        # lazy: train.checkpoint imports torch, which print_config must not
        from mlproj.train.checkpoint import checkpoint_path, load_checkpoint

        path = checkpoint_path(target, CHECKPOINT_OF["resume"], self._runs_root()) if resuming else str(target)
        checkpoint = load_checkpoint(path)
        self._read_checkpoint = (path, checkpoint)
        # A test run keeps its own seed and TensorBoard folder and never resumes.
        own = {"resume"} if resuming else {"resume", "checkpoint", "seed", "tensorboard_dir"}
        recorded = checkpoint.get("config") or {}
        # `seed` enters the config after the hooks (Sacred draws it then unless it is set).
        return {k: v for k, v in recorded.items() if (k in config or k == "seed") and k not in own}

    def _runs_root(self) -> str:
        """The runs dir the run being created records into: `-F DIR`, an added file observer, else the default."""
        return runs_root(self.observers, self._file_storage)

    # Private, because Sacred has no public hook that sees a run's final config before its observers
    # start: config hooks run before the command-line keys are laid over their result, option
    # hooks before there is a config, and pre-run hooks after the observers' started events wrote
    # the run folder. The checks, and swapping `-F`/`-m`'s observers for ours, must come before that.
    def _create_run(self, command_name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        try:
            run = super()._create_run(command_name, *args, **kwargs)
            read = self._read_checkpoint
        finally:
            self._read_checkpoint = None
        self._prepare_run(run, command_name or self.default_command, read)
        return run

    def _prepare_run(self, run: Any, command: str, read: tuple[str, dict[str, Any]] | None) -> None:
        """Check a created run (`check_run`), then give it its key, provenance and observers."""
        if self._on_command_line:
            run.run_logger.addFilter(_ONE_LINE_ERRORS)
        hold_sigterm()  # until the main function starts, inside Sacred's capture (see `_MainFunction`)
        run.main_function = _MainFunction(run.main_function)
        run._get_captured_output = types.MethodType(_get_captured_output, run)
        if distributed.rank() != 0:
            run.unobserved = True  # under torchrun only rank 0 records: one run per job
            run.run_logger.setLevel(logging.WARNING)  # and says "Running command", "Completed" once
        # Sacred's capture turns stdout into a pipe once the run starts: the progress bar asks here.
        notes = RunNotes(stdout_is_terminal=bool(getattr(sys.stdout, "isatty", lambda: False)()),
                         resume_command=_resume_command())  # how the loop's "continue with" hints read here
        note_run(run, notes)
        if command in READ_ONLY_COMMANDS:
            return
        training = command == self.default_command
        if read is not None and not training:
            notes.checkpoint = read  # (path, content): `test_checkpoint` need not read the file again
        root = check_run(run, self.project_class, command, training=training, read=read)
        if command == "test":  # its data and model, built now: a mistake in either writes nothing
            notes.tested = (self.project_class, *test_inputs(self.project_class, run.config, read))
        run.info["run_key"] = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        if os.environ.get("MLPROJ_SWEEP"):  # set by `mlproj sweep` for each trial: {name, trial, of}
            run.info["sweep"] = json.loads(os.environ["MLPROJ_SWEEP"])
        if os.environ.get("MLPROJ_TUNE"):  # set by `mlproj tune` for each trial: {study, trial, params}
            run.info["tune"] = json.loads(os.environ["MLPROJ_TUNE"])
            if os.environ.get("MLPROJ_TUNE_PRUNE") and command == self.default_command:  # --prune: {storage, ...}
                from mlproj.record.pruning import OptunaPruning  # lazy: imports optuna and torch, for --prune runs only

                notes.callbacks = [OptunaPruning(run, **json.loads(os.environ["MLPROJ_TUNE_PRUNE"]))]
        if not run.unobserved:
            record_provenance(run, self.base_dir, root)
            attach_observers(run)

    # Private, because Sacred reports an unknown command through no public hook: here it becomes one
    # line and exit 1; test_record_sacred_api.py fails if Sacred changes this method.
    def _check_command(self, cmd_name: str) -> str | None:
        err = super()._check_command(cmd_name)
        if err and self._on_command_line:
            err = err.removeprefix("Error: ")
            print(f"error: {err}. See {main_command()} --help.", file=sys.stderr)
            sys.exit(1)
        return err

    def run_commandline(self, argv: Any = None) -> Any:
        self._on_command_line = True
        try:
            with terminate_as_interrupt():  # a SIGTERM anywhere in the command: recorded INTERRUPTED
                return super().run_commandline(argv)
        except KeyboardInterrupt as err:
            print(f"interrupted{f' ({err})' if str(err) else ''}", file=sys.stderr)
            sys.exit(130)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._run(*args, **kwargs)
        finally:
            release_sigterm()  # held by `_prepare_run`: released here when the main function never started

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        if not self._on_command_line:
            return super().run(*args, **kwargs)
        try:
            return super().run(*args, **kwargs)
        except MLProjError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        except SacredError as err:
            print(f"error: {one_line_sacred_error(err)}", file=sys.stderr)
            sys.exit(1)
        except RuntimeError as err:  # Sacred's --enforce_clean refusing a dirty or unversioned tree, or a lost peer
            lost = distributed.peer_failure(err)
            if lost:
                print(f"error: {lost}", file=sys.stderr)
                sys.exit(1)
            # Sacred raises a plain RuntimeError for --enforce_clean, told apart only by its message:
            # test_record_sacred_api.py fails if Sacred changes it.
            if not str(err).startswith(("EnforceClean", "No version control")):
                raise
            print(f"error: {self._enforce_clean_refusal(str(err))}", file=sys.stderr)
            sys.exit(1)

    def _enforce_clean_refusal(self, error: str) -> str:
        """Sacred's `--enforce_clean` refusal as one line naming the checkout (Sacred names the
        repository's origin URL, in a dict)."""
        if error.startswith("No version control"):
            return (f"--enforce_clean: {self.base_dir} is in no Git repository with a commit, so there is nothing to "
                    "check: commit the project in Git, or run without --enforce_clean.")
        folders = {os.path.dirname(source.filename) for source in self.sources if source.is_dirty}
        checkouts = sorted({repository_root(folder) or folder for folder in folders}) or [self.base_dir]
        return (f"--enforce_clean: the checkout {', '.join(checkouts)} has uncommitted changes: commit or stash the "
                "changes, or run without --enforce_clean.")


class _MainFunction(wrapt.ObjectProxy):
    """A run's main function (its attributes are Sacred's captured function's), which Sacred calls
    inside its output capture: it releases SIGTERM, held since the run was created (`hold_sigterm`),
    so the capture's `tee` processes, started meanwhile, keep it blocked, and a signal sent to every
    process of the run ends the run in order, not its output first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        release_sigterm()
        return self.__wrapped__(*args, **kwargs)


def _get_captured_output(run: Any) -> None:
    """Sacred's `Run._get_captured_output`, which also reads the last part of the output, kept when
    the capture closed (`CapturedStdout.final`). Sacred's skips a closed capture, and a failed or
    interrupted run reads it only after closing it: such a run lost what it printed since its last
    heartbeat, the `continue with` line among it. Private: test_record_sacred_api.py fails if
    Sacred changes what this copies."""
    out = run._output_file
    if out.closed and out.final is None:
        return
    text = out.get()
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if run.captured_out:
        text = run.captured_out + text
    if run.captured_out_filter is not None:
        text = run.captured_out_filter(text)
    run.captured_out = text


class _OneLineErrors(logging.Filter):
    """Drops Sacred's `Failed after ...!` line of a run that failed with an `MLProjError`: the command
    line prints that error as its one line (`MLProjExperiment.run`). Sacred logs it from the `except`
    clause that then re-raises (`Run._emit_failed`), so the exception being handled is the run's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == SACRED_FAILED_LINE and isinstance(sys.exc_info()[1], MLProjError))


# The message Sacred's run logger logs a failed run with; test_record_sacred_api.py fails if Sacred changes it.
SACRED_FAILED_LINE = "Failed after %s!"
_ONE_LINE_ERRORS = _OneLineErrors()  # one instance: a logger keeps a filter once however many runs add it


def _experiment_file_globals() -> dict[str, Any]:
    """The globals of the first caller outside mlproj's own modules (main.py, or a test file)."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__", "").startswith("mlproj."):
        frame = frame.f_back
    return frame.f_globals if frame is not None else {}


def print_config(_run: Any) -> None:
    """Print the updated configuration and exit."""
    # Sacred's own command highlights modified, added and retyped keys with colour codes; a pipe
    # or a file gets the same text without them.
    with contextlib.redirect_stdout(io.StringIO()) as text:
        commands.print_config(_run)
    output = text.getvalue()
    if not getattr(sys.stdout, "isatty", lambda: False)():
        output = re.sub(r"\x1b\[[0-9;]*m", "", output)
    sys.stdout.write(output)


def one_line_sacred_error(err: SacredError, script: str | None = None) -> str:
    """Sacred's configuration errors as one line that says what to do (`script`: how the user runs the
    main file, by default `main_command()`, which pastes without an active venv)."""
    script = script or main_command()
    if isinstance(err, ConfigAddedError):
        # Sacred's own attribute (it has no public one) naming the unknown keys; test_record_sacred_api.py checks it.
        keys = ", ".join(sorted(err.__conflicting_configs__))
        return f"unknown config key {keys}: check the spelling; `{script} print_config` lists every key."
    if isinstance(err, NamedConfigNotFoundError):
        # Sacred keeps the name only in its message; test_record_sacred_api.py fails if the message changes.
        name, _, available = str(err).partition('". Available config values are: ')
        name = name.partition('"')[2]
        return (
            f"`with {name}` is neither key=value nor a named config: write `with {name}=VALUE`, "
            f"or use one of the named configs {available.strip('()').replace(chr(39), '')}."
        )
    return " ".join(str(err).split()) + f" (see `{script} print_config` and `{script} --help`)"


def record_provenance(run: Any, source_dir: str, runs_root: str) -> None:
    """Where the run came from: the pinned working tree (`git`, None with `git_error` when pinning
    failed), the folder it was started in (`cwd`, against which relative paths in its config
    resolve) and, for `mlproj reproduce`, the run it reproduces."""
    run.info["cwd"] = os.getcwd()
    if run.config.get("git_pin", True):
        tensorboard = tensorboard_root(run.config.get("tensorboard_dir"), runs_root)
        results = [runs_root, tensorboard] + [run.config[k] for k in ("model_dir", "data_dir") if run.config.get(k)]
        results = [folder for folder in results if folder]
        run.info["git"], error = pin_or_warn(source_dir, run.info["run_key"], exclude=results)
        if error:
            run.info["git_error"] = error  # what `mlproj show` and `mlproj reproduce` tell about the missing pin
    if os.environ.get(REPRODUCES_ENV):
        run.info["reproduces"] = json.loads(os.environ[REPRODUCES_ENV])


def attach_observers(run: Any) -> None:
    """Give `run` one file observer and, with `MONGODB_URI`, one MongoDB observer (never two of a kind)."""
    file_observers = [o for o in run.observers if isinstance(o, FileStorageObserver)]
    for observer in file_observers:
        if type(observer) is FileStorageObserver:  # `-F DIR`: same folder, written atomically
            run.observers[run.observers.index(observer)] = RunFolderObserver(observer.basedir)
    if not file_observers:
        run.observers.append(RunFolderObserver(runs_dir()))
    for observer in list(run.observers):
        if type(observer) is MongoObserver:  # `-m HOST:PORT:DB`: the same database, copied in the background
            run.observers[run.observers.index(observer)] = mongo_observer(mongo_option_uri(run.meta_info))
    uri = os.environ.get("MONGODB_URI")
    mongo = next((o for o in run.observers if isinstance(o, BackgroundMongoObserver)), None)
    if uri and mongo is None and not any(isinstance(o, (MongoObserver, QueuedMongoObserver)) for o in run.observers):
        mongo = mongo_observer(uri)
        run.observers.append(mongo)
    if mongo is not None:
        first_free_id = mongo.next_free_id()  # one id in both records (Sacred #540)
        for observer in run.observers:
            if isinstance(observer, RunFolderObserver):
                observer.first_free_id = first_free_id


def mongo_option_uri(meta_info: dict[str, Any]) -> str:
    """The MongoDB URI that Sacred's `-m [HOST:PORT:]DB` option names (Sacred's defaults: localhost, `sacred`)."""
    parsed = parse_mongo_db_arg(meta_info["options"]["--mongo_db"])
    return f"mongodb://{parsed.get('url', 'localhost:27017')}/{parsed.get('db_name', 'sacred')}"


def create_experiment(name: str, **kwargs: Any) -> MLProjExperiment:
    """The Sacred experiment `main.py` defines its config, named configs and commands on.

    Its runs check their config with the main file's `Project` class (see `MLProjExperiment`).
    """
    return MLProjExperiment(name, **kwargs)


def _resume_command() -> str | None:
    """The command that continues a run of this process, to paste where it was started: this
    interpreter and script `with resume={}` (None when the script is no file: a notebook's `ex.run()`)."""
    script = sys.argv[0] if sys.argv else ""
    if not script.endswith(".py") or not os.path.isfile(script):
        return None
    return f"`{main_command()} with resume={{}}`"


def test_checkpoint(run: Any, checkpoint: str | None, project_class: type) -> dict[str, float]:
    """The `test` command: evaluate `checkpoint` on the test set and log `test.*` into `run`.

    `run.config` is the config recorded in the checkpoint with the keys given on this command line
    (e.g. `data_dir`, `device`) on top (the experiment's config hook), so the test run's record
    names the model and data it evaluated.
    """
    if not checkpoint:
        raise MLProjError(test_needs_checkpoint())
    notes = notes_of(run)
    read, notes.checkpoint = notes.checkpoint, None
    built, notes.tested = notes.tested, None
    factory, model = built[1:] if built and built[0] is project_class else (None, None)
    config, context = context_of(run)
    project = project_class({**config, "resume": None}, context=context, dataset_factory=factory, model=model)
    project.load_checkpoint(checkpoint, read[1] if read and read[0] == str(checkpoint) else None)
    return project.test()
