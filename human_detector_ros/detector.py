"""HumanDetector: letterbox -> engine -> NMS, each stage timed, boxes in source pixels.

One frame (`detector(bgr)`) or a batch of frames of any sizes (`detect_batch`): each frame is
letterboxed into its slot of one network input, the engine runs the batch in one call (or as
many calls as its `max_batch` needs; one per frame for a batch-1 model), and every frame's
detections come back in its own pixels, equal to what the frame alone gives.

Two ways through the stages: numpy on the host around `engine.infer` (every backend), or
`gpu_pipeline.TorchPipeline` on the engine's torch device (TorchScript, and TensorRT where
PyTorch sees its CUDA device; picked automatically on CUDA, where it keeps the frame on the GPU
from upload to the kept rows).
"""
from __future__ import annotations

import collections
import contextlib
import pathlib
import time
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from human_detector_ros.assets import default_model_path
from human_detector_ros.engines import load_engine
from human_detector_ros.errors import InferenceError, InvalidImageError, ModelLoadError
from human_detector_ros.gpu_pipeline import (
    InFlight, PIPELINE_DEPTH, supports_torch_pipeline, TorchPipeline)
from human_detector_ros.letterbox import (
    letterbox, letterbox_transform, LetterboxTransform, to_network_input)
from human_detector_ros.postprocess import Detections, NmsConfig, postprocess, resolve_layout

PIPELINES = ('auto', 'numpy', 'torch')
KEPT_TRANSFORMS = 16


@dataclass(frozen=True)
class StageTimings:
    """Time of each stage of one frame (or of one whole batch), in milliseconds.

    Numpy pipeline: host wall time. Torch pipeline on CUDA: CUDA events recorded on its stream
    time the device work and are read after the frame's one synchronisation (timing adds no
    sync); preprocess = frame checks + host copy + upload + letterbox, infer = forward,
    postprocess = NMS + download + host decode.
    """

    preprocess_ms: float = 0.0
    infer_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.infer_ms + self.postprocess_ms


@dataclass
class _BatchResults:
    """The detections of one batch of `detect_batches`, chunk by chunk as they are collected,
    and its stage times summed over its chunks."""

    chunks: List[Optional[List[Detections]]]
    totals: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    @property
    def complete(self) -> bool:
        return all(chunk is not None for chunk in self.chunks)


class HumanDetector:
    """A YOLO detector on BGR images: `detector(bgr) -> Detections` in source pixels.

    The engine (and so the network input size, dtype and output layout) is fixed at
    construction; `config` (an NmsConfig) may be replaced at any time. Buffers are allocated
    once and reused for every frame; the letterbox geometry is recomputed only when the source
    size changes.

    pipeline: 'numpy' (host stages), 'torch' (`TorchPipeline` on the engine's device; needs an
    engine that `runs_torch`: TorchScript, or TensorRT with PyTorch on CUDA) or 'auto' (torch
    when the engine runs torch on CUDA). resize_on: where
    the torch pipeline letterboxes, 'device' or 'host' (see TorchPipeline). The stage methods
    `preprocess`, `infer` and `postprocess` are the numpy pipeline's, whichever `__call__` uses.
    tensorrt_precision, tensorrt_cache_dir: for an ONNX model with backend 'tensorrt', which
    is built into a cached TensorRT engine (see `load_engine`). max_batch: the most frames
    one engine call takes for a model with a dynamic batch (a TensorRT engine built from ONNX
    gets that profile); `detect_batch` splits longer lists.
    """

    def __init__(self, model_path: Union[str, pathlib.Path, None] = None, backend: str = 'auto',
                 device: str = 'auto', conf_threshold: float = 0.5,
                 iou_threshold: float = 0.45, max_det: int = 300,
                 classes: Optional[Sequence[int]] = None, agnostic_nms: bool = False,
                 pipeline: str = 'auto', resize_on: str = 'device',
                 tensorrt_precision: str = 'fp16',
                 tensorrt_cache_dir: Union[str, pathlib.Path, None] = None,
                 max_batch: int = 1) -> None:
        if model_path is None:
            model_path = default_model_path()
        if pipeline not in PIPELINES:
            raise ValueError(f'pipeline must be one of {PIPELINES}, got {pipeline!r}')
        self.config = NmsConfig(conf_threshold=conf_threshold, iou_threshold=iou_threshold,
                                max_det=max_det,
                                classes=None if classes is None else tuple(classes),
                                agnostic=agnostic_nms)
        self.engine = load_engine(pathlib.Path(model_path), backend=backend, device=device,
                                  tensorrt_precision=tensorrt_precision,
                                  tensorrt_cache_dir=tensorrt_cache_dir, max_batch=max_batch)
        try:
            self.layout = resolve_layout(self.engine.outputs)
            self.torch_pipeline = self._make_torch_pipeline(pipeline, resize_on)
        except BaseException:
            self.engine.close()
            raise
        self.names: Dict[int, str] = dict(self.engine.metadata.names)
        self.input_hw: Tuple[int, int] = self.engine.input_hw
        self.input_dtype = np.dtype(self.engine.inputs[0].dtype)
        self.last_timings = StageTimings()
        self._letterboxed = np.empty(self.input_hw + (3,), dtype=np.uint8)
        self._planes = np.empty((3,) + self.input_hw, dtype=np.uint8)
        self.max_batch = self.engine.max_batch
        self._inputs = np.empty((self.max_batch, 3) + self.input_hw, dtype=self.input_dtype)
        self._transforms: collections.OrderedDict[Tuple[int, int], LetterboxTransform] = \
            collections.OrderedDict()

    def _make_torch_pipeline(self, pipeline: str, resize_on: str) -> Optional[TorchPipeline]:
        supported = supports_torch_pipeline(self.engine)
        if pipeline == 'torch' and not supported:
            raise ModelLoadError(
                f'The torch pipeline needs an engine that runs torch tensors (TorchScript, or '
                f'TensorRT with a CUDA build of PyTorch installed), and '
                f'{self.engine.model_path} runs on {self.engine.backend} without torch. Use '
                f'pipeline "auto" or "numpy", install PyTorch with CUDA for a TensorRT engine, '
                f'or export the model with `yolo export model=best.pt format=torchscript`.')
        if pipeline == 'numpy' or not supported or (
                pipeline == 'auto' and not self.engine.device.startswith('cuda')):
            return None
        return TorchPipeline(self.engine, self.layout, self.postprocess, resize_on=resize_on)

    def transform_for(self, src_hw: Tuple[int, int]) -> LetterboxTransform:
        """The letterbox of a source of size (h, w); those of recent sizes are kept."""
        transform = self._transforms.get(src_hw)
        if transform is None:
            transform = letterbox_transform(src_hw, self.input_hw)
            self._transforms[src_hw] = transform
            if len(self._transforms) > KEPT_TRANSFORMS:
                self._transforms.popitem(last=False)
        return transform

    def checked_transform(self, bgr: np.ndarray,
                          frame_index: Optional[int] = None) -> LetterboxTransform:
        """The letterbox of `bgr`; InvalidImageError (carrying `frame_index`) unless it is a
        non-empty HxWx3 uint8 array."""
        if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.ndim != 3 \
                or bgr.shape[2] != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
            described = (f'{bgr.shape} {bgr.dtype}' if isinstance(bgr, np.ndarray)
                         else type(bgr).__name__)
            raise InvalidImageError(f'expected a non-empty HxWx3 uint8 BGR image, got '
                                    f'{described}', frame_index)
        return self.transform_for((int(bgr.shape[0]), int(bgr.shape[1])))

    def preprocess(self, bgr: np.ndarray) -> Tuple[np.ndarray, LetterboxTransform]:
        """HxWx3 uint8 BGR -> ([1, 3, H, W] network input, its transform).

        The input array is this detector's buffer: it is overwritten by the next call.
        Raises InvalidImageError for anything but a non-empty HxWx3 uint8 array.
        """
        transform = self.checked_transform(bgr)
        return self._letterbox_into(bgr, transform, 0), transform

    def _letterbox_into(self, bgr: np.ndarray, transform: LetterboxTransform,
                        slot: int) -> np.ndarray:
        """Letterbox `bgr` into row `slot` of the batch input; that row, [1, 3, H, W]."""
        letterbox(bgr, transform, out=self._letterboxed)
        return to_network_input(self._letterboxed, self.input_dtype,
                                out=self._inputs[slot:slot + 1], planes=self._planes)

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[b, 3, H, W] network input, b <= max_batch -> named engine outputs of b images
        (not to be modified)."""
        return self.engine.infer(images)

    def postprocess(self, outputs: Dict[str, np.ndarray], transform: LetterboxTransform,
                    index: int = 0, config: Optional[NmsConfig] = None) -> Detections:
        """Image `index` of the named engine outputs -> Detections in its source pixels, with
        `config` (default: the current `config`)."""
        try:
            return postprocess(outputs, self.layout, config or self.config, transform, index)
        except (ValueError, IndexError, KeyError) as error:
            shapes = {name: list(np.shape(array)) for name, array in outputs.items()}
            raise InferenceError(f'cannot decode the outputs {shapes} of '
                                 f'{self.engine.model_path.name} as {self.layout.name}: '
                                 f'{error}') from None

    @contextlib.contextmanager
    def _torch_errors(self) -> Iterator[None]:
        """The torch pipeline's RuntimeErrors as InferenceError."""
        try:
            yield
        except RuntimeError as error:
            raise InferenceError(f'torch pipeline of {self.engine.model_path.name} failed: '
                                 f'{error}') from None

    def __call__(self, bgr: np.ndarray) -> Detections:
        """HxWx3 uint8 BGR image -> Detections in its pixels; sets `last_timings`."""
        start = time.perf_counter()
        if self.torch_pipeline is not None:
            transform = self.checked_transform(bgr)
            with self._torch_errors():
                detections = self.torch_pipeline.run(bgr, transform, self.config, start)
            self.last_timings = StageTimings(*self.torch_pipeline.stage_ms)
            return detections
        images, transform = self.preprocess(bgr)
        preprocessed = time.perf_counter()
        outputs = self.infer(images)
        inferred = time.perf_counter()
        detections = self.postprocess(outputs, transform)
        done = time.perf_counter()
        self.last_timings = StageTimings(preprocess_ms=(preprocessed - start) * 1e3,
                                         infer_ms=(inferred - preprocessed) * 1e3,
                                         postprocess_ms=(done - inferred) * 1e3)
        return detections

    def detect_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """HxWx3 uint8 BGR images of any sizes -> each one's Detections in its own pixels.

        Every frame is checked first: one that is not a non-empty HxWx3 uint8 array raises
        InvalidImageError with its `frame_index`, and nothing runs (drop it and call again).
        The frames run in batches of up to `max_batch` (one engine call each); the result for
        each frame equals `detector(frame)`. Sets `last_timings` to the sums over the frames.
        """
        return next(self.detect_batches([frames]))

    def detect_batches(self, batches: Iterable[Sequence[np.ndarray]]
                       ) -> Iterator[List[Detections]]:
        """Batches of frames -> each batch's `detect_batch` result, in order, pipelined.

        With the torch pipeline, batch k + 1 is submitted to the device before the results of
        batch k are collected and yielded, so the host's work (copying the next frames in,
        decoding rows, and the caller's own work between two results) overlaps the device's
        work on a batch: more frames per second when the caller has the next batch at hand,
        at the price of a batch's latency running on while the next one runs. The next batch
        is taken from `batches` before a result is yielded: a source that waits for frames
        delays the previous result, unless it hands over an empty batch instead (then every
        earlier result is yielded, then []). The numpy pipeline runs one batch after the other.
        One iteration at a time per detector; `detector(bgr)` and `detect_batch` may be called
        between two results.
        Sets `last_timings` before each yield, for that batch. A frame that is not a
        non-empty HxWx3 uint8 array raises InvalidImageError (with its `frame_index` in its
        batch) and ends the iteration; the batches in flight are then dropped.
        """
        if self.torch_pipeline is None:
            for frames in batches:
                yield self._detect_numpy_batch(frames)
            return
        in_flight: Deque[Tuple[InFlight, _BatchResults, int]] = collections.deque()
        waiting: Deque[_BatchResults] = collections.deque()
        try:
            for frames in batches:
                start = time.perf_counter()
                transforms = [self.checked_transform(bgr, index)
                              for index, bgr in enumerate(frames)]
                chunks = range(0, len(frames), self.max_batch)
                results = _BatchResults([None] * len(chunks))
                waiting.append(results)
                for number, first in enumerate(chunks):
                    if len(in_flight) == PIPELINE_DEPTH:
                        self._collect(*in_flight.popleft())
                        start = time.perf_counter()
                    chunk = slice(first, first + self.max_batch)
                    with self._torch_errors():
                        flight = self.torch_pipeline.submit(frames[chunk], transforms[chunk],
                                                            self.config, start)
                    in_flight.append((flight, results, number))
                    start = time.perf_counter()
                # All but this batch's last submission are collected while that runs on the
                # device; an empty batch (nothing new from a source that does not wait)
                # collects everything.
                while len(in_flight) > (1 if chunks else 0):
                    self._collect(*in_flight.popleft())
                while waiting and waiting[0].complete and (waiting[0] is not results
                                                           or not chunks):
                    yield self._results_of(waiting.popleft())
            while in_flight:
                self._collect(*in_flight.popleft())
            while waiting:
                yield self._results_of(waiting.popleft())
        finally:
            for flight, _, _ in in_flight:  # left by an error or an unfinished iteration
                with contextlib.suppress(Exception):
                    self.torch_pipeline.collect(flight)

    def _collect(self, flight: InFlight, results: _BatchResults, number: int) -> None:
        with self._torch_errors():
            results.chunks[number] = self.torch_pipeline.collect(flight)
        results.totals = [total + ms for total, ms in
                          zip(results.totals, self.torch_pipeline.stage_ms)]

    def _results_of(self, results: _BatchResults) -> List[Detections]:
        self.last_timings = StageTimings(*results.totals)
        return [detections for chunk in results.chunks for detections in chunk]

    def _detect_numpy_batch(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """`detect_batch` through the numpy pipeline."""
        start = time.perf_counter()
        transforms = [self.checked_transform(bgr, index) for index, bgr in enumerate(frames)]
        results: List[Detections] = []
        totals = [0.0, 0.0, 0.0]
        for first in range(0, len(frames), self.max_batch):
            chunk = slice(first, first + self.max_batch)
            stage_ms = self._run_numpy_batch(frames[chunk], transforms[chunk], start, results)
            totals = [total + ms for total, ms in zip(totals, stage_ms)]
            start = time.perf_counter()
        self.last_timings = StageTimings(*totals)
        return results

    def _run_numpy_batch(self, frames: Sequence[np.ndarray],
                         transforms: Sequence[LetterboxTransform], start: float,
                         results: List[Detections]) -> Tuple[float, float, float]:
        """Letterbox each frame into its slot, one engine call, decode every image; appends
        to `results` and returns the stage times in ms."""
        for slot, (bgr, transform) in enumerate(zip(frames, transforms)):
            self._letterbox_into(bgr, transform, slot)
        preprocessed = time.perf_counter()
        outputs = self.infer(self._inputs[:len(frames)])
        inferred = time.perf_counter()
        results += [self.postprocess(outputs, transform, index)
                    for index, transform in enumerate(transforms)]
        done = time.perf_counter()
        return ((preprocessed - start) * 1e3, (inferred - preprocessed) * 1e3,
                (done - inferred) * 1e3)

    def close(self) -> None:
        """Release the torch pipeline's buffers and graphs, then the engine."""
        self.torch_pipeline = None
        self.engine.close()

    def __enter__(self) -> HumanDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
