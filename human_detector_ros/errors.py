"""Exceptions of the detector core: what went wrong, and for startup errors, how to fix it."""
from __future__ import annotations

from typing import Optional


class HumanDetectorError(Exception):
    """Base class of every error the package raises on purpose."""


class ModelLoadError(HumanDetectorError):
    """A model or engine cannot be used; the message names the file and the fix."""


class InvalidImageError(HumanDetectorError):
    """One input frame cannot be converted; the frame is dropped, the node keeps running.

    frame_index: the position of the bad frame in the batch given to `detect_batch` (None for
    a single frame), so that a caller can drop that frame alone and run the others again.
    """

    def __init__(self, message: str, frame_index: Optional[int] = None) -> None:
        super().__init__(message if frame_index is None else f'frame {frame_index}: {message}')
        self.frame_index = frame_index


class InferenceError(HumanDetectorError):
    """The engine or postprocessing failed on one frame."""


class InvalidParameterError(HumanDetectorError):
    """A node parameter has a value the node cannot start with; the message says which."""
