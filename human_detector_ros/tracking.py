"""Persistent ids for detected people: ByteTrack association through `cjm-byte-track`.

ROS-free. `PersonTracker.update` takes one frame's boxes and scores with the frame's time and
returns one id per box. The association (Kalman motion model, two-stage IoU matching of high-
and low-score boxes, lost-track buffer) is the library's port of the reference ByteTrack; this
module only adapts its input and output, keeps ids unique across resets, measures the lost-track
time in seconds from the frames' stamps and resets on time jumps.

Tracking is class-agnostic: the library never sees the class, so an id stays with its person
when the model's class flips (the default model's "Normal"/"Fall" are states of one person).
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional

import numpy as np

try:
    from cjm_byte_track.basetrack import BaseTrack
    from cjm_byte_track.core import BYTETracker
    from cjm_byte_track.matching import box_iou_batch, linear_assignment
except ImportError as error:
    raise ImportError(f'{error}: tracking needs the cjm-byte-track package; install it with '
                      '"pip install cjm-byte-track==0.0.6"') from error

NO_ID = 0
"""The id of a box whose track is not confirmed yet (seen in one frame only)."""

DEFAULT_FRAME_INTERVAL_S = 1.0 / 30.0
FRAME_INTERVAL_WINDOW = 15

# The library keeps every removed track forever and walks them all each frame, so a long run
# slows down and grows; it needs only the last frame's. Keep a bounded tail.
REMOVED_TRACKS_KEPT = 100

# A track's box after the Kalman update lies on its measurement (IoU well above 0.9 for
# people); 0.5 only guards against pairing a track with a neighbour's box.
_OUTPUT_MATCH_MIN_IOU = 0.5


@dataclass(frozen=True)
class TrackerConfig:
    """ByteTrack's knobs, in the units a robot's integrator thinks in.

    track_threshold: boxes scoring above it take part in the first association (ByteTrack's
        `track_thresh`); boxes between 0.1 and it only continue existing tracks; a new track
        needs `track_threshold + 0.1`. 0.4 lets every box above the node's default
        conf_threshold (0.5) start a track.
    min_iou: smallest IoU between a track's predicted box and a box for them to be associated
        in the first stage (ByteTrack's `match_thresh` is 1 - min_iou).
    lost_track_s: seconds a track that is not seen any more (occlusion, dropped frames) keeps
        its id; a longer gap between two frames resets the tracker.
    """

    track_threshold: float = 0.4
    min_iou: float = 0.2
    lost_track_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.track_threshold <= 1.0:
            raise ValueError(f'track_threshold must be in [0, 1], got {self.track_threshold}')
        if not 0.0 < self.min_iou <= 1.0:
            raise ValueError(f'min_iou must be in (0, 1], got {self.min_iou}')
        if not self.lost_track_s > 0.0:
            raise ValueError(f'lost_track_s must be > 0, got {self.lost_track_s}')


class PersonTracker:
    """ByteTrack over one camera's frames. Several may live in one process (one per camera),
    but only one thread may call them at a time: the library counts ids in a class attribute,
    which each tracker swaps in and out around its update."""

    def __init__(self, config: Optional[TrackerConfig] = None) -> None:
        self.config = config or TrackerConfig()
        self.resets = 0
        """How often a time jump reset the tracker."""
        self._id_offset = 0
        self._max_id = 0
        self._last_stamp_s: Optional[float] = None
        self._intervals: Deque[float] = deque(maxlen=FRAME_INTERVAL_WINDOW)
        self._tracker = self._new_tracker()

    def _new_tracker(self) -> BYTETracker:
        # frame_rate only sizes the lost-track buffer, which update() sets from the stamps.
        saved = BaseTrack._count
        tracker = BYTETracker(track_thresh=self.config.track_threshold,
                              match_thresh=1.0 - self.config.min_iou)
        BaseTrack._count = saved
        self._count = 0
        return tracker

    def reconfigure(self, config: TrackerConfig) -> None:
        """Use `config` from the next frame on; the tracker restarts (ids stay unique)."""
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget every track. Ids issued later are larger than every id issued so far."""
        self._id_offset = self._max_id
        self._last_stamp_s = None
        self._intervals.clear()
        self._tracker = self._new_tracker()

    def update(self, boxes: np.ndarray, scores: np.ndarray,
               stamp_s: Optional[float] = None) -> np.ndarray:
        """Associate one frame's boxes with the tracks; return their ids.

        boxes: (N, 4) x1, y1, x2, y2 in pixels. scores: (N,) confidences. stamp_s: the frame's
        time in seconds (the message stamp), or None when the frame has none; a stamp earlier
        than the previous frame's, or later by more than `lost_track_s`, resets the tracker
        first (bag loop, simulation restart, camera stall).
        Returns (N,) int64 ids >= 1, or NO_ID for boxes whose track is not confirmed yet (a new
        person gets an id from the second frame in which they are seen; on the very first frame
        of the tracker, at once).
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        self._advance_time(stamp_s)
        frames_lost = math.ceil(self.config.lost_track_s / self._frame_interval_s() - 1e-9)
        self._tracker.max_time_lost = max(1, frames_lost)
        saved, BaseTrack._count = BaseTrack._count, self._count
        try:
            tracks = self._tracker.update(np.column_stack([boxes, scores]), (1, 1), (1, 1))
        finally:
            self._count, BaseTrack._count = BaseTrack._count, saved
        del self._tracker.removed_stracks[:-REMOVED_TRACKS_KEPT]
        ids = np.full(len(boxes), NO_ID, dtype=np.int64)
        if not tracks or not len(boxes):
            return ids
        iou = box_iou_batch(np.array([track.tlbr for track in tracks]), boxes)
        matches, _, _ = linear_assignment(1.0 - iou, thresh=1.0 - _OUTPUT_MATCH_MIN_IOU)
        for track_index, box_index in matches:
            ids[box_index] = self._id_offset + tracks[track_index].track_id
        self._max_id = max(self._max_id, int(ids.max()))
        return ids

    def _advance_time(self, stamp_s: Optional[float]) -> None:
        if stamp_s is None:
            return
        last = self._last_stamp_s
        if last is not None:
            step = stamp_s - last
            if step < 0.0 or step > self.config.lost_track_s:
                self.resets += 1
                self.reset()
            elif step > 0.0:
                self._intervals.append(step)
        self._last_stamp_s = stamp_s

    def _frame_interval_s(self) -> float:
        """Median interval between recent frames: the lost-track time in frames follows the
        rate frames actually arrive at (the library counts frames, not seconds)."""
        if not self._intervals:
            return DEFAULT_FRAME_INTERVAL_S
        return statistics.median(self._intervals)
