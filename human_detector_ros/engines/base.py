"""The one interface every inference backend implements, and the checks they all share."""
from __future__ import annotations

import abc
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from human_detector_ros.errors import InferenceError, ModelLoadError

DEFAULT_INPUT_HW = (640, 640)
_DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda)(?::(\d+))?$')


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output tensor; -1 in `shape` marks a dynamic dimension."""

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class ModelMetadata:
    """What the model file says about itself; empty/None where it says nothing.

    names: class index -> class name. imgsz: network input (height, width) in pixels.
    stride: the largest feature-map stride in pixels.
    """

    names: Dict[int, str] = field(default_factory=dict)
    imgsz: Optional[Tuple[int, int]] = None
    stride: Optional[int] = None


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed device string: kind 'auto', 'cpu' or 'cuda', and the CUDA device index."""

    kind: str
    index: int = 0

    @property
    def cuda_name(self) -> str:
        return f'cuda:{self.index}'


def _device_match(device: str) -> Optional[re.Match]:
    match = _DEVICE_PATTERN.match(str(device).strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != 'cuda'):
        return None
    return match


def is_device_name(device: str) -> bool:
    """True for 'auto', 'cpu', 'cuda' and 'cuda:N' (case and surrounding spaces ignored)."""
    return _device_match(device) is not None


def parse_device(device: str, model_path: pathlib.Path) -> DeviceRequest:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> DeviceRequest; anything else -> ModelLoadError."""
    match = _device_match(device)
    if match is None:
        raise ModelLoadError(
            f'Unknown device {device!r} for model {model_path}. Use "auto", "cpu", "cuda" or '
            f'"cuda:N" (N = the CUDA device index, e.g. "cuda:0").')
    return DeviceRequest(match.group(1), int(match.group(2) or 0))


def validate_image_input(model_path: pathlib.Path, inputs: Tuple[TensorSpec, ...]) -> None:
    """Raise ModelLoadError unless there is exactly one input shaped [1, 3, H, W].

    The batch dimension may be 1 or dynamic; H and W may be dynamic.
    """
    expected = ('The detector expects exactly one image input of shape [1, 3, H, W] '
                '(batch 1 or dynamic, 3 colour channels, H and W fixed or dynamic), as '
                'Ultralytics exports a YOLO detector.')
    found = ', '.join(f'{spec.name} {list(spec.shape)}' for spec in inputs) or 'no inputs'
    problem = None
    if len(inputs) != 1:
        problem = f'it has {len(inputs)} inputs ({found})'
    else:
        shape = inputs[0].shape
        if len(shape) != 4:
            problem = f'its input is {found}, rank {len(shape)}'
        elif shape[1] != 3:
            problem = f'its input is {found}, with {shape[1]} channels'
        elif shape[0] not in (1, -1):
            problem = f'its input is {found}, batch {shape[0]}'
    if problem is not None:
        raise ModelLoadError(
            f'Model {model_path} cannot be used: {problem}. {expected} Re-export the model '
            f'with batch=1 (e.g. `yolo export model=best.pt format=onnx batch=1`).')


class Engine(abc.ABC):
    """A loaded model: named input/output specs, metadata, and `infer`.

    Subclasses set `backend` and call `Engine.__init__` once their specs are known, before
    they allocate anything that `close` must release.
    """

    backend: str = ''

    def __init__(self, model_path: pathlib.Path, device: str, inputs: Tuple[TensorSpec, ...],
                 outputs: Tuple[TensorSpec, ...], metadata: ModelMetadata) -> None:
        validate_image_input(model_path, inputs)
        self.model_path = model_path
        self.device = device
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata

    @property
    def input_hw(self) -> Tuple[int, int]:
        """Network input (height, width) in pixels: static shape, else metadata, else 640."""
        height, width = self.inputs[0].shape[2:]
        if height > 0 and width > 0:
            return int(height), int(width)
        if self.metadata.imgsz is not None:
            return self.metadata.imgsz
        return DEFAULT_INPUT_HW

    def expected_input_shape(self) -> Tuple[int, int, int, int]:
        """The [1, 3, H, W] shape `infer` accepts."""
        return (1, 3) + self.input_hw

    def check_shape(self, shape: Tuple[int, ...]) -> None:
        """InferenceError unless `shape` is the [1, 3, H, W] that `infer` accepts."""
        expected = self.expected_input_shape()
        if tuple(shape) != expected:
            raise InferenceError(
                f'{self.backend} engine {self.model_path.name} expects input shape '
                f'{list(expected)}, got {list(shape)}.')

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """`images` as a C-contiguous array of the input dtype; InferenceError on bad shape."""
        self.check_shape(images.shape)
        return np.ascontiguousarray(images, dtype=self.inputs[0].dtype)

    @property
    def runs_torch(self) -> bool:
        """Whether this engine has a working `infer_torch(images) -> {name: tensor}`.

        `infer_torch` takes a [1, 3, H, W] torch tensor and returns the named outputs as
        tensors on the engine's `device`, enqueued on torch's current stream.
        """
        return callable(getattr(self, 'infer_torch', None))

    def torch_input(self) -> Any:
        """The tensor `infer_torch` reads in place, for engines bound to one; None otherwise."""
        return None

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[1, 3, H, W] array in the input dtype -> {output name: array}, owned by the caller."""

    def close(self) -> None:
        """Release the runtime's resources; the engine is unusable afterwards."""

    def __enter__(self) -> 'Engine':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({str(self.model_path)!r}, device={self.device!r}, '
                f'inputs={list(self.inputs)}, outputs={list(self.outputs)})')
