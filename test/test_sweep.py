"""mlproj.sweep.spec: reading specs, expanding them into trials, handing out devices."""

from __future__ import annotations

import math
import random

import pytest

from mlproj.errors import MLProjError
from mlproj.sweep.spec import Distribution, expand, parse_spec


def test_parse_spec_script_named_configs_fixed_and_axes_separated() -> None:
    spec = parse_spec(["exp.py", "digits_mlp", "with", "n_epochs=2", "lr=[0.1,0.01]", "model=choice(mlp,lenet)"])
    assert spec.script == "exp.py"
    assert spec.named_configs == ["digits_mlp"]
    assert spec.fixed == {"n_epochs": 2}
    assert spec.axes == {"lr": [0.1, 0.01], "model": Distribution("choice", ("mlp", "lenet"))}


def test_parse_spec_without_script_uses_main_py_and_reads_named_configs_after_with() -> None:
    spec = parse_spec(["with", "digits_mlp", "optimizer=[adam,sgd]", "layers=[[64,64],[32]]"])
    assert spec.script == "main.py"
    assert spec.named_configs == ["digits_mlp"]
    assert spec.axes == {"optimizer": ["adam", "sgd"], "layers": [[64, 64], [32]]}


@pytest.mark.parametrize(
    ("token", "match"),
    [
        ("lr=[]", "lr=\\[\\] is an empty list"),
        ("lr=gauss(0,1)", "unknown distribution: use one of choice, uniform, loguniform, randint"),
        ("lr=choice()", "choice\\(\\) is empty"),
        ("lr=uniform(1,1)", "needs two numbers low < high"),
        ("lr=uniform(a,b)", "needs two numbers low < high"),
        ("lr=loguniform(0,1)", "needs 0 < low < high"),
        ("batch_size=randint(1.5,8)", "needs two integers"),
        ("=3", "has no key"),
    ],
)
def test_parse_spec_bad_value_raises(token: str, match: str) -> None:
    with pytest.raises(MLProjError, match=match):
        parse_spec(["with", token])


def test_parse_spec_key_given_twice_raises() -> None:
    with pytest.raises(MLProjError, match="lr is given twice"):
        parse_spec(["with", "lr=0.1", "lr=[0.1,0.2]"])


def test_expand_grid_cartesian_product_last_key_fastest() -> None:
    trials = expand(parse_spec(["with", "lr=[0.1,0.01]", "batch_size=[64,128]", "n_epochs=2"]))
    assert [t.index for t in trials] == [1, 2, 3, 4]
    assert [t.params for t in trials] == [
        {"lr": 0.1, "batch_size": 64},
        {"lr": 0.1, "batch_size": 128},
        {"lr": 0.01, "batch_size": 64},
        {"lr": 0.01, "batch_size": 128},
    ]


def test_expand_without_axes_one_trial() -> None:
    assert [t.params for t in expand(parse_spec(["with", "lr=0.1"]))] == [{}]


def test_expand_seeds_repeat_each_point_with_seeds_1_to_k() -> None:
    trials = expand(parse_spec(["with", "lr=[0.1,0.01]"]), seeds=3)
    assert [(t.params["lr"], t.params["seed"]) for t in trials] == [
        (0.1, 1), (0.1, 2), (0.1, 3), (0.01, 1), (0.01, 2), (0.01, 3),
    ]


def test_expand_seeds_and_seed_in_spec_raises() -> None:
    with pytest.raises(MLProjError, match="seed is set in the spec and by --seeds"):
        expand(parse_spec(["with", "seed=[1,2]"]), seeds=2)


def test_expand_random_same_sweep_seed_same_trials() -> None:
    spec = parse_spec(["with", "lr=loguniform(1e-4,1e-1)", "batch_size=choice(32,64,128)", "width=randint(1,1000)"])
    first = [t.params for t in expand(spec, random_trials=6, sweep_seed=7)]
    again = [t.params for t in expand(spec, random_trials=6, sweep_seed=7)]
    other = [t.params for t in expand(spec, random_trials=6, sweep_seed=8)]
    assert first == again
    assert first != other
    assert len(first) == 6


def test_expand_random_more_trials_keeps_the_first_draws() -> None:
    spec = parse_spec(["with", "lr=uniform(0.001,0.1)", "width=randint(1,100000)"])
    four = [t.params for t in expand(spec, random_trials=4, sweep_seed=0)]
    six = [t.params for t in expand(spec, random_trials=6, sweep_seed=0)]
    assert six[:4] == four


def test_expand_random_draws_stay_in_their_ranges() -> None:
    spec = parse_spec(["with", "lr=loguniform(1e-4,1e-1)", "wd=uniform(0,0.5)", "k=randint(2,4)", "model=[mlp,lenet]"])
    trials = expand(spec, random_trials=200, sweep_seed=1)
    assert all(1e-4 <= t.params["lr"] <= 1e-1 for t in trials)
    assert all(0 <= t.params["wd"] <= 0.5 for t in trials)
    assert {t.params["k"] for t in trials} == {2, 3, 4}  # both ends included
    assert {t.params["model"] for t in trials} == {"mlp", "lenet"}  # a list is a choice here
    logs = [math.log10(t.params["lr"]) for t in trials]
    assert sum(logs) / len(logs) == pytest.approx(-2.5, abs=0.25)  # uniform in log space, not in lr


def test_distribution_draw_rounds_to_four_significant_digits() -> None:
    value = Distribution("uniform", (0.0, 1.0)).draw(random.Random(3))
    assert value == float(f"{value:.4g}")


def test_expand_repeated_points_run_once() -> None:
    trials = expand(parse_spec(["with", "model=choice(mlp,lenet)"]), random_trials=20, sweep_seed=0)
    assert sorted(t.params["model"] for t in trials) == ["lenet", "mlp"]
    assert [t.index for t in trials] == [1, 2]


def test_expand_distribution_without_random_raises() -> None:
    with pytest.raises(MLProjError, match="lr has a distribution: sample it with --random N"):
        expand(parse_spec(["with", "lr=uniform(0.1,1)"]))


@pytest.mark.parametrize(("random_trials", "seeds", "match"), [(0, None, "--random 0"), (None, 0, "--seeds 0")])
def test_expand_counts_below_one_raise(random_trials: int | None, seeds: int | None, match: str) -> None:
    with pytest.raises(MLProjError, match=match):
        expand(parse_spec(["with", "lr=[0.1]"]), random_trials=random_trials, seeds=seeds)
