"""PipelineHealth: counts, rates, medians and the level they add up to, on an injected clock."""
from __future__ import annotations

import threading
from typing import Dict, List

import pytest

from human_detector_ros.health import (
    EngineHealth, Level, LOSS_WARN_FRACTION, LOSS_WARN_MIN_FRAMES, MAX_TEXT_CHARS, one_line,
    PipelineHealth, RATE_WINDOW_S, STAGES)


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


def test_warn_after_the_camera_stops_and_ok_when_it_resumes(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=1.0)
    health.received()
    health.published(stage_times(1.0), 5.0)
    assert health.report().level == Level.OK
    clock.advance(1.5)
    report = health.report()
    assert report.level == Level.WARN
    assert report.values['seconds since last image'] == '1.5'

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


def test_warn_after_invalid_images_in_a_row_until_a_frame_is_published(clock):
    health = PipelineHealth(clock=clock, error_after_failures=3)
    health.received()
    for index in range(2):
        health.invalid(f'bad step {index}')
        assert health.report().level == Level.OK
    health.invalid('bad encoding')
    report = health.report()
    assert report.level == Level.WARN
    assert 'last 3 images were invalid' in report.message and 'bad encoding' in report.message
    clock.advance(10.0)
    assert health.report().message.startswith('no image for 10.0 s; the last 3 images')
    health.received()
    health.published(stage_times(1.0), 5.0)
    assert health.report().level == Level.OK
    health.invalid('bad step')
    assert health.report().level == Level.OK


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


# What an engine failure says: onnxruntime's text ends in a newline, others span lines.
BACKEND_TEXT = ('onnxruntime failed on model.onnx: [ONNXRuntimeError] : 1 : FAIL : Non-zero '
                'status code returned while running Reshape node.\n  Status Message: '
                'reshape_helper.h:91\tinput_shape_size == requested_shape_size was false.\n')


def assert_one_line(text: str) -> None:
    assert text == text.strip() and len(text) <= MAX_TEXT_CHARS
    assert all(character.isprintable() for character in text), repr(text)


@pytest.mark.parametrize('text, expected', [
    (BACKEND_TEXT, ' '.join(BACKEND_TEXT.split())),
    ('  a\r\nb\x00c\x1b[31m\u2028d\t', 'a b c [31m d'),
    ('', ''),
])
def test_one_line_collapses_breaks_and_control_characters(text, expected):
    assert one_line(text) == expected
    assert_one_line(one_line(text))


def test_one_line_keeps_the_start_and_the_end_of_long_text():
    text = 'what failed: ' + 'x' * 2000 + ' why: shape mismatch'
    flat = one_line(text)
    assert len(flat) == MAX_TEXT_CHARS
    assert flat.startswith('what failed: ') and flat.endswith(' why: shape mismatch')
    assert ' ... ' in flat


def test_every_message_and_value_is_one_line_for_any_error_text(clock):
    health = PipelineHealth(clock=clock, error_after_failures=1)
    health.received()
    health.failed(BACKEND_TEXT + 'x' * 1000 + '\nend\n')
    report = health.report(extra={'engine': '/models/odd\nname.onnx\n'})
    assert report.level == Level.ERROR
    assert 'inference failed' in report.message and 'Status Message' in report.message
    assert_one_line(report.message)
    for key, value in report.values.items():
        assert_one_line(key)
        assert_one_line(value)
    assert report.values['engine'] == '/models/odd name.onnx'
    assert report.values['last error'].endswith('x end')

    health.invalid(f'unknown encoding {"y" * 5000!r}; supported: bgr8, ...')
    assert_one_line(health.report().values['last error'])


def test_wait_for_a_first_frame_counts_from_the_publisher_match_not_from_start(clock):
    health = PipelineHealth(clock=clock, no_image_warn_s=3.0)
    assert health.seconds_matched_without_frame() is None
    clock.advance(30.0)  # a slow discovery: the camera is matched long after start
    assert health.seconds_matched_without_frame() is None
    health.publishers_matched(1)
    clock.advance(0.1)
    assert health.seconds_matched_without_frame() == pytest.approx(0.1)
    health.publishers_matched(2)  # another camera joins: the wait goes on from the first
    clock.advance(4.0)
    assert health.seconds_matched_without_frame() == pytest.approx(4.1)
    assert health.report().values['image publishers'] == '2'
    health.received()
    assert health.seconds_matched_without_frame() is None

    # The cameras leave; a new one is matched and sends nothing: a new wait.
    health.publishers_matched(0)
    clock.advance(10.0)
    assert health.seconds_matched_without_frame() is None
    health.publishers_matched(1)
    clock.advance(2.0)
    assert health.seconds_matched_without_frame() == pytest.approx(2.0)


def test_lost_frames_are_counted_and_warn_when_a_large_share_is_lost(clock):
    health = PipelineHealth(clock=clock)
    health.publishers_matched(1)
    lost = 0
    for index in range(30):  # a camera without the profile: 3 of 5 frames lost
        clock.advance(0.1)
        if index % 5 in (0, 2):
            health.received()
        else:
            lost += 1
            health.lost(lost)
    health.lost(lost - 3)  # total_count never goes back; a stale one changes nothing
    report = health.report()
    assert report.values['frames lost in transport'] == '18'
    assert report.values['frames received'] == '12'
    assert report.values[f'frames lost in transport, last {RATE_WINDOW_S:g} s (%)'] == '60'
    assert report.level == Level.WARN
    assert '18 of the last 30 frames were lost in transport' in report.message
    assert health.losing_frames() == (18, 30)

    clock.advance(RATE_WINDOW_S + 0.1)
    for _ in range(20):
        clock.advance(0.1)
        health.received()
    report = health.report()
    assert report.level == Level.OK and health.losing_frames() is None
    assert report.values['frames lost in transport'] == '18'
    assert report.values[f'frames lost in transport, last {RATE_WINDOW_S:g} s (%)'] == '0'


def test_a_few_lost_frames_are_no_warning(clock):
    health = PipelineHealth(clock=clock)
    for _ in range(int(LOSS_WARN_MIN_FRAMES / LOSS_WARN_FRACTION)):
        clock.advance(0.05)
        health.received()
    health.lost(LOSS_WARN_MIN_FRAMES - 1)
    assert health.report().level == Level.OK and health.losing_frames() is None
    health.lost(LOSS_WARN_MIN_FRAMES)
    assert health.losing_frames() is None  # 3 of 18 is less than LOSS_WARN_FRACTION


def test_engine_health_reports_batch_sizes_and_engine_times(clock):
    engine = EngineHealth(window=3, clock=clock)
    report = engine.report(extra={'backend': 'onnxruntime'})
    assert (report.level, report.message) == (Level.OK, 'no frame yet')
    assert report.values['engine time per batch, median (ms)'] == 'n/a'
    for frames, engine_ms in ((1, 10.0), (4, 40.0), (2, 30.0), (3, 60.0)):
        engine.batch(frames, engine_ms)
        clock.advance(1.0)
    report = engine.report(extra={'backend': 'onnxruntime'})
    assert report.message == '4 batches'
    assert report.values == {
        'batches': '4', 'batch rate (Hz)': f'{4 / RATE_WINDOW_S:.2f}',
        'frames per batch, mean of last 3': '3.00', 'largest batch': '4',
        'engine time per batch, median (ms)': '40.00',
        'engine time per frame, median (ms)': '15.00', 'backend': 'onnxruntime'}
