"""Counts, rates and stage times of the node's frames, and the health level they add up to.

ROS-free: the node feeds events in from its threads and publishes `report()` as diagnostics.
Every frame the node takes ends in exactly one of: published, invalid, failed, superseded.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Deque, Dict, List, Optional, Tuple

STAGES: Tuple[str, ...] = ('convert', 'preprocess', 'infer', 'postprocess', 'publish')
RATE_WINDOW_S = 5.0


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


@dataclass
class PipelineHealth:
    """Thread-safe record of the pipeline's frames.

    `no_image_warn_s`: WARN when no frame arrived for that long (or since start).
    `error_after_failures`: ERROR after that many inference failures in a row; the next
    published frame clears it.
    """

    no_image_warn_s: float = 3.0
    error_after_failures: int = 5
    window: int = 100
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
        self._last_error = ''

    def received(self) -> None:
        """A frame came in from the subscription."""
        with self._lock:
            now = self.clock()
            self.counts.received += 1
            self._last_received = now
            _append_recent(self._received_at, now)

    def superseded(self) -> None:
        """A frame was replaced by a newer one before the pipeline took it."""
        with self._lock:
            self.counts.superseded += 1

    def invalid(self, reason: str) -> None:
        """A frame could not be converted (bad encoding, size, step, data)."""
        with self._lock:
            self.counts.invalid += 1
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
            self._failures_in_a_row = 0
            _append_recent(self._published_at, self.clock())
            for stage in STAGES:
                self._stage_ms[stage].append(stage_ms[stage])
            if age_ms is not None:
                self._age_ms.append(age_ms)

    def seconds_without_image(self) -> float:
        """Seconds since the last frame arrived (since start if none has)."""
        with self._lock:
            return self.clock() - (self._last_received or self._started)

    def report(self) -> HealthReport:
        """The level, its reason, and every figure as diagnostics key/value strings."""
        with self._lock:
            now = self.clock()
            idle_s = now - (self._last_received or self._started)
            values = {
                'frames received': str(self.counts.received),
                'frames published': str(self.counts.published),
                'frames dropped (invalid image)': str(self.counts.invalid),
                'frames dropped (inference failed)': str(self.counts.failed),
                'frames superseded by newer ones': str(self.counts.superseded),
                'input rate (Hz)': f'{_rate(self._received_at, now):.2f}',
                'output rate (Hz)': f'{_rate(self._published_at, now):.2f}',
                'seconds since last image': f'{idle_s:.1f}',
                'frame age at publish, median (ms)': _median(self._age_ms),
            }
            for stage in STAGES:
                values[f'{stage} median (ms)'] = _median(self._stage_ms[stage])
            if self._last_error:
                values['last error'] = self._last_error
            level, message = self._level(idle_s)
        return HealthReport(level, message, values)

    def _level(self, idle_s: float) -> Tuple[Level, str]:
        if self._failures_in_a_row >= self.error_after_failures:
            return Level.ERROR, (f'inference failed on the last {self._failures_in_a_row} '
                                 f'frames: {self._last_error}')
        if idle_s > self.no_image_warn_s:
            return Level.WARN, f'no image for {idle_s:.1f} s'
        return Level.OK, 'detecting'


def _append_recent(times: Deque[float], now: float) -> None:
    times.append(now)
    _forget_old(times, now)


def _forget_old(times: Deque[float], now: float) -> None:
    while times and times[0] < now - RATE_WINDOW_S:
        times.popleft()


def _rate(times: Deque[float], now: float) -> float:
    _forget_old(times, now)
    return len(times) / RATE_WINDOW_S


def _median(samples: Deque[float]) -> str:
    values: List[float] = list(samples)
    return f'{statistics.median(values):.2f}' if values else 'n/a'
