"""The core gate that keeps latency measurement alone on the cores, as a real Ray actor.

Its contract (runtime/_ray_actors.py, `CoreGate`): trials compute together, measure alone; a waiting
measurement holds new compute back and running compute steps aside at its next checkpoint; a silent computer
or measurer loses its hold; `forget` drops a killed worker's hold. These tests assert the order of events, never
timings: "pending" means a call had not returned after a pause in which a broken gate would have let it through.

How far apart the latencies of concurrent trials land with the gate on is a measurement, in RESULTS.md
(Runtime overhead), not a test: it depends on the machine (spreads 1.10-1.26 between six trials on 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from autocompress.runtime._ray_actors import CoreGate

pytestmark = [pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def pending(ref, pause_s: float = 0.5) -> bool:
    ready, _ = ray.wait([ref], timeout=pause_s)
    return not ready


def returns(ref) -> None:
    ray.get(ref, timeout=30)


def test_a_measurement_runs_alone_and_queued_measurements_go_before_new_compute(local_ray) -> None:
    gate = CoreGate.remote(patience_s=600, lease_s=600)
    returns(gate.enter_compute.remote("a"))
    returns(gate.enter_compute.remote("b"))  # compute is shared

    measure_c = gate.acquire_measure.remote("c")
    assert pending(measure_c)  # a and b compute
    step_a = gate.checkpoint.remote("a")  # a steps aside for the waiting measurement ...
    assert pending(measure_c)  # ... but b still computes
    returns(gate.leave_compute.remote("b"))
    returns(measure_c)
    assert pending(step_a)  # a resumes only once the measurement is over

    enter_d = gate.enter_compute.remote("d")
    measure_e = gate.acquire_measure.remote("e")
    assert pending(enter_d) and pending(measure_e)  # c measures alone
    returns(gate.release_measure.remote("c"))
    returns(measure_e)  # the queued measurement goes next, before the compute that waited
    assert pending(step_a) and pending(enter_d)
    returns(gate.release_measure.remote("e"))
    returns(step_a)
    returns(enter_d)


def test_silent_holders_lose_the_gate_and_a_forgotten_worker_frees_it(local_ray) -> None:
    gate = CoreGate.remote(patience_s=1.0, lease_s=2.0)
    returns(gate.enter_compute.remote("hung"))  # never checkpoints again
    returns(gate.acquire_measure.remote("m1"))  # let through after the 1 s patience
    measure_m2 = gate.acquire_measure.remote("m2")
    assert pending(measure_m2)  # m1's 2 s lease has not run out
    returns(measure_m2)  # m1 died silently: its lease ran out

    gate = CoreGate.remote(patience_s=600, lease_s=600)
    returns(gate.acquire_measure.remote("killed"))
    measure_next = gate.acquire_measure.remote("next")
    assert pending(measure_next)
    returns(gate.forget.remote("killed"))  # the executor killed that worker
    returns(measure_next)
