"""record/context.py: Sacred's run as the engine's RunContext, and where a run's runs folder lies."""

from __future__ import annotations

from pathlib import Path

import pytest
from sacred import Experiment
from sacred.observers import FileStorageObserver
from test_project import MyProject

from mlproj.record.context import runs_root


def test_context_of_plain_sacred_run_records_into_the_run(tmp_path: Path) -> None:
    ex = Experiment("plain", save_git_info=False)  # the original template's experiment: no mlproj glue
    ex.add_config({"batch_size": 5, "n_global_iterations": 3, "tensorboard_dir": None, "device": "cpu",
                   "model_dir": str(tmp_path)})
    seen = {}

    @ex.main
    def main(_run):
        project = MyProject.from_run(_run)
        seen["sink_run"] = project.context.sink.run
        project.train()

    run = ex.run()
    assert seen["sink_run"] is run
    assert run.info["stop_reason"] == "n_global_iterations"
    assert run.info["benchmark"] == {"metric": "test.accuracy", "lower_is_better": False}


def test_context_of_observed_run_checkpoints_in_its_run_folder(tmp_path: Path) -> None:
    ex = Experiment("observed", save_git_info=False)
    ex.add_config({"batch_size": 5, "n_global_iterations": 1, "tensorboard_dir": "auto", "device": "cpu"})
    ex.observers.append(FileStorageObserver(str(tmp_path)))
    seen = {}

    @ex.main
    def main(_run):
        project = MyProject.from_run(_run)
        seen["context"] = project.context

    ex.run()
    context = seen["context"]
    assert (context.run_id, context.checkpoint_dir, context.runs_dir) == ("1", str(tmp_path / "1"), str(tmp_path))
    assert Path(context.tensorboard_dir).parent == tmp_path / "tensorboard"
    assert context.continue_with() == f"config resume={tmp_path / '1'}"


@pytest.mark.parametrize(("file_storage", "observer", "expected"), [
    ("given", "observed", "given"),
    (None, "observed", "observed"),
    (None, None, "default"),
])
def test_runs_root_file_storage_then_file_observer_then_default(monkeypatch: pytest.MonkeyPatch, file_storage,
                                                                observer, expected) -> None:
    monkeypatch.setenv("MLPROJ_RUNS_DIR", "default")
    observers = [FileStorageObserver(observer)] if observer else []
    assert runs_root(observers, file_storage) == expected
