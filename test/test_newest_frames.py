"""human_detector_ros.newest_frames: the newest-frame store of the node's cameras, without ROS."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from human_detector_ros.newest_frames import NewestFrames

HANG_GUARD_S = 30.0


def test_take_returns_the_newest_frame_of_every_camera_that_has_one_in_camera_order():
    frames = NewestFrames(['front', 'rear', 'left'])
    assert frames.put('rear', 'r1') is False
    assert frames.put('front', 'f1') is False
    assert frames.put('rear', 'r2') is True
    assert frames.take() == [('front', 'f1'), ('rear', 'r2')]
    assert frames.take(timeout_s=0.0) == []


def test_a_superseded_frame_is_never_taken():
    frames = NewestFrames(['front'])
    for index in range(5):
        assert frames.put('front', index) is (index > 0)
    assert frames.take() == [('front', 4)]


def test_take_does_not_wait_for_a_camera_with_nothing_new():
    frames = NewestFrames(['front', 'silent'])
    taken = []
    worker = threading.Thread(target=lambda: taken.extend(frames.take()))
    worker.start()
    frames.put('front', 'f1')
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive()
    assert taken == [('front', 'f1')]


def test_close_wakes_a_waiting_worker_and_ends_taking():
    frames = NewestFrames(['front', 'rear'])
    taken = []
    worker = threading.Thread(target=lambda: taken.append(frames.take()))
    worker.start()
    frames.close()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive()
    assert taken == [[]]
    frames.put('front', 'f1')
    assert frames.take() == []


def test_under_overload_a_limited_batch_serves_every_camera_in_turn():
    cameras = ['a', 'b', 'c', 'd']
    frames = NewestFrames(cameras)
    served: Counter = Counter()
    for round_ in range(12):
        for camera in cameras:
            frames.put(camera, round_)
        batch = frames.take(max_frames=3)
        assert len(batch) == 3
        served.update(camera for camera, _ in batch)
    assert served == {camera: 9 for camera in cameras}


def test_a_busy_camera_does_not_starve_a_slow_one():
    frames = NewestFrames(['busy', 'slow'])
    frames.put('slow', 's1')
    for index in range(3):
        frames.put('busy', index)
        batch = frames.take(max_frames=1)
        if batch == [('slow', 's1')]:
            break
    else:
        pytest.fail('the slow camera was never served')


@pytest.mark.parametrize('cameras', [[], ['a', 'a']])
def test_camera_names_must_be_unique_and_present(cameras):
    with pytest.raises(ValueError, match='unique names'):
        NewestFrames(cameras)


def test_unknown_camera_and_empty_batch_limit_are_errors():
    frames = NewestFrames(['front'])
    with pytest.raises(KeyError):
        frames.put('rear', 'r1')
    with pytest.raises(ValueError, match='at least 1'):
        frames.take(max_frames=0)
