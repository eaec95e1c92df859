"""The private Sacred names mlproj's record glue relies on, each with its reason where it is used:
these tests fail when a Sacred release changes one, before a user's run does."""

from __future__ import annotations

import inspect
import logging
import re
import sys

import pytest
from sacred import Experiment
from sacred.dependencies import gather_sources_and_dependencies
from sacred.initialize import create_run
from sacred.observers import FileStorageObserver
from sacred.observers.mongo import get_pattern, parse_mongo_db_arg
from sacred.utils import ConfigAddedError, NamedConfigNotFoundError

from mlproj.record.experiment import SACRED_FAILED_LINE, _get_captured_output, one_line_sacred_error


def experiment() -> Experiment:
    ex = Experiment("api", save_git_info=False)
    ex.add_config({"lr": 0.1})
    ex.main(lambda: None)
    return ex


def test_sacred_check_command_returns_an_error_for_an_unknown_command() -> None:
    assert list(inspect.signature(Experiment._check_command).parameters) == ["self", "cmd_name"]
    assert experiment()._check_command("nope").startswith("Error: ")
    assert experiment()._check_command(experiment().default_command) is None


def test_sacred_create_run_builds_a_run_with_its_final_config() -> None:
    ex = experiment()
    run = create_run(ex, ex.default_command, config_updates={"lr": 0.5}, named_configs=())
    assert run.config["lr"] == 0.5
    assert ex._create_run(ex.default_command, config_updates={"lr": 0.3}).config["lr"] == 0.3


def test_sacred_failed_run_logs_its_failed_line_while_the_exception_is_handled() -> None:
    def fail() -> None:
        raise ValueError("boom")

    ex = Experiment("api-fail", save_git_info=False)
    ex.main(fail)
    run = ex._create_run(ex.default_command)
    logged: list[tuple[str, BaseException | None]] = []

    class Record(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            logged.append((record.msg, sys.exc_info()[1]))
            return False

    run.run_logger.addFilter(Record())
    with pytest.raises(ValueError):
        run()
    (failed,) = [(msg, err) for msg, err in logged if msg == SACRED_FAILED_LINE]  # what record.experiment's filter drops
    assert isinstance(failed[1], ValueError) and str(failed[1]) == "boom"


def test_sacred_create_run_unknown_key_names_it_in_conflicting_configs() -> None:
    ex = experiment()
    with pytest.raises(ConfigAddedError) as caught:
        create_run(ex, ex.default_command, config_updates={"lrr": 0.5})
    assert set(caught.value.__conflicting_configs__) == {"lrr"}
    assert one_line_sacred_error(caught.value).startswith("unknown config key lrr: check the spelling")


def test_sacred_named_config_not_found_message_keeps_name_and_choices() -> None:
    ex = experiment()
    with pytest.raises(NamedConfigNotFoundError) as caught:
        create_run(ex, ex.default_command, named_configs=["fast"])
    assert one_line_sacred_error(caught.value).startswith("`with fast` is neither key=value nor a named config")


def test_sacred_gather_sources_and_dependencies_reads_a_files_globals() -> None:
    main, sources, _ = gather_sources_and_dependencies(globals(), False, None)
    assert main.filename.endswith("test_record_sacred_api.py") and main in sources


def test_sacred_mongo_option_parser_and_pattern() -> None:
    assert parse_mongo_db_arg("example.org:27018:mine") == {"url": "example.org:27018", "db_name": "mine"}
    assert re.match(get_pattern(), "localhost:27017:sacred") and not re.match(get_pattern(), "mongodb://u:p@h/db")


def test_sacred_file_storage_maximum_existing_run_id_counts_run_folders(tmp_path) -> None:
    (tmp_path / "7").mkdir()
    assert FileStorageObserver(str(tmp_path))._maximum_existing_run_id() == 7


def test_sacred_enforce_clean_refusals_are_told_apart_by_their_message() -> None:
    from sacred.commandline_options import enforce_clean_option

    ex = experiment()
    run = create_run(ex, ex.default_command, config_updates={}, named_configs=())
    for repositories, start in (([], "No version control"), ([{"url": "u", "commit": "c", "dirty": True}], "EnforceClean")):
        run.experiment_info["repositories"] = repositories
        with pytest.raises(RuntimeError) as caught:
            enforce_clean_option(True, run)
        assert str(caught.value).startswith(start)


def test_sacred_captured_output_method_is_what_mlproj_copies_and_a_stopped_heartbeat_beats_once_more() -> None:
    # experiment._get_captured_output is Sacred's Run._get_captured_output, reading also the text a
    # closed capture kept (CapturedStdout.final); a failed or interrupted run reaches it through the
    # heartbeat's last beat, which Sacred's __call__ asks for after the capture closed.
    from sacred.run import Run
    from sacred.stdout_capturing import CapturedStdout
    from sacred.utils import IntervalTimer

    ours = inspect.getsource(_get_captured_output)
    sacreds = inspect.getsource(Run._get_captured_output)
    assert "if self._output_file.closed:\n            return\n" in sacreds
    body = lambda source: source[source.index("text = "):].replace("run.", "self.").split()  # noqa: E731
    assert body(sacreds) == body(ours[ours.index("    text = out.get()"):].replace("out.get()", "self._output_file.get()"))
    assert "self.final = self.get()" in inspect.getsource(CapturedStdout.finalize)

    beats: list[int] = []
    stop, timer = IntervalTimer.create(lambda: beats.append(1), interval=600)
    timer.start()
    stop.set()
    timer.join(5)
    assert beats == [1]
    call = inspect.getsource(Run.__call__)
    main = call.index("self.main_function(*args)")
    assert call.index("with capture_stdout()") < main < call.index("self._stop_heartbeat()\n            status")
