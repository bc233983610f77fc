"""Counts, rates and stage times of the node's frames, and the health level they add up to.

ROS-free: the node feeds events in from its threads and publishes `report()` as diagnostics.
Every frame the node takes ends in exactly one of: published, invalid, failed, superseded.
Frames the transport lost never reach the node; the subscription's message-lost event counts
them (Fast DDS reports a best-effort sample as lost when a later one from the same writer
arrives, so a loss shows with the next frame that gets through).
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Deque, Dict, List, Mapping, Optional, Tuple

STAGES: Tuple[str, ...] = ('convert', 'preprocess', 'infer', 'postprocess', 'track', 'locate',
                           'annotate', 'publish')
"""The node's stages: message to image, the FramePipeline's stages, publishing the results."""
RATE_WINDOW_S = 5.0
MAX_TEXT_CHARS = 400
"""Longest diagnostics message or value; longer text keeps its start and its end."""
LOSS_WARN_FRACTION = 0.2
"""WARN when at least this share of the frames of the last RATE_WINDOW_S was lost..."""
LOSS_WARN_MIN_FRAMES = 3
"""...and at least this many were lost, so that one lost frame of a slow camera is no alarm."""


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class HealthReport:
    """What the node's health is right now: a level, one line why, and the figures."""

    level: Level
    message: str
    values: Dict[str, str]


@dataclass
class FrameCounts:
    """Frames taken from the subscription, and how each ended."""

    received: int = 0
    published: int = 0
    invalid: int = 0
    failed: int = 0
    superseded: int = 0
    lost: int = 0
    """Lost in transport before the node got them: not part of `received`."""


@dataclass
class PipelineHealth:
    """Thread-safe record of the pipeline's frames.

    `no_image_warn_s`: WARN when no frame arrived for that long (or since start).
    `error_after_failures`: ERROR after that many inference failures in a row; the next
    published frame clears it. WARN after as many invalid images in a row (a camera sending
    only frames that cannot be converted); the next published frame clears it too.
    """

    no_image_warn_s: float = 3.0
    error_after_failures: int = 5
    window: int = 100
    loss_events: bool = True
    """Whether the transport's message-lost events reach `lost`; 'n/a' is shown otherwise."""
    clock: Callable[[], float] = time.monotonic
    counts: FrameCounts = field(default_factory=FrameCounts)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._last_received: Optional[float] = None
        self._received_at: Deque[float] = deque()
        self._published_at: Deque[float] = deque()
        self._stage_ms: Dict[str, Deque[float]] = {
            stage: deque(maxlen=self.window) for stage in STAGES}
        self._age_ms: Deque[float] = deque(maxlen=self.window)
        self._failures_in_a_row = 0
        self._invalid_in_a_row = 0
        self._last_error = ''
        self._lost_at: Deque[Tuple[float, int]] = deque()
        self._publishers = 0
        self._matched_at: Optional[float] = None
        self._received_since_match = False

    def received(self) -> None:
        """A frame came in from the subscription."""
        with self._lock:
            now = self.clock()
            self.counts.received += 1
            self._last_received = now
            self._received_since_match = True
            _append_recent(self._received_at, now)

    def lost(self, total: int) -> None:
        """The transport reports `total` frames lost so far (the cumulative count of the
        subscription's message-lost event)."""
        with self._lock:
            change = total - self.counts.lost
            if change > 0:
                self.counts.lost = total
                now = self.clock()
                self._lost_at.append((now, change))
                _forget_old_pairs(self._lost_at, now)

    def publishers_matched(self, count: int) -> None:
        """The subscription is now matched with `count` publishers. The wait for a first
        frame starts when the count leaves zero, not at node start: discovery may be slow."""
        with self._lock:
            if count and not self._publishers:
                self._matched_at = self.clock()
                self._received_since_match = False
            self._publishers = count

    def superseded(self) -> None:
        """A frame was replaced by a newer one before the pipeline took it."""
        with self._lock:
            self.counts.superseded += 1

    def invalid(self, reason: str) -> None:
        """A frame could not be converted (bad encoding, size, step, data)."""
        with self._lock:
            self.counts.invalid += 1
            self._invalid_in_a_row += 1
            self._last_error = reason

    def failed(self, reason: str) -> None:
        """Inference or postprocessing failed on a frame."""
        with self._lock:
            self.counts.failed += 1
            self._failures_in_a_row += 1
            self._last_error = reason

    def published(self, stage_ms: Dict[str, float], age_ms: Optional[float]) -> None:
        """A frame's detections went out; `stage_ms` holds the time of each of STAGES,
        `age_ms` the frame's age at publish (None when its stamp was unset)."""
        with self._lock:
            self.counts.published += 1
            self._failures_in_a_row = self._invalid_in_a_row = 0
            _append_recent(self._published_at, self.clock())
            for stage in STAGES:
                self._stage_ms[stage].append(stage_ms[stage])
            if age_ms is not None:
                self._age_ms.append(age_ms)

    def seconds_matched_without_frame(self) -> Optional[float]:
        """Seconds since publishers were matched while no frame has arrived since; None while
        no publisher is matched or once a frame came."""
        with self._lock:
            if not self._publishers or self._received_since_match or self._matched_at is None:
                return None
            return self.clock() - self._matched_at

    def losing_frames(self) -> Optional[Tuple[int, int]]:
        """(lost, lost + received) over the last RATE_WINDOW_S when the transport lost enough
        of them to warn about it, else None."""
        with self._lock:
            lost, total = self._recent_loss(self.clock())
        return (lost, total) if _losing(lost, total) else None

    def _recent_loss(self, now: float) -> Tuple[int, int]:
        _forget_old_pairs(self._lost_at, now)
        _forget_old(self._received_at, now)
        lost = sum(count for _, count in self._lost_at)
        return lost, lost + len(self._received_at)

    def report(self, extra: Optional[Mapping[str, str]] = None) -> HealthReport:
        """The level, its reason, and every figure as diagnostics key/value strings, `extra`
        appended. Every message, key and value is `one_line`."""
        with self._lock:
            now = self.clock()
            idle_s = now - (self._last_received or self._started)
            lost, total = self._recent_loss(now)
            values = {
                'frames received': str(self.counts.received),
                'frames published': str(self.counts.published),
                'frames dropped (invalid image)': str(self.counts.invalid),
                'frames dropped (inference failed)': str(self.counts.failed),
                'frames superseded by newer ones': str(self.counts.superseded),
                'frames lost in transport': str(self.counts.lost) if self.loss_events else 'n/a',
                f'frames lost in transport, last {RATE_WINDOW_S:g} s (%)':
                    _percent(lost, total) if self.loss_events else 'n/a',
                'image publishers': str(self._publishers),
                'input rate (Hz)': f'{_rate(self._received_at, now):.2f}',
                'output rate (Hz)': f'{_rate(self._published_at, now):.2f}',
                'seconds since last image': f'{idle_s:.1f}',
                'frame age at publish, median (ms)': _median(self._age_ms),
            }
            for stage in STAGES:
                values[f'{stage} median (ms)'] = _median(self._stage_ms[stage])
            if self._last_error:
                values['last error'] = self._last_error
            values.update(extra or {})
            level, message = self._level(idle_s, lost, total)
        return HealthReport(level, one_line(message),
                            {one_line(key): one_line(value) for key, value in values.items()})

    def _level(self, idle_s: float, lost: int, total: int) -> Tuple[Level, str]:
        if self._failures_in_a_row >= self.error_after_failures:
            return Level.ERROR, (f'inference failed on the last {self._failures_in_a_row} '
                                 f'frames: {self._last_error}')
        warnings = []
        if idle_s > self.no_image_warn_s:
            warnings.append(f'no image for {idle_s:.1f} s')
        if self._invalid_in_a_row >= self.error_after_failures:
            warnings.append(f'the last {self._invalid_in_a_row} images were invalid: '
                            f'{self._last_error}')
        if warnings:
            return Level.WARN, '; '.join(warnings)
        if _losing(lost, total):
            return Level.WARN, (f'{lost} of the last {total} frames were lost in transport '
                                f'({_percent(lost, total)} %)')
        return Level.OK, 'detecting'


def one_line(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as one line of at most `limit` characters, for a diagnostics field.

    Line breaks, tabs and other unprintable characters become spaces, runs of spaces one
    space, the ends are stripped; longer text keeps its first two thirds and its end (where
    backends put the reason) around ' ... '.
    """
    flat = ' '.join(''.join(c if c.isprintable() else ' ' for c in text).split())
    if len(flat) <= limit:
        return flat
    marker = ' ... '
    head = (limit * 2) // 3
    return flat[:head] + marker + flat[len(flat) - (limit - head - len(marker)):]


def _append_recent(times: Deque[float], now: float) -> None:
    times.append(now)
    _forget_old(times, now)


def _forget_old(times: Deque[float], now: float) -> None:
    while times and times[0] < now - RATE_WINDOW_S:
        times.popleft()


def _forget_old_pairs(events: Deque[Tuple[float, int]], now: float) -> None:
    while events and events[0][0] < now - RATE_WINDOW_S:
        events.popleft()


def _losing(lost: int, total: int) -> bool:
    return lost >= LOSS_WARN_MIN_FRAMES and lost >= LOSS_WARN_FRACTION * total


def _percent(part: int, whole: int) -> str:
    return f'{100.0 * part / whole:.0f}' if whole else '0'


def _rate(times: Deque[float], now: float) -> float:
    _forget_old(times, now)
    return len(times) / RATE_WINDOW_S


def _median(samples: Deque[float]) -> str:
    values: List[float] = list(samples)
    return f'{statistics.median(values):.2f}' if values else 'n/a'


@dataclass
class EngineHealth:
    """Thread-safe record of the batches the shared detector ran for all cameras: how many
    frames each held and how long the engine took for it (preprocess + infer + postprocess,
    ms)."""

    window: int = 100
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.batches = 0
        self.largest_batch = 0
        self._sizes: Deque[int] = deque(maxlen=self.window)
        self._batch_ms: Deque[float] = deque(maxlen=self.window)
        self._frame_ms: Deque[float] = deque(maxlen=self.window)
        self._batch_at: Deque[float] = deque()

    def batch(self, frames: int, engine_ms: float) -> None:
        """The detector ran a batch of `frames` (>= 1) frames in `engine_ms`."""
        with self._lock:
            self.batches += 1
            self.largest_batch = max(self.largest_batch, frames)
            self._sizes.append(frames)
            self._batch_ms.append(engine_ms)
            self._frame_ms.append(engine_ms / frames)
            _append_recent(self._batch_at, self.clock())

    def report(self, extra: Optional[Mapping[str, str]] = None) -> HealthReport:
        """Level OK with the batch figures as diagnostics key/value strings, `extra`
        appended."""
        with self._lock:
            sizes = list(self._sizes)
            values = {
                'batches': str(self.batches),
                'batch rate (Hz)': f'{_rate(self._batch_at, self.clock()):.2f}',
                f'frames per batch, mean of last {self.window}':
                    f'{statistics.mean(sizes):.2f}' if sizes else 'n/a',
                'largest batch': str(self.largest_batch),
                'engine time per batch, median (ms)': _median(self._batch_ms),
                'engine time per frame, median (ms)': _median(self._frame_ms),
            }
        values.update(extra or {})
        message = f'{self.batches} batches' if self.batches else 'no frame yet'
        return HealthReport(Level.OK, message,
                            {one_line(key): one_line(value) for key, value in values.items()})
