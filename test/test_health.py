"""PipelineHealth: counts, rates, medians and the level they add up to, on an injected clock."""
from __future__ import annotations

import threading
from typing import Dict, List

import pytest

from human_detector_ros.health import Level, PipelineHealth, RATE_WINDOW_S, STAGES


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def stage_times(value: float) -> Dict[str, float]:
    """Stage times where stage number i took value + i ms."""
    return {stage: value + index for index, stage in enumerate(STAGES)}


def test_every_outcome_is_counted(clock):
    health = PipelineHealth(clock=clock)
    for _ in range(7):
        health.received()
    health.published(stage_times(1.0), 5.0)
    health.published(stage_times(1.0), 5.0)
    health.invalid('bad step')
    health.failed('engine exploded')
    for _ in range(3):
        health.superseded()
    values = health.report().values
    assert values['frames received'] == '7'
    assert values['frames published'] == '2'
    assert values['frames dropped (invalid image)'] == '1'
    assert values['frames dropped (inference failed)'] == '1'
    assert values['frames superseded by newer ones'] == '3'
    assert (health.counts.received, health.counts.published, health.counts.invalid,
            health.counts.failed, health.counts.superseded) == (7, 2, 1, 1, 3)


def test_rates_count_the_last_window_only(clock):
    health = PipelineHealth(clock=clock)
    for index in range(50):
        clock.advance(0.1)
        health.received()
        if index % 2 == 0:
            health.published(stage_times(1.0), 5.0)
    values = health.report().values
    assert float(values['input rate (Hz)']) == pytest.approx(10.0)
    assert float(values['output rate (Hz)']) == pytest.approx(5.0)

    clock.advance(RATE_WINDOW_S / 2)
    values = health.report().values
    assert float(values['input rate (Hz)']) == pytest.approx(5.0, abs=0.21)
    assert float(values['output rate (Hz)']) == pytest.approx(2.5, abs=0.21)

    clock.advance(RATE_WINDOW_S)
    values = health.report().values
    assert values['input rate (Hz)'] == '0.00'
    assert values['output rate (Hz)'] == '0.00'


def test_stage_times_and_age_are_medians_of_the_recent_frames(clock):
    health = PipelineHealth(clock=clock, window=5)
    values = health.report().values
    assert all(values[f'{stage} median (ms)'] == 'n/a' for stage in STAGES)
    assert values['frame age at publish, median (ms)'] == 'n/a'

    for value in (100.0, 200.0, 1.0, 3.0, 2.0, 50.0, 4.0):
        health.received()
        health.published(stage_times(value), value * 10)
    # The window keeps the last five: 1, 3, 2, 50, 4 -> median 3.
    values = health.report().values
    for index, stage in enumerate(STAGES):
        assert float(values[f'{stage} median (ms)']) == pytest.approx(3.0 + index)
    assert float(values['frame age at publish, median (ms)']) == pytest.approx(30.0)


def test_warn_when_no_image_ever_arrived(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=3.0)
    clock.advance(2.9)
    assert health.report().level == Level.OK
    clock.advance(0.2)
    report = health.report()
    assert report.level == Level.WARN
    assert 'no image' in report.message and '3.1' in report.message
    assert report.values['seconds since last image'] == '3.1'
    assert health.seconds_without_image() == pytest.approx(3.1)


def test_warn_after_the_camera_stops_and_ok_when_it_resumes(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=1.0)
    health.received()
    health.published(stage_times(1.0), 5.0)
    assert health.report().level == Level.OK
    clock.advance(1.5)
    assert health.report().level == Level.WARN
    assert health.seconds_without_image() == pytest.approx(1.5)

    health.received()
    report = health.report()
    assert report.level == Level.OK
    assert report.values['seconds since last image'] == '0.0'


def test_a_changed_warn_threshold_applies_to_the_next_report(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=10.0)
    clock.advance(5.0)
    assert health.report().level == Level.OK
    health.no_image_warn_s = 4.0
    assert health.report().level == Level.WARN


def test_error_after_failures_in_a_row_and_ok_after_a_published_frame(clock):
    health = PipelineHealth(clock=clock, error_after_failures=3)
    health.received()
    for index in range(2):
        health.failed(f'failure {index}')
        assert health.report().level == Level.OK
    health.failed('engine lost')
    report = health.report()
    assert report.level == Level.ERROR
    assert '3' in report.message and 'engine lost' in report.message
    assert report.values['last error'] == 'engine lost'

    health.invalid('odd width')  # a bad frame says nothing about the engine
    assert health.report().level == Level.ERROR

    health.published(stage_times(1.0), 5.0)
    report = health.report()
    assert report.level == Level.OK
    assert report.values['frames dropped (inference failed)'] == '3'
    assert report.values['last error'] == 'odd width'


def test_failures_interrupted_by_a_published_frame_do_not_add_up(clock):
    health = PipelineHealth(clock=clock, error_after_failures=2)
    health.received()
    for _ in range(5):
        health.failed('flaky')
        health.published(stage_times(1.0), 5.0)
    assert health.report().level == Level.OK


def test_error_outranks_the_no_image_warning(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=1.0, error_after_failures=1)
    health.received()
    health.failed('engine lost')
    clock.advance(5.0)
    assert health.report().level == Level.ERROR


def test_last_error_is_the_newest_and_absent_before_any(clock):
    health = PipelineHealth(clock=clock)
    assert 'last error' not in health.report().values
    health.invalid('first')
    health.failed('second')
    assert health.report().values['last error'] == 'second'
    health.invalid('third')
    assert health.report().values['last error'] == 'third'


def test_counts_from_several_threads_add_up(clock):
    health = PipelineHealth(clock=clock)
    per_thread = 2000

    def feed() -> None:
        for _ in range(per_thread):
            health.received()
            health.superseded()
            health.published(stage_times(1.0), 1.0)

    threads: List[threading.Thread] = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = health.report().values
    assert values['frames received'] == str(4 * per_thread)
    assert values['frames superseded by newer ones'] == str(4 * per_thread)
    assert values['frames published'] == str(4 * per_thread)
