"""mlproj.sweep.runner: handing out devices to the trials that start."""

from __future__ import annotations

from mlproj.sweep.runner import DevicePool


def test_device_pool_gpu_listed_once_runs_one_trial_at_a_time() -> None:
    pool = DevicePool(["cuda:0", "cuda:1"])
    first, second = pool.acquire(), pool.acquire()
    assert {first, second} == {"cuda:0", "cuda:1"}
    assert not pool.available()
    pool.release("cuda:1")
    assert pool.acquire() == "cuda:1"


def test_device_pool_gpu_listed_twice_is_shared_by_two() -> None:
    pool = DevicePool(["cuda:0", "cuda:0"])
    assert [pool.acquire(), pool.acquire()] == ["cuda:0", "cuda:0"]
    assert not pool.available()


def test_device_pool_cpu_takes_any_number_after_the_gpus() -> None:
    pool = DevicePool(["cuda:0", "cpu"])
    assert [pool.acquire() for _ in range(4)] == ["cuda:0", "cpu", "cpu", "cpu"]
    assert pool.available()


def test_device_pool_without_devices_assigns_none() -> None:
    pool = DevicePool(None)
    assert pool.acquire() is None and pool.available()
