"""The newest unprocessed frame of each of N cameras, handed from receiving threads to a worker.

ROS-free. Each camera keeps at most one pending frame: a newer one replaces it (the older one is
counted as superseded), so the worker never works on a backlog. The worker takes the newest
pending frame of every camera that has one, as one batch; it never waits for a camera that has
nothing new, so a camera that stops delays none of the others. When a batch is limited to fewer
frames than cameras have pending, cameras are served round-robin, starting after the last one
served: under overload every camera gets its turn and none starves another.
"""
from __future__ import annotations

import threading
from typing import Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

Frame = TypeVar('Frame')


class NewestFrames(Generic[Frame]):
    """Thread-safe store of the newest pending frame per camera.

    `cameras`: the camera names, in the order batches list them (at least one, unique).
    Raises ValueError for an empty or repeated name list.
    """

    def __init__(self, cameras: Sequence[str]) -> None:
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f'cameras must be a non-empty list of unique names, got {cameras!r}')
        self.cameras: Tuple[str, ...] = tuple(cameras)
        self._pending: Dict[str, Optional[Frame]] = {camera: None for camera in self.cameras}
        self._next = 0
        self._closed = False
        self._ready = threading.Condition()

    def put(self, camera: str, frame: Frame) -> bool:
        """Make `frame` the pending frame of `camera`. Returns True when it superseded an
        older pending frame, which is then dropped (the caller counts it). Raises KeyError for
        an unknown camera."""
        with self._ready:
            replaced = self._pending[camera] is not None
            self._pending[camera] = frame
            self._ready.notify()
        return replaced

    def take(self, max_frames: Optional[int] = None, timeout_s: Optional[float] = None
             ) -> List[Tuple[str, Frame]]:
        """Wait until a camera has a pending frame (or the store is closed, or `timeout_s`
        passed); then remove and return (camera, frame) for every camera that has one, at most
        `max_frames` (None: no limit) chosen round-robin. Empty once closed or on timeout.
        Raises ValueError for `max_frames` < 1."""
        if max_frames is not None and max_frames < 1:
            raise ValueError(f'max_frames must be at least 1, got {max_frames}')
        with self._ready:
            self._ready.wait_for(
                lambda: self._closed or any(f is not None for f in self._pending.values()),
                timeout_s)
            if self._closed:
                return []
            count = len(self.cameras)
            order = [self.cameras[(self._next + i) % count] for i in range(count)]
            waiting = [camera for camera in order if self._pending[camera] is not None]
            chosen = set(waiting[:max_frames] if max_frames is not None else waiting)
            if len(chosen) < len(waiting):
                self._next = (self.cameras.index(waiting[len(chosen) - 1]) + 1) % count
            batch = [(camera, self._pending[camera]) for camera in self.cameras
                     if camera in chosen]
            for camera in chosen:
                self._pending[camera] = None
            return batch

    def close(self) -> None:
        """Wake the worker: `take` returns an empty list from now on."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
