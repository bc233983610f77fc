"""One frame, or one batch of frames from several cameras, through every stage (ROS-free).

`FramePipeline` owns the stages after image conversion: detect (preprocess, infer,
postprocess), track, locate in 3D, annotate. Each camera, named by a string ('' for a single
camera), has its own tracker; depth comes with each frame. Callers (the ROS node, the CLI)
only build `CameraFrame`s and read `FrameResult`s.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from human_detector_ros.annotate import draw_detections, track_labels
from human_detector_ros.depth import DepthFrame, PersonPosition, locate_people
from human_detector_ros.detector import HumanDetector, StageTimings
from human_detector_ros.errors import HumanDetectorError
from human_detector_ros.postprocess import Detections, NmsConfig
from human_detector_ros.tracking import (
    LIBRARY_MISSING, NO_ID, PersonTracker, TrackerConfig, TrackingUnavailableError)

STAGES: Tuple[str, ...] = ('preprocess', 'infer', 'postprocess', 'track', 'locate', 'annotate')
"""The stages `FrameResult.timings_ms` holds, in order."""

DepthSource = Union[DepthFrame, Callable[[], Optional[DepthFrame]]]
"""A frame's depth, or a callable that returns it (or None when there is none). A callable is
called after detection, so a depth frame that arrives while its colour frame is detected is
still used (the ROS node waits there for the matching depth message)."""

_Outcome = Union[Tuple[Detections, StageTimings], HumanDetectorError]


@dataclass(frozen=True)
class CameraFrame:
    """One colour frame in.

    camera: the camera's name ('' for a single camera); each name has its own tracker.
    bgr: HxWx3 uint8 BGR image. stamp_s: the frame's time in seconds (the message stamp) for
    the tracker, None when unknown. depth: the aligned depth of this frame, if any.
    annotate: False to skip drawing this frame even when annotation is on (nobody looks).
    """

    camera: str
    bgr: np.ndarray
    stamp_s: Optional[float] = None
    depth: Optional[DepthSource] = None
    annotate: bool = True


@dataclass
class FrameResult:
    """One frame out.

    detections: in the frame's pixels (empty on error). track_ids: (N,) int64 ids, NO_ID for
    a box whose track is not confirmed yet; None with tracking off. positions: one
    PersonPosition (metres, optical frame) or None per detection; None when the frame had no
    usable depth. depth_problem: why a frame's depth was not usable (size mismatch), else
    None. annotated: HxWx3 uint8 BGR with the detections drawn, None when not drawn.
    timings_ms: milliseconds of each of STAGES. error: the domain error that dropped this
    frame (`process_batch` only; `process` raises it), else None.
    """

    camera: str
    detections: Detections
    track_ids: Optional[np.ndarray] = None
    positions: Optional[List[Optional[PersonPosition]]] = None
    depth_problem: Optional[str] = None
    annotated: Optional[np.ndarray] = None
    timings_ms: Dict[str, float] = field(default_factory=dict)
    error: Optional[HumanDetectorError] = None


class FramePipeline:
    """detect -> track -> 3D -> annotate over the frames of one or several cameras.

    detector: the HumanDetector to use (the caller closes it). tracking: give track ids.
    tracker_config: the trackers' settings. annotate: draw annotated images. names: class
    names for the labels (default: the model's).
    `process` and `process_batch` may be called from one thread at a time (they serialise);
    `reconfigure` from any thread, taking effect from the next frame.
    Raises TrackingUnavailableError when `tracking` is on and the tracking library is missing.
    """

    def __init__(self, detector: HumanDetector, tracking: bool = False,
                 tracker_config: Optional[TrackerConfig] = None, annotate: bool = True,
                 names: Optional[Mapping[int, str]] = None) -> None:
        if tracking and LIBRARY_MISSING:
            raise TrackingUnavailableError(LIBRARY_MISSING)
        self.detector = detector
        self._tracking = tracking
        self._tracker_config = tracker_config or TrackerConfig()
        self._annotate = annotate
        self._names: Dict[int, str] = dict(names if names is not None else detector.names)
        self._trackers: Dict[str, PersonTracker] = {}
        self._run_lock = threading.Lock()
        self.detect_ms = 0.0
        """Detector time (preprocess + infer + postprocess) of the last `process_batch`, its
        detector calls summed: each frame's `timings_ms` holds its batch's, not a share."""
        self._settings_lock = threading.Lock()
        self._pending: Dict[str, object] = {}

    @property
    def tracking_available(self) -> bool:
        """Whether the tracking library imports (tracking can be switched on)."""
        return LIBRARY_MISSING is None

    def reconfigure(self, nms: Optional[NmsConfig] = None, tracking: Optional[bool] = None,
                    tracker_config: Optional[TrackerConfig] = None,
                    annotate: Optional[bool] = None,
                    names: Optional[Mapping[int, str]] = None) -> None:
        """Change settings from the next frame on; None leaves a setting as it is. A new
        `tracker_config` restarts every camera's tracker (ids stay unique per camera).
        Thread-safe. Raises TrackingUnavailableError when switching tracking on without the
        tracking library."""
        if tracking and LIBRARY_MISSING:
            raise TrackingUnavailableError(LIBRARY_MISSING)
        with self._settings_lock:
            for name, value in (('nms', nms), ('tracking', tracking),
                                ('tracker_config', tracker_config), ('annotate', annotate),
                                ('names', None if names is None else dict(names))):
                if value is not None:
                    self._pending[name] = value

    def tracker_resets(self, camera: str = '') -> Optional[int]:
        """How often a time jump restarted `camera`'s tracker; None without the tracking
        library."""
        if LIBRARY_MISSING:
            return None
        tracker = self._trackers.get(camera)
        return tracker.resets if tracker is not None else 0

    def process(self, frame: CameraFrame,
                on_tracked: Optional[Callable[[FrameResult], None]] = None) -> FrameResult:
        """One frame through every stage. Raises InvalidImageError for a bad image and
        InferenceError (both HumanDetectorError) when detection fails. See `process_batch`
        for `on_tracked`."""
        result = self.process_batch([frame], on_tracked)[0]
        if result.error is not None:
            raise result.error
        return result

    def process_batch(self, frames: Sequence[CameraFrame],
                      on_tracked: Optional[Callable[[FrameResult], None]] = None
                      ) -> List[FrameResult]:
        """Frames (of different cameras, or of one camera in time order) through every
        stage; one result per frame, in order. A frame that fails gets its `error` set and
        empty detections; the other frames' results are unaffected.

        on_tracked: called with each frame's result as soon as its detections and track ids
        are known, before the depth wait and drawing (e.g. to publish the 2D detections
        first); its time is not part of the stage timings."""
        with self._run_lock:
            self._apply_settings()
            self.detect_ms = 0.0
            results = [FrameResult(frame.camera, Detections.empty()) for frame in frames]
            valid = []
            for index, frame in enumerate(frames):
                try:
                    self.detector.checked_transform(frame.bgr)
                    valid.append(index)
                except HumanDetectorError as error:
                    results[index].error = error
            detected = []
            for index, found in zip(valid, self._detect_each([frames[i].bgr for i in valid])):
                if isinstance(found, HumanDetectorError):
                    results[index].error = found
                    continue
                self._track(frames[index], results[index], *found, on_tracked)
                detected.append(index)
            # Only now may a camera wait for its depth frame: every camera's 2D detections
            # are out by then.
            for index in detected:
                self._locate_and_annotate(frames[index], results[index])
            return results

    def _apply_settings(self) -> None:
        with self._settings_lock:
            pending, self._pending = self._pending, {}
        if 'nms' in pending:
            self.detector.config = pending['nms']
        if 'annotate' in pending:
            self._annotate = bool(pending['annotate'])
        if 'names' in pending:
            self._names = pending['names']
        if 'tracking' in pending:
            self._tracking = bool(pending['tracking'])
        if 'tracker_config' in pending:
            self._tracker_config = pending['tracker_config']
            for tracker in self._trackers.values():
                tracker.reconfigure(self._tracker_config)

    def _detect_each(self, images: List[np.ndarray]) -> List[_Outcome]:
        """`_detect` over all images; when that fails, frame by frame, so that the error
        stays with the frame that caused it."""
        try:
            return list(self._detect(images))
        except HumanDetectorError as error:
            if len(images) == 1:
                return [error]
        outcomes: List[_Outcome] = []
        for image in images:
            try:
                outcomes.extend(self._detect([image]))
            except HumanDetectorError as error:
                outcomes.append(error)
        return outcomes

    def _detect(self, images: Sequence[np.ndarray]) -> List[Tuple[Detections, StageTimings]]:
        """Detections of each image from one `detect_batch`, each with the batch's stage
        times (what its detection waited for); raises HumanDetectorError."""
        found = self.detector.detect_batch(images)
        timings = self.detector.last_timings
        self.detect_ms += timings.total_ms
        return [(detections, timings) for detections in found]

    def _track(self, frame: CameraFrame, result: FrameResult, detections: Detections,
               timings: StageTimings,
               on_tracked: Optional[Callable[[FrameResult], None]]) -> None:
        """Track one detected frame into `result`, then hand it to `on_tracked`."""
        start = time.perf_counter()
        result.detections = detections
        if self._tracking:
            result.track_ids = self._tracker(frame.camera).update(
                detections.boxes, detections.scores, frame.stamp_s)
        result.timings_ms = {
            'preprocess': timings.preprocess_ms, 'infer': timings.infer_ms,
            'postprocess': timings.postprocess_ms, 'track': (time.perf_counter() - start) * 1e3}
        if on_tracked is not None:
            on_tracked(result)

    def _locate_and_annotate(self, frame: CameraFrame, result: FrameResult) -> None:
        """3D positions (after the depth frame's wait, when `frame.depth` is a callable) and
        the annotated image of one tracked frame into `result`."""
        start = time.perf_counter()
        detections = result.detections
        depth = frame.depth() if callable(frame.depth) else frame.depth
        if depth is not None:
            result.depth_problem = depth.problem_with(frame.bgr.shape)
            if result.depth_problem is None:
                result.positions = locate_people(depth.image, detections.boxes,
                                                 depth.intrinsics)
        located = time.perf_counter()
        if self._annotate and frame.annotate:
            labels = [''] * len(detections) if result.track_ids is None else [
                str(track_id) if track_id != NO_ID else '' for track_id in result.track_ids]
            distances = [position and position.z
                         for position in result.positions or [None] * len(detections)]
            result.annotated = draw_detections(frame.bgr, detections, self._names,
                                               track_labels(labels, distances))
        annotated = time.perf_counter()
        result.timings_ms.update(locate=(located - start) * 1e3,
                                 annotate=(annotated - located) * 1e3)

    def _tracker(self, camera: str) -> PersonTracker:
        tracker = self._trackers.get(camera)
        if tracker is None:
            tracker = self._trackers[camera] = PersonTracker(self._tracker_config)
        return tracker
