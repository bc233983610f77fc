"""TensorRT backend: plain serialized plans and Ultralytics `.engine` files.

Works with the binding API (TensorRT <= 8.6: `num_bindings`, `execute_async_v2`) and the
named-tensor API (8.5+, the only one in 10.x/11.x: `num_io_tensors`, `execute_async_v3`),
chosen by a feature test in `_io_api`.

The I/O buffers are allocated once at load and bound once, in one of two ways:

* torch (where PyTorch sees the CUDA device): torch tensors on the device, bound by
  `data_ptr()`. `infer_torch` enqueues the engine on torch's current stream and waits for
  nothing, so a caller keeps the whole frame on the GPU (`gpu_pipeline.TorchPipeline`) and can
  capture the enqueue in a CUDA graph: the bound addresses never change, as TensorRT requires
  of a captured graph.
* cuda-python (no PyTorch with CUDA): device and pinned host buffers from the CUDA runtime
  bindings of `cuda-python`; `infer` is one stream: async copy in -> execute -> async copies
  out -> synchronize.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import pathlib
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, TYPE_CHECKING

import numpy as np

from human_detector_ros.engines.base import Engine, TensorSpec, parse_device, \
    validate_image_input
from human_detector_ros.errors import InferenceError, ModelLoadError
from human_detector_ros.model_metadata import metadata_from_mapping, split_engine_header

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)
BUFFERS = ('auto', 'torch', 'cuda-python')
KEPT_ERRORS = 20
REBUILD_HINT = (
    'Rebuild the engine on this device with this TensorRT, from the ONNX model: '
    '`trtexec --onnx=model.onnx --saveEngine=model.engine` (add --fp16 for half precision), '
    'or `yolo export model=best.pt format=engine` with Ultralytics.')
PLAN_MAGIC = b'ftrt'
"""The first bytes of a serialized TensorRT plan (8.x and newer: TensorRT's kPLAN_MAGIC_TAG)."""
MIN_PLAN_BYTES = 1024
"""Fewer bytes cannot hold a plan: even a one-layer engine carries its kernels and tensors."""


class CudaCallError(RuntimeError):
    """A CUDA runtime call returned an error code."""


def import_cudart() -> Any:
    """The CUDA runtime module of cuda-python (`cuda.bindings.runtime`, or older `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


class CudaRuntime:
    """Checked calls into the cuda-python runtime bindings (each returns `(err, *values)`)."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart

    def call(self, function: str, *args: Any) -> Any:
        """`cudart.<function>(*args)`; its value(s) after the error code, CudaCallError if any."""
        result = getattr(self.cudart, function)(*args)
        error, values = result[0], result[1:]
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise CudaCallError(f'{function} failed: {self._describe(error)}')
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def _describe(self, error: Any) -> str:
        described = self.cudart.cudaGetErrorString(error)[1]
        if isinstance(described, bytes):
            described = described.decode('utf-8', 'replace')
        return f'{getattr(error, "name", error)} ({described})'

    def host_to_device(self, device: int, host: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call('cudaMemcpyAsync', device, host, nbytes, kind, stream)

    def device_to_host(self, host: int, device: int, nbytes: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call('cudaMemcpyAsync', host, device, nbytes, kind, stream)


def torch_on_device(index: int) -> Any:
    """The torch module when PyTorch is installed and sees CUDA device `index`, else None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        return None
    return torch


def _dims(dims: Any) -> Tuple[int, ...]:
    return tuple(int(dim) for dim in dims)


class _TensorApi:
    """Named I/O tensors (TensorRT 8.5+, the only API of 10.x and 11.x), execute_async_v3."""

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._trt, self._engine, self._context = trt, engine, context
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, name: str) -> bool:
        return self._engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def engine_shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self._engine.get_tensor_shape(name))

    def trt_dtype(self, name: str) -> Any:
        return self._engine.get_tensor_dtype(name)

    def profile(self, name: str) -> Tuple[Tuple[int, ...], ...]:
        return tuple(_dims(dims) for dims in self._engine.get_tensor_profile_shape(name, 0))

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        return bool(self._context.set_input_shape(name, shape))

    def context_shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self._context.get_tensor_shape(name))

    def bind(self, addresses: Dict[str, int]) -> bool:
        return all([self._context.set_tensor_address(name, addresses[name])
                    for name in self.names])

    def execute(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v3(stream_handle))


class _BindingApi:
    """Binding indices (TensorRT <= 8.6), execute_async_v2 with the list of device pointers."""

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._engine, self._context = engine, context
        self.names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._bindings: List[int] = []

    def is_input(self, name: str) -> bool:
        return bool(self._engine.binding_is_input(self._index[name]))

    def engine_shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self._engine.get_binding_shape(self._index[name]))

    def trt_dtype(self, name: str) -> Any:
        return self._engine.get_binding_dtype(self._index[name])

    def profile(self, name: str) -> Tuple[Tuple[int, ...], ...]:
        return tuple(_dims(dims) for dims in self._engine.get_profile_shape(0, self._index[name]))

    def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
        return bool(self._context.set_binding_shape(self._index[name], shape))

    def context_shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self._context.get_binding_shape(self._index[name]))

    def bind(self, addresses: Dict[str, int]) -> bool:
        self._bindings = [addresses[name] for name in self.names]
        return True

    def execute(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v2(self._bindings, stream_handle))


def _io_api(trt: Any, engine: Any, context: Any) -> Any:
    """The one place that picks the TensorRT API generation, by feature."""
    if hasattr(engine, 'num_io_tensors'):
        return _TensorApi(trt, engine, context)
    return _BindingApi(trt, engine, context)


def _make_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps error messages (for ModelLoadError) and forwards warnings."""
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: Deque[str] = collections.deque(maxlen=KEPT_ERRORS)

        def log(self, level: Any, message: str) -> None:
            if level in errors:
                self.errors.append(message)
                LOG.debug('TensorRT error: %s', message)
            elif level == severity.WARNING:
                LOG.warning('TensorRT: %s', message)

    return _Logger()


def plan_problem(plan: memoryview) -> Optional[str]:
    """Why `plan` (a file's bytes after any Ultralytics header) cannot be a TensorRT plan, as
    far as can be told without TensorRT; None when it may be one. The text continues
    'TensorRT engine <file> ...'."""
    if not plan:
        return 'holds no TensorRT plan after its Ultralytics metadata header: it is truncated'
    start = bytes(plan[:len(PLAN_MAGIC)])
    if len(plan) < MIN_PLAN_BYTES and PLAN_MAGIC.startswith(start):
        return (f'is truncated: its TensorRT plan has {len(plan)} bytes, fewer than any plan '
                f'({MIN_PLAN_BYTES})')
    if start != PLAN_MAGIC:
        return (f'is not a TensorRT plan: it starts with {bytes(plan[:8])!r} where a plan '
                f'starts with {PLAN_MAGIC!r}')
    return None


def choose_input_shape(engine_shape: Sequence[int], profile: Sequence[Sequence[int]],
                       imgsz: Optional[Tuple[int, int]], batch: int = 1
                       ) -> Optional[Tuple[int, ...]]:
    """A [batch, 3, H, W] shape for a dynamic input within the profile's [min, max], or None.

    H, W from the metadata imgsz when the profile admits it, else the profile's opt.
    """
    low, opt, high = profile

    def fill(hw: Sequence[int]) -> Tuple[int, ...]:
        chosen = [batch, 3, hw[0], hw[1]]
        return tuple(dim if dim >= 0 else chosen[i] for i, dim in enumerate(engine_shape))

    candidates = ([fill(imgsz)] if imgsz is not None else []) + [fill(opt[2:])]
    for shape in candidates:
        if all(lo <= dim <= hi for lo, dim, hi in zip(low, shape, high)):
            return shape
    return None


@dataclass
class _Buffer:
    """One I/O tensor in cuda-python memory: device memory and a pinned mirror viewed as `host`."""

    spec: TensorSpec
    nbytes: int
    device: int
    host_address: int
    host: np.ndarray


class TensorRTEngine(Engine):
    """A TensorRT engine whose I/O buffers are allocated and bound once, at load.

    buffers: 'auto' (torch tensors where PyTorch sees the CUDA device, else cuda-python),
    'torch' or 'cuda-python' (see the module doc). `infer` works with either; `infer_torch`
    needs torch buffers (`runs_torch`).

    Batches: an engine with a dynamic batch runs each call at its own batch (at least the
    profile's min), up to max_batch clamped into the profile; one with a fixed batch N runs N,
    the frames padded up to it. The buffers hold the largest batch and never move.
    """

    backend = 'tensorrt'

    def __init__(self, model_path: pathlib.Path, device: str = 'auto',
                 buffers: str = 'auto', max_batch: int = 1) -> None:
        request = parse_device(device, model_path)
        if request.kind == 'cpu':
            raise ModelLoadError(
                f'TensorRT engine {model_path} runs on an NVIDIA GPU only, and device "cpu" '
                f'was asked for. Use device "cuda" (or "auto"), or an ONNX model on the CPU.')
        if buffers not in BUFFERS:
            raise ValueError(f'buffers must be one of {BUFFERS}, got {buffers!r}')
        blob = model_path.read_bytes()
        header, plan_offset = split_engine_header(blob, model_path)
        try:
            import tensorrt as trt
        except ImportError:
            # Where TensorRT is installed, it judges its plans; here only the plain checks can.
            problem = plan_problem(memoryview(blob)[plan_offset:])
            if problem:
                raise ModelLoadError(f'TensorRT engine {model_path} {problem}. Copy the file '
                                     f'again, or: {REBUILD_HINT}') from None
            raise ModelLoadError(
                f'Cannot load TensorRT engine {model_path}: the tensorrt Python package is not '
                f'installed. On Jetson it comes with JetPack (`sudo apt install '
                f'python3-libnvinfer`); on x86 `pip install tensorrt`. Or use the ONNX model.'
            ) from None
        self._torch = None if buffers == 'cuda-python' else torch_on_device(request.index)
        if buffers == 'torch' and self._torch is None:
            raise ModelLoadError(
                f'TensorRT engine {model_path} was asked to use torch buffers, but PyTorch is '
                f'not installed or sees no CUDA device {request.index}. Install a CUDA build of '
                f'PyTorch (on Jetson the JetPack wheel), or use buffers "auto".')
        self._cuda: Optional[CudaRuntime] = None
        if self._torch is None:
            try:
                self._cuda = CudaRuntime(import_cudart())
            except ImportError:
                raise ModelLoadError(
                    f'Cannot load TensorRT engine {model_path}: the CUDA runtime bindings are '
                    f'not installed, and no PyTorch with CUDA is either. Install them with `pip '
                    f'install cuda-python` (matching the CUDA major version of this machine), '
                    f'or a CUDA build of PyTorch.') from None
        self._device_index = request.index
        self._buffers: List[_Buffer] = []
        self._stream: Any = None
        self._tensors: Dict[str, torch.Tensor] = {}
        self._trt = trt
        self._select_device(model_path)
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if header.get('dla') is not None:
            self._runtime.DLA_core = int(header['dla'])
        self._engine = self._runtime.deserialize_cuda_engine(memoryview(blob)[plan_offset:])
        del blob
        if self._engine is None:
            said = ' '.join(self._logger.errors) or 'no reason given'
            raise ModelLoadError(
                f'TensorRT {trt.__version__} cannot deserialize engine {model_path} (TensorRT '
                f'said: {said}). An engine runs only with the TensorRT version and GPU model it '
                f'was built with, and this file may also be truncated or not an engine. '
                f'{REBUILD_HINT}')
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ModelLoadError(
                f'TensorRT could not create an execution context for {model_path} (TensorRT '
                f'said: {" ".join(self._logger.errors) or "no reason given"}); the GPU may be '
                f'out of memory.')
        self._api = _io_api(trt, self._engine, self._context)
        metadata = metadata_from_mapping(header, model_path)
        self._min_batch = 0  # the profile's min batch; 0: the batch is fixed
        batch = self._set_dynamic_input_shape(model_path, metadata.imgsz, max_batch)
        self._batch_now = batch
        inputs, outputs = self._resolved_specs(model_path)
        self._full: Dict[str, Tuple[int, ...]] = {spec.name: spec.shape
                                                  for spec in inputs + outputs}
        if self._min_batch and batch > 1:
            inputs, outputs = ([TensorSpec(spec.name, (-1,) + spec.shape[1:], spec.dtype)
                                for spec in specs] for specs in (inputs, outputs))
        super().__init__(model_path, request.cuda_name, tuple(inputs), tuple(outputs),
                         metadata, batch)
        self._allocate(model_path)

    @property
    def runs_torch(self) -> bool:
        """True with torch buffers (until `close`): `infer_torch` keeps tensors on the GPU."""
        return self._torch is not None and self._context is not None

    def _select_device(self, model_path: pathlib.Path) -> None:
        """Make the engine's device current: TensorRT deserializes and enqueues on it."""
        if self._torch is not None:
            self._torch.cuda.set_device(self._device_index)
            return
        try:
            count = self._cuda.call('cudaGetDeviceCount')
        except CudaCallError as error:
            count, reason = 0, f' ({error})'
        else:
            reason = ''
        if self._device_index >= count:
            raise ModelLoadError(
                f'TensorRT engine {model_path} needs CUDA device {self._device_index}, but this '
                f'machine has {count} usable CUDA device(s){reason}. Check the NVIDIA driver '
                f'(`nvidia-smi`, on Jetson `tegrastats`) and the device parameter.')
        self._cuda.call('cudaSetDevice', self._device_index)

    def _specs(self, shape_of: Any, model_path: pathlib.Path) -> Tuple[TensorSpec, ...]:
        specs = []
        for name in self._api.names:
            trt_dtype = self._api.trt_dtype(name)
            try:
                dtype = np.dtype(self._trt.nptype(trt_dtype))
            except TypeError:
                raise ModelLoadError(
                    f'TensorRT engine {model_path} has tensor {name!r} of type {trt_dtype}, '
                    f'which has no numpy equivalent. Build the engine with float32 or float16 '
                    f'inputs and outputs.') from None
            specs.append(TensorSpec(name, shape_of(name), dtype))
        return tuple(specs)

    def _set_dynamic_input_shape(self, model_path: pathlib.Path,
                                 imgsz: Optional[Tuple[int, int]], max_batch: int) -> int:
        """Set the largest input shape this engine will run; return its batch."""
        declared = self._specs(self._api.engine_shape, model_path)
        inputs = tuple(spec for spec in declared if self._api.is_input(spec.name))
        validate_image_input(model_path, inputs)
        spec = inputs[0]
        if -1 not in spec.shape:
            return spec.shape[0]
        profile = self._api.profile(spec.name)
        batch = spec.shape[0]
        if batch < 0:
            batch = min(max(max_batch, profile[0][0]), profile[2][0])
        shape = choose_input_shape(spec.shape, profile, imgsz, batch)
        if shape is None or not self._api.set_input_shape(spec.name, shape):
            raise ModelLoadError(
                f'TensorRT engine {model_path} has a dynamic input {spec.name} '
                f'{list(spec.shape)} whose optimization profile (min, opt, max = '
                f'{[list(dims) for dims in profile]}) admits no [{batch}, 3, H, W] shape the '
                f'detector can use (metadata imgsz {imgsz}). {REBUILD_HINT}')
        if spec.shape[0] < 0:
            self._min_batch = max(1, profile[0][0])
        return batch

    def run_batch(self, batch: int) -> int:
        """The batch the engine runs for `batch` frames: its fixed batch, else at least the
        profile's min."""
        return max(batch, self._min_batch) if self._min_batch else self.max_batch

    def _use_batch(self, batch: int) -> None:
        """Set a dynamic input to `batch` images (a host call, only when it changes)."""
        if not self._min_batch or batch == self._batch_now:
            return
        spec = self.inputs[0]
        if not self._api.set_input_shape(spec.name, (batch,) + self._full[spec.name][1:]):
            raise self._execution_failed()
        self._batch_now = batch

    def _resolved_specs(self, model_path: pathlib.Path
                        ) -> Tuple[Tuple[TensorSpec, ...], Tuple[TensorSpec, ...]]:
        specs = self._specs(self._api.context_shape, model_path)
        for spec in specs:
            if any(dim < 0 for dim in spec.shape):
                raise ModelLoadError(
                    f'TensorRT engine {model_path} has tensor {spec.name} of shape '
                    f'{list(spec.shape)} even with the input shape set; data-dependent output '
                    f'shapes are not supported. {REBUILD_HINT}')
        inputs = tuple(spec for spec in specs if self._api.is_input(spec.name))
        outputs = tuple(spec for spec in specs if not self._api.is_input(spec.name))
        return inputs, outputs

    def _allocate(self, model_path: pathlib.Path) -> None:
        """Allocate the I/O buffers and bind their addresses, once for the engine's life."""
        try:
            if self._torch is not None:
                addresses = self._allocate_tensors()
            else:
                addresses = self._allocate_cuda_python()
        except (CudaCallError, RuntimeError) as error:  # torch's out-of-memory: RuntimeError
            self.close()
            raise ModelLoadError(
                f'Cannot allocate GPU buffers for TensorRT engine {model_path}: {error}. The GPU '
                f'may be out of memory.') from None
        if not self._api.bind(addresses):
            self.close()
            raise ModelLoadError(
                f'TensorRT rejected the buffer addresses for {model_path} (TensorRT said: '
                f'{" ".join(self._logger.errors) or "no reason given"}).')

    def _allocate_tensors(self) -> Dict[str, int]:
        torch = self._torch
        device = torch.device(self.device)
        for spec in self.inputs + self.outputs:
            dtype = torch.from_numpy(np.empty(0, spec.dtype)).dtype
            self._tensors[spec.name] = torch.zeros(self._full[spec.name], dtype=dtype,
                                                   device=device)
        # `infer` runs on a stream of its own: TensorRT synchronizes around the default one.
        self._stream = torch.cuda.Stream(device)
        return {name: tensor.data_ptr() for name, tensor in self._tensors.items()}

    def _allocate_cuda_python(self) -> Dict[str, int]:
        self._stream = self._cuda.call('cudaStreamCreate')
        for spec in self.inputs + self.outputs:
            shape = self._full[spec.name]
            nbytes = int(np.prod(shape)) * spec.dtype.itemsize
            buffer = _Buffer(spec, nbytes, 0, 0, np.empty(0))
            self._buffers.append(buffer)
            buffer.device = self._cuda.call('cudaMalloc', nbytes)
            buffer.host_address = self._cuda.call('cudaMallocHost', nbytes)
            raw = (ctypes.c_uint8 * nbytes).from_address(buffer.host_address)
            buffer.host = np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
        return {buffer.spec.name: buffer.device for buffer in self._buffers}

    def _execution_failed(self) -> InferenceError:
        said = ' '.join(list(self._logger.errors)[-3:]) or 'no reason given'
        return InferenceError(
            f'TensorRT execution of {self.model_path.name} failed (TensorRT said: {said}).')

    def torch_input(self) -> Optional[torch.Tensor]:
        """The bound input tensor, [max_batch, 3, H, W] (torch buffers, else None):
        `infer_torch` reads it in place.

        A caller that writes the network input here (the first b rows for b images) saves
        `infer_torch` a copy.
        """
        return self._tensors.get(self.inputs[0].name)

    def infer_torch(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """[b, 3, H, W] torch tensor -> {output name: the first b rows of the engine's bound
        output tensor}.

        Enqueued on torch's current stream of the engine's device; nothing is waited for. Make
        that a stream of your own: TensorRT synchronizes around the default stream.
        `images` (any device and float dtype) is copied into `torch_input()` unless it is
        that tensor's first rows. A dynamic batch is set on the context when it changes. The
        outputs are the engine's own tensors, overwritten by the next call. The bound
        addresses never change, so a CUDA graph may capture this call (after one call
        outside the capture, as TensorRT asks). Raises InferenceError on a wrong shape, when
        TensorRT refuses to enqueue, when closed, or without torch buffers.
        """
        if not self.runs_torch:
            raise InferenceError(
                f'TensorRT engine {self.model_path.name} cannot run torch tensors: it is '
                f'closed, or was loaded with cuda-python buffers (no PyTorch with CUDA).')
        self.check_shape(tuple(images.shape))
        torch = self._torch
        batch = images.shape[0]
        source = self._tensors[self.inputs[0].name]
        with torch.cuda.device(self._device_index):
            if images.data_ptr() != source.data_ptr() or images.device != source.device:
                source[:batch].copy_(images, non_blocking=True)
            self._use_batch(self.run_batch(batch))
            if not self._api.execute(torch.cuda.current_stream().cuda_stream):
                raise self._execution_failed()
        return {spec.name: self._tensors[spec.name][:batch] if self._batched(spec.name)
                else self._tensors[spec.name] for spec in self.outputs}

    def _batched(self, name: str) -> bool:
        """Whether output `name` leads with the batch (as the input does)."""
        return self._full[name][:1] == self._full[self.inputs[0].name][:1]

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[b, 3, H, W] array -> {output name: its first b rows, copied out of the engine's
        buffers}."""
        if self._context is None:
            raise InferenceError(f'TensorRT engine {self.model_path.name} is closed.')
        self.check_shape(images.shape)
        batch, run = images.shape[0], self.run_batch(images.shape[0])
        if self._torch is not None:
            host = self.check_images(images)
            torch = self._torch
            with torch.cuda.stream(self._stream):
                outputs = self.infer_torch(torch.from_numpy(
                    host if host.flags.writeable else host.copy()))
                return {name: (tensor[:batch] if self._batched(name) else tensor).cpu().numpy()
                        for name, tensor in outputs.items()}
        source = self._buffers[0]
        np.copyto(source.host[:batch], images, casting='same_kind')
        cuda, stream = self._cuda, self._stream
        try:
            cuda.call('cudaSetDevice', self._device_index)
            cuda.host_to_device(source.device, source.host_address,
                                source.nbytes // source.host.shape[0] * run, stream)
            self._use_batch(run)
            if not self._api.execute(int(stream)):
                raise self._execution_failed()
            outputs = self._buffers[len(self.inputs):]
            for buffer in outputs:
                nbytes = buffer.nbytes // buffer.host.shape[0] * run \
                    if self._batched(buffer.spec.name) else buffer.nbytes
                cuda.device_to_host(buffer.host_address, buffer.device, nbytes, stream)
            cuda.call('cudaStreamSynchronize', stream)
        except CudaCallError as error:
            raise InferenceError(f'CUDA error in TensorRT engine {self.model_path.name}: '
                                 f'{error}') from None
        return {buffer.spec.name: (buffer.host[:batch] if self._batched(buffer.spec.name)
                                   else buffer.host).copy() for buffer in outputs}

    def close(self) -> None:
        """Free the buffers and the stream; drop context, engine, runtime."""
        self._context = None
        self._engine = None
        self._runtime = None
        self._tensors = {}
        if self._cuda is None:
            self._stream = None  # torch frees its memory with the last reference
            return
        failures = []
        for buffer in self._buffers:
            for function, address in (('cudaFree', buffer.device),
                                      ('cudaFreeHost', buffer.host_address)):
                if address:
                    try:
                        self._cuda.call(function, address)
                    except CudaCallError as error:
                        failures.append(str(error))
        self._buffers = []
        if self._stream is not None:
            try:
                self._cuda.call('cudaStreamDestroy', self._stream)
            except CudaCallError as error:
                failures.append(str(error))
            self._stream = None
        if failures:
            LOG.warning('Releasing TensorRT buffers of %s: %s', self.model_path,
                        '; '.join(failures))
