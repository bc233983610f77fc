"""Exceptions of the detector core: what went wrong, and for startup errors, how to fix it."""
from __future__ import annotations


class HumanDetectorError(Exception):
    """Base class of every error the package raises on purpose."""


class ModelLoadError(HumanDetectorError):
    """A model or engine cannot be used; the message names the file and the fix."""


class InvalidImageError(HumanDetectorError):
    """One input frame cannot be converted; the frame is dropped, the node keeps running."""


class InferenceError(HumanDetectorError):
    """The engine or postprocessing failed on one frame."""


class InvalidParameterError(HumanDetectorError):
    """A node parameter has a value the node cannot start with; the message says which."""
