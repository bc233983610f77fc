"""Track ids from human_detector_ros.tracking, on box sequences whose true identities are known."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from human_detector_ros.tracking import (
    NO_ID, REMOVED_TRACKS_KEPT, PersonTracker, TrackerConfig)

Frame = Tuple[float, Dict[str, Sequence[float]]]


def walk(start: Sequence[float], step_px: float, frame: int) -> List[float]:
    x1, y1, x2, y2 = start
    return [x1 + step_px * frame, y1, x2 + step_px * frame, y2]


def run(tracker: PersonTracker, frames: Sequence[Frame], score: float = 0.8
        ) -> List[Dict[str, int]]:
    """Feed (stamp, {person: box}) frames; return each frame's {person: id}."""
    results = []
    for stamp, people in frames:
        names = sorted(people)
        boxes = np.array([people[name] for name in names], dtype=np.float64).reshape(-1, 4)
        ids = tracker.update(boxes, np.full(len(names), score), stamp)
        assert ids.shape == (len(names),)
        results.append(dict(zip(names, ids.tolist())))
    return results


def id_switches(results: Sequence[Dict[str, int]]) -> int:
    """Times a person's id differs from the id they had when last tracked (MOT's IDSW)."""
    last: Dict[str, int] = {}
    switches = 0
    for frame in results:
        for person, track_id in frame.items():
            if track_id == NO_ID:
                continue
            switches += person in last and last[person] != track_id
            last[person] = track_id
    return switches


def two_people(frame_count: int, fps: float, hidden: Sequence[int] = (),
               dropped: Sequence[int] = ()) -> List[Frame]:
    """A walks right 4 px a frame, B walks left 3 px a frame; A is hidden in `hidden`
    frames; `dropped` frames never reach the tracker (their stamps are skipped)."""
    frames = []
    for index in range(frame_count):
        if index in dropped:
            continue
        people = {'B': walk((800, 120, 1000, 600), -3, index)}
        if index not in hidden:
            people['A'] = walk((100, 100, 300, 560), 4, index)
        frames.append((index / fps, people))
    return frames


def test_each_person_keeps_one_id_across_occlusion_and_dropped_frames():
    frames = two_people(60, 30.0, hidden=range(20, 26), dropped=(8, 9, 40, 41, 42))
    results = run(PersonTracker(), frames)
    assert id_switches(results) == 0
    ids = {person: {frame[person] for frame in results if frame.get(person, NO_ID) != NO_ID}
           for person in 'AB'}
    assert len(ids['A']) == len(ids['B']) == 1
    assert ids['A'] != ids['B']
    assert all(frame.get(person) != NO_ID for frame in results for person in frame)


def test_a_new_person_gets_a_new_id_from_their_second_frame():
    frames = two_people(20, 30.0)
    for index in range(10, 20):
        frames[index][1]['C'] = walk((500, 150, 650, 500), 0, index)
    results = run(PersonTracker(), frames)
    assert results[10]['C'] == NO_ID
    assert results[11]['C'] not in (NO_ID, results[11]['A'], results[11]['B'])
    assert id_switches(results) == 0


@pytest.mark.parametrize('fps', [10.0, 30.0, 60.0])
def test_the_lost_track_time_is_in_seconds_at_any_frame_rate(fps):
    config = TrackerConfig(lost_track_s=1.0)
    short = int(0.6 * fps)
    results = run(PersonTracker(config), two_people(int(3 * fps), fps,
                                                    hidden=range(10, 10 + short)))
    assert id_switches(results) == 0
    long = int(1.6 * fps)
    results = run(PersonTracker(config), two_people(int(4 * fps), fps,
                                                    hidden=range(10, 10 + long)))
    assert id_switches(results) == 1


def test_a_stamp_going_backwards_restarts_with_ids_never_issued_before():
    tracker = PersonTracker()
    before = run(tracker, two_people(10, 30.0))
    assert tracker.resets == 0
    after = run(tracker, two_people(10, 30.0))
    assert tracker.resets == 1
    old_ids = {track_id for frame in before for track_id in frame.values()}
    new_ids = {track_id for frame in after for track_id in frame.values()} - {NO_ID}
    assert len(new_ids) == 2 and min(new_ids) > max(old_ids)


def test_a_forward_jump_longer_than_the_lost_time_restarts():
    tracker = PersonTracker(TrackerConfig(lost_track_s=1.0))
    frames = two_people(10, 30.0)
    late = [(stamp + 100.0, people) for stamp, people in two_people(10, 30.0)]
    results = run(tracker, frames + late)
    assert tracker.resets == 1
    assert results[10]['A'] != results[9]['A']


def test_frames_without_stamps_still_track():
    results = run(PersonTracker(), [(None, people) for _, people in two_people(20, 30.0)])
    assert id_switches(results) == 0
    assert results[-1]['A'] != results[-1]['B'] and NO_ID not in results[-1].values()


def test_reconfigure_restarts_and_keeps_ids_unique():
    tracker = PersonTracker()
    before = run(tracker, two_people(5, 30.0))
    tracker.reconfigure(TrackerConfig(min_iou=0.3))
    after = run(tracker, [(stamp + 1 / 6, people) for stamp, people in two_people(5, 30.0)])
    assert tracker.config.min_iou == 0.3
    assert min(after[-1].values()) > max(before[-1].values())


def test_people_who_come_and_go_leave_bounded_state():
    tracker = PersonTracker(TrackerConfig(lost_track_s=0.1))
    for frame in range(4 * REMOVED_TRACKS_KEPT):
        x = 200.0 * (frame % 5)
        # Each person is seen in two frames, then never again.
        tracker.update(np.array([[x, 0.0, x + 100.0, 200.0]]) + frame // 5 * 3, [0.9],
                       frame / 30.0)
    assert len(tracker._tracker.removed_stracks) <= REMOVED_TRACKS_KEPT
    assert len(tracker._tracker.lost_stracks) + len(tracker._tracker.tracked_stracks) < 20


def test_two_trackers_in_one_process_keep_their_own_ids():
    first, second = PersonTracker(), PersonTracker()
    frames = two_people(10, 30.0)
    results = [run(first, frames[:5]), run(second, frames[:5]), run(first, frames[5:]),
               run(PersonTracker(), frames[:5]), run(second, frames[5:])]
    for result in results:
        assert sorted(result[-1].values()) == [1, 2]
        assert id_switches(result) == 0


def test_no_boxes_and_low_scores():
    tracker = PersonTracker()
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), 0.0).shape == (0,)
    low = tracker.update(np.array([[0, 0, 50, 100]]), np.array([0.05]), 0.1)
    assert low.tolist() == [NO_ID]


@pytest.mark.parametrize('field, value', [('track_threshold', 1.5), ('min_iou', 0.0),
                                          ('lost_track_s', 0.0)])
def test_invalid_config_is_refused(field: str, value: Optional[float]):
    with pytest.raises(ValueError, match=field):
        TrackerConfig(**{field: value})
