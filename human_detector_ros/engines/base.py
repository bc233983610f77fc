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
    """Raise ModelLoadError unless there is exactly one input shaped [B, 3, H, W].

    The batch B may be fixed or dynamic; H and W may be dynamic.
    """
    expected = ('The detector expects exactly one image input of shape [B, 3, H, W] '
                '(batch fixed or dynamic, 3 colour channels, H and W fixed or dynamic), as '
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
        elif shape[0] == 0 or shape[0] < -1:
            problem = f'its input is {found}, batch {shape[0]}'
    if problem is not None:
        raise ModelLoadError(
            f'Model {model_path} cannot be used: {problem}. {expected} Re-export the model '
            f'(e.g. `yolo export model=best.pt format=onnx batch=1`, or dynamic=True for a '
            f'dynamic batch).')


class Engine(abc.ABC):
    """A loaded model: named input/output specs, metadata, and `infer` on a batch of images.

    Subclasses set `backend` (and `runs_torch` where they implement `infer_torch`) and call
    `Engine.__init__` once their specs are known, before they allocate anything that `close`
    must release.

    Batches: `infer` takes [b, 3, H, W] for 1 <= b <= `max_batch` and returns outputs whose
    leading dimension is b. An engine with a fixed batch N > 1 runs N (the frames padded up
    to it, see `run_batch`); a batch-1-only model has `max_batch` 1 and its caller makes one
    call per frame.
    """

    backend: str = ''
    runs_torch: bool = False
    """Whether `infer_torch(images) -> {name: tensor}` works: it takes a [b, 3, H, W] torch
    tensor and returns the named outputs as tensors on the engine's `device`, enqueued on
    torch's current stream."""

    def __init__(self, model_path: pathlib.Path, device: str, inputs: Tuple[TensorSpec, ...],
                 outputs: Tuple[TensorSpec, ...], metadata: ModelMetadata,
                 max_batch: int = 1) -> None:
        validate_image_input(model_path, inputs)
        self.model_path = model_path
        self.device = device
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata
        fixed = int(inputs[0].shape[0])
        self.max_batch: int = fixed if fixed > 0 else max(1, int(max_batch))
        """The most frames one `infer` call takes: a fixed batch, else what was asked for."""

    @property
    def input_hw(self) -> Tuple[int, int]:
        """Network input (height, width) in pixels: static shape, else metadata, else 640."""
        height, width = self.inputs[0].shape[2:]
        if height > 0 and width > 0:
            return int(height), int(width)
        if self.metadata.imgsz is not None:
            return self.metadata.imgsz
        return DEFAULT_INPUT_HW

    def run_batch(self, batch: int) -> int:
        """The batch the model runs for `batch` frames: its fixed batch, else `batch`."""
        fixed = int(self.inputs[0].shape[0])
        return fixed if fixed > 0 else batch

    def expected_input_shape(self, batch: int = 1) -> Tuple[int, int, int, int]:
        """The [batch, 3, H, W] shape `infer` accepts."""
        return (batch, 3) + self.input_hw

    def check_shape(self, shape: Tuple[int, ...]) -> None:
        """InferenceError unless `shape` is a [b, 3, H, W] that `infer` accepts."""
        shape = tuple(shape)
        if len(shape) != 4 or not 1 <= shape[0] <= self.max_batch or \
                shape[1:] != self.expected_input_shape()[1:]:
            batch = '1' if self.max_batch == 1 else f'1..{self.max_batch}'
            expected = ', '.join([batch] + [str(dim) for dim in self.expected_input_shape()[1:]])
            raise InferenceError(
                f'{self.backend} engine {self.model_path.name} expects input shape '
                f'[{expected}], got {list(shape)}.')

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """`images` as a C-contiguous array of the input dtype, zero-padded to `run_batch`
        rows; InferenceError on a bad shape."""
        self.check_shape(images.shape)
        run = self.run_batch(images.shape[0])
        if run == images.shape[0]:
            return np.ascontiguousarray(images, dtype=self.inputs[0].dtype)
        padded = np.zeros((run,) + images.shape[1:], dtype=self.inputs[0].dtype)
        padded[:images.shape[0]] = images
        return padded

    def torch_input(self) -> Any:
        """The tensor `infer_torch` reads in place, for engines bound to one; None otherwise.

        Its leading dimension is `max_batch` (at least): `infer_torch` of its first b rows
        reads them where they are.
        """
        return None

    def infer_torch(self, images: Any) -> Dict[str, Any]:
        """[b, 3, H, W] torch tensor -> {output name: tensor}; only where `runs_torch`."""
        raise InferenceError(f'{self.backend} engine {self.model_path.name} does not run torch '
                             f'tensors.')

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[b, 3, H, W] array (1 <= b <= max_batch) in the input dtype -> {output name:
        array with leading dimension b}, owned by the caller."""

    def close(self) -> None:
        """Release the runtime's resources; the engine is unusable afterwards."""

    def __enter__(self) -> 'Engine':
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({str(self.model_path)!r}, device={self.device!r}, '
                f'inputs={list(self.inputs)}, outputs={list(self.outputs)})')
