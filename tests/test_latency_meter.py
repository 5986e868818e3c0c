"""Timing whole models: passes for a minimum time, and a model measured beside a reference model."""

import time

import pytest
import torch
from torch import nn

import autocomp
from autocomp.cost import LatencyMeter, LatencyTarget
from autocomp.cost.latency import median_pass_ms


class Sleeper:
    """A pass that sleeps ``seconds`` and counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)


def test_passes_run_at_least_the_counts_and_the_time_asked():
    few = Sleeper(0.001)
    median_pass_ms(few, warmup=2, repeats=3)
    assert few.calls == 5  # no time floor: the counts alone
    timed = Sleeper(0.001)
    started = time.perf_counter()
    milliseconds = median_pass_ms(timed, warmup=2, repeats=3, min_seconds=0.05)
    # a fifth of the floor warming up, then the floor timing: far more than 5 passes of 1 ms
    assert time.perf_counter() - started >= 0.06 and timed.calls >= 30
    assert 1.0 <= milliseconds < 5.0


def chain(blocks: int) -> nn.Module:
    """``blocks`` identical 256x256 linear layers: the work is proportional to ``blocks``."""
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(256, 256) for _ in range(blocks)])


def test_a_model_twice_the_reference_measures_twice_its_latency():
    example = torch.randn(1, 256)
    target = LatencyTarget(threads=1, batch_size=64)
    meter = LatencyMeter(chain(8), example, target, reference_ms=10.0)
    assert meter.reference_ms == 10.0  # given: the figure a relative limit was computed from
    # the ratio to the reference, timed in alternating rounds, times the given reference latency
    assert 14.0 < meter.ms(chain(16)) < 28.0
    assert 3.0 < meter.ms(chain(4)) < 7.0


def test_measure_with_a_meter_restores_threads_and_modes():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5))
    example = torch.randn(1, 3, 16, 16)
    threads = torch.get_num_threads()
    meter = LatencyMeter(model, example, LatencyTarget(threads=1, batch_size=2))
    assert meter.reference_ms > 0
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    cost = autocomp.measure(small, example, meter)
    assert cost.latency_ms is not None and cost.latency_ms > 0
    assert torch.get_num_threads() == threads and small.training and model.training


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_the_meter_times_in_the_target_runtime(runtime):
    pytest.importorskip("onnxruntime")
    example = torch.randn(1, 256)
    meter = LatencyMeter(chain(4), example, LatencyTarget(threads=1, batch_size=16, runtime=runtime))
    assert 1.2 < meter.ms(chain(8)) / meter.reference_ms < 3.2
