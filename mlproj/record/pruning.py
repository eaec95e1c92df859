"""Pruning for `mlproj tune --prune`: a trial's run reports its benchmark value to the Optuna study
after each evaluation and stops when the study's median pruner says the trial is hopeless.

The record glue (`mlproj.record.experiment`) gives a run this callback when `mlproj tune` started
it with a storage to report to; the run opens the study itself (an RDB storage is shared between
processes) and records `info.tune.pruned = True` when it stops, which the tuner tells Optuna as
PRUNED. The run itself ends COMPLETED, with the pruner's reason as its `stop_reason`.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from mlproj.errors import MLProjError
from mlproj.train.callbacks import Callback
from mlproj.train.metrics import benchmark_item


class OptunaPruning(Callback):
    """Report the benchmark value of each evaluation to the study's trial of `run.info["tune"]`;
    stop the run when the median pruner (after `n_startup_trials` completed trials) prunes it.
    `storage` is the study's RDB URL (never recorded)."""

    def __init__(self, run: Any, storage: str, n_startup_trials: int = 5):
        self.run, self.storage, self.n_startup_trials = run, storage, n_startup_trials
        self.study_name, self.number = run.info["tune"]["study"], run.info["tune"]["trial"]
        self.trial: Any = None
        self.reported: set[int] = set()  # steps already reported (a final evaluation may repeat one)

    def on_train_begin(self, project: Any) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=optuna.pruners.MedianPruner(self.n_startup_trials))
        # The storage's id of the tuner's trial, through the storage's public calls (as the tuner's heartbeat).
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(self.study_name), self.number)
        self.trial = optuna.trial.Trial(study, trial_id)  # the public class, attached to the tuner's trial
        minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
        if bool(project.model.benchmark_lower_is_better) != minimize:
            better = "lower" if project.model.benchmark_lower_is_better else "higher"
            raise MLProjError(
                f"study {self.study_name} is set to {study.direction.name.lower()}, but a {better} "
                f"{project.model.benchmark_metric} is better for this model: pass "
                f"--direction {'minimize' if not minimize else 'maximize'} with a new --name"
            )

    def on_evaluate_end(self, project: Any, split: str, metrics: dict[str, float]) -> None:
        item, step = benchmark_item(project.model, metrics), project.global_step
        judged_on_test = split == "test" and not project.dataset_factory.has_validation_set()
        if (split != "validation" and not judged_on_test) or item is None or step in self.reported:
            return  # only the split training is judged on, once per step
        self.reported.add(step)
        self.trial.report(item[1], step)
        if self.trial.should_prune():
            self.run.info["tune"]["pruned"] = True
            project.request_stop(f"pruned by optuna at step {step}: {item[0]}={item[1]:.4g} is worse than "
                                 "the median of earlier trials at this step")
