"""Whole frames through a torch engine on its own device: GPU-resident on CUDA.

Frames run one at a time or as a batch (`run_batch`): each frame has its slot in one
[max_batch, 3, H, W] device input, with its own frame buffers per slot and source size, and
the engine runs the batch in one call; the fixed-size NMS runs over the whole batch (the Triton
kernels with one program per image, the torch NMS image by image) in one captured graph.
Each batch size used gets its own CUDA graphs (forward and NMS).

On CUDA, one frame costs one synchronisation: the HxWx3 uint8 BGR frame is copied into a pinned
host buffer (torch's parallel CPU copy; where the resize reads only some source rows, such as
every third row of a 1080p frame, just those rows) and uploaded asynchronously; letterbox +
BGR->RGB + /255 + dtype cast, the engine's forward and a fixed-size NMS run on one stream,
each replayed as a CUDA graph when capture works (eager otherwise, with the reason logged); one
small copy brings back the kept rows, and waiting for it is the only host synchronisation.
Buffers are allocated once (the frame buffers once per source size), so the steady state
allocates nothing.

A batch can also be submitted (`submit`) and its results collected later (`collect`): up to
`PIPELINE_DEPTH` batches are in flight, each with its own events and pinned result buffers, so
the host copies the next batch's frames and decodes the previous batch's rows while the device
runs a batch. The device runs them in submission order on the one stream, which is what keeps
the shared network input and graph outputs consistent.

The fixed-size NMS (`device_nms`) needs no host round trip; when it reports that its result is
not valid (more candidates than its capacity), that frame falls back to the exact
`postprocess_torch` NMS. Either way the result equals the numpy path's for the same engine
outputs.

The same code runs on a CPU torch device (no pinned memory, streams or graphs), which is how it
is tested without a GPU.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import time
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional, \
    Sequence, Tuple, TYPE_CHECKING

import numpy as np

from human_detector_ros import postprocess_torch
from human_detector_ros.device_nms import (
    CANDIDATES, fixed_size_nms, KEPT, NMS_CAPACITY, NMS_ROUNDS, NmsLimits, UNSETTLED)
from human_detector_ros.engines.torchscript_engine import torch_dtype
from human_detector_ros.letterbox import letterbox, letterbox_transform, LetterboxTransform
from human_detector_ros.letterbox_torch import DeviceLetterbox
from human_detector_ros.postprocess import (
    Detections, NmsConfig, OutputLayout, rows_to_detections)

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)
RESIZE_ON = ('device', 'host')
GRAPH_WARMUP_RUNS = 3
KEPT_SOURCE_SIZES = 4
PIPELINE_DEPTH = 2
"""Batches in flight at once: one on the device while the host prepares or decodes another."""


def supports_torch_pipeline(engine: Any) -> bool:
    """Whether `engine` runs torch tensors on its own device (`Engine.runs_torch`)."""
    return bool(engine.runs_torch)


class _Launch:
    """A function of static tensors: replayed as a CUDA graph once captured, else called."""

    def __init__(self, function: Callable[[], Any], name: str) -> None:
        self.function = function
        self.name = name
        self.graph: Any = None
        self.result: Any = None

    def capture(self, stream: torch.cuda.Stream, pool: Any = None) -> bool:
        """Warm up on `stream`, then capture one call; False (and a logged reason) on failure."""
        import torch

        try:
            stream.wait_stream(torch.cuda.current_stream(stream.device))
            with torch.cuda.stream(stream):
                for _ in range(GRAPH_WARMUP_RUNS):
                    self.function()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                result = self.function()
        except Exception as error:  # capture fails in many ways: syncing ops, unsupported calls
            LOG.warning('CUDA graph capture of the %s failed; it runs eagerly instead: %s',
                        self.name, error)
            return False
        self.graph, self.result = graph, result
        return True

    def __call__(self) -> Any:
        if self.graph is None:
            return self.function()
        self.graph.replay()
        return self.result


def regular_rows(rows: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(first, period, count, run) when the ascending `rows` are exactly first + period * k + j
    for k < count and j < run (the rows an integer downscale reads), else None."""
    starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
    lengths = np.diff(starts, append=len(rows))
    periods = np.diff(rows[starts])
    if np.any(lengths != lengths[0]) or np.any(periods != periods[:1]):
        return None
    run = int(lengths[0])
    return int(rows[0]), int(periods[0]) if len(periods) else run, len(starts), run


class RowCopy:
    """Copies the rows `rows` (ascending int64; None: all) of HxWx3 uint8 frames into `out`, a
    (len(rows), W, 3) uint8 CPU tensor.

    Rows of a regular pattern (`regular_rows`) go as one strided view through torch's CPU
    copy, which runs on its intra-op threads; other row sets through numpy's row gather (one
    thread), whole frames through torch's copy. Frames torch cannot wrap (read-only, negative
    strides) go through numpy.
    """

    def __init__(self, rows: Optional[np.ndarray], out: torch.Tensor) -> None:
        self.rows = rows
        self.out = out
        self.out_array = out.numpy()
        self.pattern = None if rows is None else regular_rows(rows)
        if self.pattern is not None:
            first, period, count, run = self.pattern
            self.out = out.view((count, run) + tuple(out.shape[1:]))

    def __call__(self, bgr: np.ndarray) -> None:
        import torch

        wrappable = bgr.flags.writeable and min(bgr.strides) >= 0
        if self.rows is not None and (self.pattern is None or not wrappable):
            # For a C-contiguous frame one copy per row; mode='clip' writes into `out` without
            # a temporary.
            np.take(bgr, self.rows, axis=0, out=self.out_array, mode='clip')
        elif not wrappable:
            np.copyto(self.out_array, bgr)
        elif self.pattern is None:
            self.out.copy_(torch.from_numpy(bgr))
        else:
            first, period, count, run = self.pattern
            row = bgr.strides[0]
            rows = np.lib.stride_tricks.as_strided(
                bgr[first:], shape=(count, run) + bgr.shape[1:],
                strides=(period * row, row) + bgr.strides[1:])
            self.out.copy_(torch.from_numpy(rows))


class _Stage:
    """The frame buffers of one source size and the letterbox from them into the network input.

    host: the (h, w, 3) uint8 tensor the host writes (pinned on CUDA, the device frame itself
    on the CPU), or only the frame rows `rows` (ascending int64) when not all are needed;
    host_array: its numpy view; copy_rows: frame -> host.
    """

    def __init__(self, hw: Tuple[int, int], device: torch.device,
                 letterbox_into: Callable[[torch.Tensor], Any],
                 rows: Optional[np.ndarray] = None) -> None:
        import torch

        shape = (len(rows) if rows is not None else hw[0], hw[1], 3)
        self.frame = torch.empty(shape, dtype=torch.uint8, device=device)
        self.host = (torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                     if device.type == 'cuda' else self.frame)
        self.host_array = self.host.numpy()
        # Recorded after each upload: the host waits for it before it rewrites `host`.
        self.uploaded = torch.cuda.Event() if device.type == 'cuda' else None
        self.rows = rows
        self.copy_rows = RowCopy(rows, self.host)
        self.letterbox = _Launch(lambda: letterbox_into(self.frame), 'letterbox')


class _Batch:
    """The forward and the decode of one batch size, each its own CUDA graph once captured."""

    def __init__(self, forward: Callable[[], Any], decode: Callable[[], Any]) -> None:
        self.forward = _Launch(forward, 'forward')
        self.decode = _Launch(decode, 'NMS')
        self.outputs: Dict[str, Any] = {}


class InFlight:
    """One submitted batch until it is collected (`TorchPipeline.submit` -> `collect`).

    Each of the pipeline's PIPELINE_DEPTH instances keeps its own CUDA events (the device
    stages' times), pinned mirrors of the results it downloads, and, when a later batch is
    submitted before it is collected, a device copy of its raw head output (the later forward
    rewrites the graph's output, and the exact NMS fallback reads it).
    """

    def __init__(self, cuda: bool) -> None:
        import torch

        self.marks: List[Any] = ([torch.cuda.Event(enable_timing=True) for _ in range(4)]
                                 if cuda else [0.0] * 4)
        self.host_outputs: Dict[Tuple[str, Tuple[int, ...]],
                                Tuple[torch.Tensor, np.ndarray]] = {}
        self.raw_copy: Optional[torch.Tensor] = None
        self.submitted = False
        self.transforms: Sequence[LetterboxTransform] = ()
        self.config = NmsConfig()
        self.arrays: Dict[str, np.ndarray] = {}
        self.raw: Optional[torch.Tensor] = None
        self.host_ms = 0.0


class TorchPipeline:
    """HxWx3 uint8 BGR frames -> Detections, every stage on the engine's torch device.

    engine: `runs_torch` ([b, 3, H, W] tensor -> named output tensors on its device): a
    TorchScript engine, or a TensorRT engine on torch buffers. Batches of up to its
    `max_batch` frames run in one engine call (`run_batch`).
    resize_on: 'device' (upload the frame rows the resize reads, letterbox on the device with
    OpenCV's arithmetic) or 'host' (cv2 letterbox into the pinned buffer, upload the
    network-size image);
    both give the numpy path's network input to the bit. use_graphs: capture CUDA graphs
    (default: on CUDA). postprocess: the host decoder for layouts other than RAW (named numpy
    outputs of a batch, transform, image index -> Detections).
    After each `run`, `run_batch` or `collect`, `stage_ms` holds (preprocess, infer,
    postprocess) in milliseconds.
    """

    def __init__(self, engine: Any, layout: OutputLayout,
                 postprocess: Callable[[Mapping[str, np.ndarray], LetterboxTransform, int,
                                        NmsConfig], Detections],
                 resize_on: str = 'device', use_graphs: Optional[bool] = None,
                 nms_capacity: int = NMS_CAPACITY) -> None:
        import torch

        if resize_on not in RESIZE_ON:
            raise ValueError(f'resize_on must be one of {RESIZE_ON}, got {resize_on!r}')
        self.engine = engine
        self.layout = layout
        self.resize_on = resize_on
        self.device = torch.device(engine.device)
        self.cuda = self.device.type == 'cuda'
        self.use_graphs = self.cuda if use_graphs is None else bool(use_graphs) and self.cuda
        self.nms_capacity = nms_capacity
        self.max_batch = int(engine.max_batch)
        self.fallbacks = 0
        self.stage_ms: Tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._host_postprocess = postprocess
        self._stages: collections.OrderedDict[Tuple[Tuple[int, int], int], _Stage] = \
            collections.OrderedDict()
        self._batches: Dict[int, _Batch] = {}
        self._in_flight = [InFlight(self.cuda) for _ in range(PIPELINE_DEPTH)]
        with torch.inference_mode():
            # The engine's own input tensor where it has one (TensorRT binds its address
            # once), so the letterbox writes where the engine reads.
            self.input = engine.torch_input()
            if self.input is None:
                self.input = torch.empty(engine.expected_input_shape(self.max_batch),
                                         dtype=torch_dtype(engine.inputs[0].dtype),
                                         device=self.device)
            self.input.fill_(0.5)
            self.limits = (NmsLimits(engine.outputs[0].shape[1] - 4, self.device)
                           if layout is OutputLayout.RAW else None)
            self._stream = torch.cuda.Stream(self.device) if self.cuda else None
            self._batch(1)

    def _batch(self, size: int) -> _Batch:
        """The forward and decode of `size` images, made (and captured) on first use."""
        batch = self._batches.get(size)
        if batch is not None:
            return batch
        batch = _Batch(lambda: self.engine.infer_torch(self.input[:size]),
                       lambda: self._decode_outputs(batch))
        self._batches[size] = batch
        if self.use_graphs:
            self._capture_forward_and_decode(batch)
        return batch

    def _capture_forward_and_decode(self, batch: _Batch) -> None:
        import torch

        if self.limits is not None:
            self.limits.apply(self.limits.applied or NmsConfig())
        # A pool per batch size: the graphs of different sizes never share memory.
        pool = torch.cuda.graph_pool_handle()
        if batch.forward.capture(self._stream, pool):
            batch.outputs = batch.forward.result
            if self.layout is OutputLayout.RAW:
                batch.decode.capture(self._stream, pool)

    def _decode_outputs(self, batch: _Batch) -> Dict[str, torch.Tensor]:
        if self.limits is None:
            return batch.outputs
        (output,) = batch.outputs.values()
        return {'rows': fixed_size_nms(output, self.limits, self.nms_capacity, NMS_ROUNDS)}

    def _stage(self, transform: LetterboxTransform, slot: int) -> _Stage:
        """The buffers for this frame's size in batch slot `slot`, made (and their letterbox
        into that slot captured) once."""
        size = transform.src_hw if self.resize_on == 'device' else transform.dst_hw
        key = (size, slot)
        stage = self._stages.get(key)
        if stage is not None:
            self._stages.move_to_end(key)
            return stage
        if self.resize_on == 'device':
            source = transform
        else:
            source = letterbox_transform(transform.dst_hw, transform.dst_hw)
        # The stage's closure holds the letterbox tables: a captured graph reads them.
        letterbox_into = DeviceLetterbox(source, self.device)
        rows = letterbox_into.source_rows
        out = self.input[slot:slot + 1]
        stage = _Stage(size, self.device, lambda frame: letterbox_into(frame, out),
                       rows if len(rows) < size[0] else None)
        if self.use_graphs:
            stage.letterbox.capture(self._stream)
        self._stages[key] = stage
        if len(self._stages) > KEPT_SOURCE_SIZES * self.max_batch:
            self._stages.popitem(last=False)
        return stage

    def _on_stream(self) -> ContextManager[Any]:
        """Makes the pipeline's stream the current one (CUDA; nothing on the CPU)."""
        import torch

        return torch.cuda.stream(self._stream) if self.cuda else contextlib.nullcontext()

    def _mark(self, flight: InFlight, index: int) -> None:
        if self.cuda:
            flight.marks[index].record(self._stream)
        else:
            flight.marks[index] = time.perf_counter()

    def _elapsed_ms(self, flight: InFlight, first: int, last: int) -> float:
        if self.cuda:
            return flight.marks[first].elapsed_time(flight.marks[last])
        return (flight.marks[last] - flight.marks[first]) * 1e3

    def _upload(self, stage: _Stage, bgr: np.ndarray, transform: LetterboxTransform) -> None:
        if stage.uploaded is not None:
            stage.uploaded.synchronize()  # the last upload from `host` (long done, as a rule)
        if self.resize_on == 'host':
            letterbox(bgr, transform, out=stage.host_array)
        else:
            stage.copy_rows(bgr)
        if stage.host is not stage.frame:
            stage.frame.copy_(stage.host, non_blocking=True)
            stage.uploaded.record(self._stream)

    def _download(self, flight: InFlight, tensors: Mapping[str, torch.Tensor]
                  ) -> Dict[str, np.ndarray]:
        """Device tensors -> numpy arrays (pinned mirrors of `flight` on CUDA, reused; copies
        on the CPU, where an engine may rewrite its output tensors before the collection)."""
        import torch

        if not self.cuda:
            return {name: tensor.numpy().copy() for name, tensor in tensors.items()}
        arrays = {}
        for name, tensor in tensors.items():
            key = (name, tuple(tensor.shape))
            if key not in flight.host_outputs:
                mirror = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                flight.host_outputs[key] = (mirror, mirror.numpy())
            mirror, array = flight.host_outputs[key]
            mirror.copy_(tensor, non_blocking=True)
            arrays[name] = array
        return arrays

    def _finish(self, flight: InFlight, index: int, transform: LetterboxTransform
                ) -> Detections:
        if self.limits is None:
            return self._host_postprocess(flight.arrays, transform, index, flight.config)
        packed = flight.arrays['rows'][index]
        kept, candidates, unsettled = packed[0, KEPT], packed[0, CANDIDATES], \
            packed[0, UNSETTLED]
        config = flight.config
        if candidates > packed.shape[0] - 2 or unsettled:
            self.fallbacks += 1
            rows = postprocess_torch.non_max_suppression(flight.raw[index], config).cpu().numpy()
        else:
            rows = packed[1:1 + min(int(kept), config.max_det)].copy()
        return rows_to_detections(rows, transform)

    def _keep_raw_output(self, flight: InFlight) -> None:
        """Copy `flight`'s raw head output on the device (enqueued before a later forward
        rewrites it), for its exact NMS fallback."""
        import torch

        if flight.raw is None or flight.raw is flight.raw_copy:
            return
        if flight.raw_copy is None or flight.raw_copy.shape != flight.raw.shape:
            flight.raw_copy = torch.empty_like(flight.raw)
        flight.raw = flight.raw_copy.copy_(flight.raw)

    def run(self, bgr: np.ndarray, transform: LetterboxTransform, config: NmsConfig,
            start: float) -> Detections:
        """One validated frame -> Detections; `start` is the caller's perf_counter at entry.

        Sets `stage_ms`: on CUDA, device stages from CUDA events on this pipeline's stream,
        read after the frame's one synchronisation, plus the host work around them.
        """
        return self.run_batch((bgr,), (transform,), config, start)[0]

    def run_batch(self, frames: Sequence[np.ndarray], transforms: Sequence[LetterboxTransform],
                  config: NmsConfig, start: float) -> List[Detections]:
        """Up to `max_batch` validated frames (transforms[i] of frames[i]) -> each one's
        Detections, with one engine call and one synchronisation; `stage_ms` as `run`
        sets it, for the whole batch."""
        return self.collect(self.submit(frames, transforms, config, start))

    def submit(self, frames: Sequence[np.ndarray], transforms: Sequence[LetterboxTransform],
               config: NmsConfig, start: float) -> InFlight:
        """Enqueue a batch as `run_batch` runs it, without waiting for the device; `collect`
        its result later. Frames are copied before it returns (the caller may reuse them).
        RuntimeError when PIPELINE_DEPTH batches are in flight already: collect one first.
        """
        import torch

        flight = next((flight for flight in self._in_flight if not flight.submitted), None)
        if flight is None:
            raise RuntimeError(f'{PIPELINE_DEPTH} batches are in flight: collect one first')
        with torch.inference_mode(), self._on_stream():
            for other in self._in_flight:
                if other.submitted:
                    self._keep_raw_output(other)
            stages = [self._stage(transform, slot) for slot, transform in enumerate(transforms)]
            if self.limits is not None:
                self.limits.apply(config)
            batch = self._batch(len(stages))
            enqueued = time.perf_counter()
            self._mark(flight, 0)
            for stage, bgr, transform in zip(stages, frames, transforms):
                self._upload(stage, bgr, transform)
                stage.letterbox()
            self._mark(flight, 1)
            batch.outputs = batch.forward()
            self._mark(flight, 2)
            flight.arrays = self._download(flight, batch.decode())
            self._mark(flight, 3)
        flight.raw = (next(iter(batch.outputs.values())) if self.limits is not None
                      else None)
        flight.transforms, flight.config = tuple(transforms), config
        flight.host_ms = (enqueued - start) * 1e3
        flight.submitted = True
        return flight

    def collect(self, flight: InFlight) -> List[Detections]:
        """Wait for a submitted batch and decode it: each frame's Detections, in order; sets
        `stage_ms` for the batch (the host time of its submission and of its decoding, and
        its device stages)."""
        import torch

        if not flight.submitted:
            raise RuntimeError('this batch was collected already')
        try:
            if self.cuda:
                flight.marks[3].synchronize()
            synced = time.perf_counter()
            # On the pipeline's stream: the exact NMS fallback reads the raw output copy that a
            # later submission enqueued there.
            with torch.inference_mode(), self._on_stream():
                detections = [self._finish(flight, index, transform)
                              for index, transform in enumerate(flight.transforms)]
        finally:
            flight.submitted = False
        done = time.perf_counter()
        self.stage_ms = (flight.host_ms + self._elapsed_ms(flight, 0, 1),
                         self._elapsed_ms(flight, 1, 2),
                         self._elapsed_ms(flight, 2, 3) + (done - synced) * 1e3)
        return detections
