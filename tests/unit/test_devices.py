"""What a job's train.device needs of a worker, and how a queued job says no live
worker can run it (service.store.queue.devices)."""

from __future__ import annotations

from counterweight.service.store.queue.devices import Fleet, cuda_devices_needed


def test_the_cuda_devices_each_train_device_needs() -> None:
    devices = ("auto", "cpu", "cuda", "cuda:0", "cuda:7")
    assert [cuda_devices_needed(d) for d in devices] == [0, 0, 1, 1, 8]
    # An absurd index waits like any other that no host has; it still fits the column.
    assert cuda_devices_needed("cuda:99999999999999999999") == 1_000_000


def test_why_a_queued_job_waits() -> None:
    nobody, cpus, one_gpu = Fleet(0, 0), Fleet(2, 0), Fleet(1, 1)
    assert nobody.why_waiting(0) == "no live worker"
    assert nobody.why_waiting(1) == "no live worker; it needs one with a CUDA device"
    assert cpus.why_waiting(0) is None
    assert cpus.why_waiting(1) == "no live worker has a CUDA device (2 live workers, cpu)"
    assert cpus.why_waiting(3) == "no live worker has cuda:2 (2 live workers, cpu)"
    assert one_gpu.why_waiting(1) is None
    assert one_gpu.why_waiting(2) == (
        "no live worker has cuda:1 (1 live worker, at most 1 CUDA device each)"
    )
    assert Fleet(3, 2).why_waiting(4) == (
        "no live worker has cuda:3 (3 live workers, at most 2 CUDA devices each)"
    )
