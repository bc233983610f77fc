"""STAND-IN for the `tensorrt` Python module, for tests without a GPU or TensorRT.

Not NVIDIA code. `build_module(version)` returns a module object whose classes have exactly
the methods of that TensorRT generation, so feature tests (`hasattr`) behave as on real
TensorRT:

* < 8.5 (e.g. 8.4.3): binding API only - `num_bindings`, `get_binding_name`,
  `binding_is_input`, `get_binding_shape/dtype`, `get_profile_shape`;
  context `set_binding_shape`, `get_binding_shape`, `execute_async_v2`.
* 8.5 to 9.x (e.g. 8.6.1): the binding API and the named-tensor API together.
* >= 10 (e.g. 10.3.0): named-tensor API only - `num_io_tensors`, `get_tensor_name/mode/
  shape/dtype`, `get_tensor_profile_shape`; context `set_input_shape`, `get_tensor_shape`,
  `set_tensor_address`, `execute_async_v3`.

The builder side (`Builder`, `OnnxParser`, ...) is in `builder.py`.

A "plan" is this stand-in's own format (see `plan_bytes`): a magic line and JSON naming the
TensorRT version and compute capability it was "built" for, every I/O tensor (mode, dtype,
declared shape with -1 for dynamic dimensions, the shape it has at run time, the profile of
dynamic inputs) and the ONNX model that does the computation (its path, or for a plan from the
stand-in builder its SHA-256, with the model's bytes after the JSON line, so the plan is
self-contained like a real one). `Runtime.deserialize_cuda_engine`
returns None and logs an error through the ILogger, as TensorRT does, for a plan of another
version or device or one that does not parse.

Execution is real. A plan made by `gpu.gpu_plan_bytes` names a TorchScript module instead,
which `gpu.GpuExecution` runs on a real GPU on the caller's stream (see gpu.py). Otherwise
`execute_async_v2/v3` synchronizes the stream, copies each input from the
device address the caller bound (binding list or `set_tensor_address`) through the CUDA
runtime module the backend uses (the cudart stand-in, or the real one), converts it from the
declared dtype, runs the ONNX model with onnxruntime, converts the outputs to their declared
dtypes and copies them to the bound output addresses. The arithmetic is float32 inside even
for float16 engines; only the I/O precision is modelled.
"""
from __future__ import annotations

import collections
import enum
import importlib.machinery
import json
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

PLAN_MAGIC = b'TRT-STANDIN-PLAN\n'
DEFAULT_COMPUTE_CAPABILITY = '8.7'
_SESSIONS: Dict[str, Any] = {}
# Models carried inside plans built by the stand-in builder, by their 'sha256:...' key.
EMBEDDED_MODELS: Dict[str, bytes] = {}


def onnx_session(onnx_path: str) -> Any:
    """One shared CPU onnxruntime session per ONNX file or embedded model (loading the model
    takes a second)."""
    if onnx_path not in _SESSIONS:
        import onnxruntime
        _SESSIONS[onnx_path] = onnxruntime.InferenceSession(
            EMBEDDED_MODELS.get(onnx_path, onnx_path), providers=['CPUExecutionProvider'])
    return _SESSIONS[onnx_path]


def plan_bytes(onnx_path: str, version: str, dtype: str = 'float32', dynamic: bool = False,
               compute_capability: str = DEFAULT_COMPUTE_CAPABILITY,
               profile: Optional[Sequence[Sequence[int]]] = None,
               tensors: Optional[List[Dict[str, Any]]] = None, batch: int = 1) -> bytes:
    """A stand-in plan for `onnx_path` with all float I/O in `dtype`.

    dynamic: the input is declared [-1, 3, -1, -1] with profile `profile` (default min
    [1, 3, 32, 32], opt = max = the model's shape at batch `batch`), outputs [-1, C, -1] until
    the input shape is set. Not dynamic: every tensor has the fixed batch `batch` (a batch-1
    ONNX model then runs once per image, as an engine built for that batch computes the
    same). `tensors` replaces the derived tensor list (to describe unusual engines).
    """
    if tensors is None:
        session = onnx_session(onnx_path)
        tensors = []
        for mode, nodes in (('input', session.get_inputs()), ('output', session.get_outputs())):
            for node in nodes:
                shape = [batch] + [int(dim) for dim in node.shape[1:]]
                declared = list(shape)
                # Integer tensors (EfficientNMS counts and classes) keep their own type.
                own = {'tensor(int32)': 'int32', 'tensor(int64)': 'int64'}.get(node.type)
                entry: Dict[str, Any] = {'name': node.name, 'mode': mode,
                                         'dtype': own or dtype, 'runtime_shape': shape}
                if dynamic:
                    dims = (0, 2, 3) if mode == 'input' else (0, len(shape) - 1)
                    for dim in dims:
                        declared[dim] = -1
                    if mode == 'input':
                        entry['profile'] = [list(dims) for dims in profile] if profile else [
                            [1, 3, 32, 32], shape, shape]
                entry['shape'] = declared
                tensors.append(entry)
    header = {'tensorrt_version': version, 'compute_capability': compute_capability,
              'onnx': onnx_path, 'tensors': tensors}
    return PLAN_MAGIC + json.dumps(header).encode('utf-8')


def ultralytics_engine_bytes(plan: bytes, metadata: Dict[str, Any]) -> bytes:
    """An Ultralytics-style .engine file: 4-byte little-endian length, JSON metadata, plan."""
    meta = json.dumps(metadata).encode('utf-8')
    return len(meta).to_bytes(4, byteorder='little') + meta + plan


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _generation(version: str) -> Tuple[bool, bool]:
    """(has binding API, has named-tensor API) for a TensorRT version string."""
    major, minor = (int(part) for part in version.split('.')[:2])
    return (major, minor) < (10, 0), (major, minor) >= (8, 5)


def build_module(version: str = '10.3.0',
                 compute_capability: str = DEFAULT_COMPUTE_CAPABILITY) -> types.ModuleType:
    """A `tensorrt` module object of TensorRT generation `version` (see the module doc)."""
    has_bindings, has_tensors = _generation(version)
    module = types.ModuleType('tensorrt', __doc__)
    # importlib.util.find_spec('tensorrt') (torch._dynamo asks) needs a spec to return.
    module.__spec__ = importlib.machinery.ModuleSpec('tensorrt', None)
    module.__version__ = version
    module.calls = {}
    module.streams = collections.deque(maxlen=100)  # the stream handles of recent enqueues

    def count(name: str) -> None:
        module.calls[name] = module.calls.get(name, 0) + 1

    class ILogger:
        class Severity(enum.IntEnum):
            INTERNAL_ERROR = 0
            ERROR = 1
            WARNING = 2
            INFO = 3
            VERBOSE = 4

        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        INTERNAL_ERROR = ILogger.Severity.INTERNAL_ERROR
        ERROR = ILogger.Severity.ERROR
        WARNING = ILogger.Severity.WARNING
        INFO = ILogger.Severity.INFO
        VERBOSE = ILogger.Severity.VERBOSE

        def __init__(self, min_severity: Any = ILogger.Severity.WARNING) -> None:
            ILogger.__init__(self)
            self.min_severity = min_severity

        def log(self, severity: Any, msg: str) -> None:
            if severity <= self.min_severity:
                print(f'[TRT] [{severity.name[0]}] {msg}', file=sys.stderr)

    members = {'FLOAT': 0, 'HALF': 1, 'INT8': 2, 'INT32': 3, 'BOOL': 4}
    if not has_bindings:
        members.update({'INT64': 9, 'BF16': 7})
    DataType = enum.IntEnum('DataType', members)
    numpy_types = {'FLOAT': np.float32, 'HALF': np.float16, 'INT8': np.int8,
                   'INT32': np.int32, 'BOOL': np.bool_, 'INT64': np.int64}
    by_numpy = {np.dtype(value).name: key for key, value in numpy_types.items()}

    def nptype(trt_type: Any) -> type:
        if trt_type.name not in numpy_types:
            raise TypeError('Could not resolve TensorRT datatype to an equivalent numpy '
                            'datatype.')
        return numpy_types[trt_type.name]

    class Dims:
        def __init__(self, dims: Sequence[int]) -> None:
            self._dims = tuple(int(dim) for dim in dims)

        def __len__(self) -> int:
            return len(self._dims)

        def __getitem__(self, index: int) -> int:
            return self._dims[index]

        def __iter__(self) -> Any:
            return iter(self._dims)

        def __repr__(self) -> str:
            return repr(self._dims)

    class TensorIOMode(enum.IntEnum):
        NONE = 0
        INPUT = 1
        OUTPUT = 2

    class _Tensor:
        def __init__(self, entry: Dict[str, Any]) -> None:
            self.name = entry['name']
            self.is_input = entry['mode'] == 'input'
            self.dtype = DataType[by_numpy[entry['dtype']]]
            self.numpy_dtype = np.dtype(entry['dtype'])
            self.shape = tuple(entry['shape'])
            self.runtime_shape = tuple(entry['runtime_shape'])
            profile = entry.get('profile') or [self.shape] * 3
            self.profile = tuple(tuple(dims) for dims in profile)

    class _EngineCore:
        def __init__(self, plan: Dict[str, Any], logger: ILogger) -> None:
            self.plan = plan
            self.logger = logger
            self.tensors = [_Tensor(entry) for entry in plan['tensors']]
            self.by_name = {tensor.name: tensor for tensor in self.tensors}
            self.num_optimization_profiles = 1

        def create_execution_context(self) -> Any:
            count('create_execution_context')
            return ExecutionContext(self)

    class _BindingEngine:
        @property
        def num_bindings(self) -> int:
            return len(self.tensors)

        def get_binding_name(self, index: int) -> str:
            return self.tensors[index].name

        def get_binding_index(self, name: str) -> int:
            return [tensor.name for tensor in self.tensors].index(name)

        def binding_is_input(self, index: int) -> bool:
            return self.tensors[index].is_input

        def get_binding_shape(self, index: int) -> Dims:
            return Dims(self.tensors[index].shape)

        def get_binding_dtype(self, index: int) -> DataType:
            return self.tensors[index].dtype

        def get_profile_shape(self, profile_index: int, binding: int) -> List[Dims]:
            return [Dims(dims) for dims in self.tensors[binding].profile]

    class _TensorEngine:
        @property
        def num_io_tensors(self) -> int:
            return len(self.tensors)

        def get_tensor_name(self, index: int) -> str:
            return self.tensors[index].name

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode.INPUT if self.by_name[name].is_input else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self.by_name[name].shape)

        def get_tensor_dtype(self, name: str) -> DataType:
            return self.by_name[name].dtype

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
            return [Dims(dims) for dims in self.by_name[name].profile]

    class _ContextCore:
        def __init__(self, engine: Any) -> None:
            self.engine = engine
            self.shapes = {tensor.name: tensor.shape for tensor in engine.tensors
                           if tensor.is_input}
            self.addresses: Dict[str, int] = {}
            self.gpu = None
            if 'torchscript' in engine.plan:
                from tensorrt_standin.gpu import GpuExecution
                self.gpu = GpuExecution(engine.plan, self._error, self._warn)

        def _error(self, message: str) -> None:
            self.engine.logger.log(ILogger.Severity.ERROR, message)

        def _warn(self, message: str) -> None:
            self.engine.logger.log(ILogger.Severity.WARNING, message)

        def _set_shape(self, name: str, shape: Sequence[int]) -> bool:
            tensor = self.engine.by_name[name]
            shape = tuple(int(dim) for dim in shape)
            low, _, high = tensor.profile
            fits = len(shape) == len(tensor.shape) and all(
                (declared == -1 and lo <= dim <= hi) or declared == dim
                for declared, lo, dim, hi in zip(tensor.shape, low, shape, high))
            if not tensor.is_input or not fits:
                self._error(f'IExecutionContext::setInputShape: Error Code 3: API Usage Error '
                            f'(Parameter check failed, condition: {name} {list(shape)} within '
                            f'profile {[list(dims) for dims in tensor.profile]}.)')
                return False
            self.shapes[name] = shape
            return True

        def _run_shape(self, tensor: Any) -> Tuple[int, ...]:
            """The shape `tensor` runs at: its runtime shape, with the input's batch where
            its batch is dynamic (the stand-in runs one image size, any batch)."""
            if tensor.shape[0] != -1:
                return tensor.runtime_shape
            batch = next(iter(self.shapes.values()))[0]
            return (batch,) + tensor.runtime_shape[1:]

        def _shape(self, name: str) -> Dims:
            tensor = self.engine.by_name[name]
            if tensor.is_input:
                return Dims(self.shapes[name])
            if any(-1 in shape for shape in self.shapes.values()):
                return Dims(tensor.shape)
            return Dims(self._run_shape(tensor))

        def _run_onnx(self, session: Any, feeds: Dict[str, np.ndarray],
                      names: List[str]) -> List[np.ndarray]:
            """The ONNX model on `feeds`; one image at a time where the model's batch is a
            fixed 1 and the engine's is not (the same arithmetic per image)."""
            declared = session.get_inputs()[0].shape[0]
            batch = next(iter(feeds.values())).shape[0]
            if declared != 1 or batch == 1:
                return session.run(names, feeds)
            parts = [session.run(names, {name: value[i:i + 1] for name, value in feeds.items()})
                     for i in range(batch)]
            return [np.concatenate(pieces) for pieces in zip(*parts)]

        def _execute(self, addresses: Dict[str, int], stream_handle: Any) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError('execute_async(): incompatible function arguments: '
                                'stream_handle must be an int')
            module.streams.append(stream_handle)
            for name, shape in self.shapes.items():
                if -1 in shape:
                    self._error(f'IExecutionContext::enqueue: Error Code 3: API Usage Error '
                                f'(input shape of {name} not specified)')
                    return False
            for tensor in self.engine.tensors:
                if not addresses.get(tensor.name):
                    self._error(f'IExecutionContext::enqueue: Error Code 3: API Usage Error '
                                f'(Address is not set for tensor {tensor.name}.)')
                    return False
                if tuple(self._shape(tensor.name)) != self._run_shape(tensor):
                    self._error(f'stand-in engine runs {tensor.name} at '
                                f'{list(tensor.runtime_shape[1:])} only')
                    return False
            if self.gpu is not None:
                shapes = {tensor.name: self._run_shape(tensor) for tensor in self.engine.tensors}
                return self.gpu(self.engine.tensors, addresses, shapes, stream_handle)
            cudart = _cudart()
            success = cudart.cudaError_t.cudaSuccess
            status = cudart.cudaStreamSynchronize(stream_handle)[0]
            to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            session = onnx_session(self.engine.plan['onnx'])
            onnx_types = {node.name: node.type for node in session.get_inputs()}
            feeds = {}
            for tensor in self.engine.tensors:
                if tensor.is_input and status == success:
                    host = np.empty(self._run_shape(tensor), tensor.numpy_dtype)
                    status = cudart.cudaMemcpy(host.ctypes.data, addresses[tensor.name],
                                               host.nbytes, to_host)[0]
                    onnx_dtype = np.float16 if onnx_types[tensor.name] == 'tensor(float16)' \
                        else np.float32
                    feeds[tensor.name] = host.astype(onnx_dtype)
            if status != success:
                self._error('Error Code 1: Cuda Runtime (an illegal memory access was '
                            f'encountered: {status!r})')
                return False
            outputs = [tensor for tensor in self.engine.tensors if not tensor.is_input]
            results = self._run_onnx(session, feeds, [tensor.name for tensor in outputs])
            for tensor, result in zip(outputs, results):
                data = np.ascontiguousarray(result, dtype=tensor.numpy_dtype)
                status = cudart.cudaMemcpy(addresses[tensor.name], data.ctypes.data,
                                           data.nbytes, to_device)[0]
                if status != success:
                    self._error('Error Code 1: Cuda Runtime (an illegal memory access was '
                                f'encountered: {status!r})')
                    return False
            return True

    class _BindingContext:
        def set_binding_shape(self, binding: int, shape: Sequence[int]) -> bool:
            count('set_binding_shape')
            return self._set_shape(self.engine.tensors[binding].name, shape)

        def get_binding_shape(self, binding: int) -> Dims:
            return self._shape(self.engine.tensors[binding].name)

        def execute_async_v2(self, bindings: Sequence[int], stream_handle: int,
                             input_consumed: Any = None) -> bool:
            count('execute_async_v2')
            if len(bindings) != len(self.engine.tensors):
                self._error('IExecutionContext::enqueueV2: Error Code 3: API Usage Error '
                            '(wrong number of bindings)')
                return False
            addresses = {tensor.name: int(address)
                         for tensor, address in zip(self.engine.tensors, bindings)}
            return self._execute(addresses, stream_handle)

    class _TensorContext:
        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            count('set_input_shape')
            return self._set_shape(name, shape)

        def get_tensor_shape(self, name: str) -> Dims:
            return self._shape(name)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            count('set_tensor_address')
            if name not in self.engine.by_name:
                self._error(f'IExecutionContext::setTensorAddress: Error Code 3: API Usage '
                            f'Error (no tensor named {name})')
                return False
            self.addresses[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self.addresses.get(name, 0)

        def execute_async_v3(self, stream_handle: int) -> bool:
            count('execute_async_v3')
            return self._execute(self.addresses, stream_handle)

    engine_bases: Tuple[type, ...] = (_EngineCore,)
    context_bases: Tuple[type, ...] = (_ContextCore,)
    if has_bindings:
        engine_bases += (_BindingEngine,)
        context_bases += (_BindingContext,)
    if has_tensors:
        engine_bases += (_TensorEngine,)
        context_bases += (_TensorContext,)
    ICudaEngine = type('ICudaEngine', engine_bases, {})
    ExecutionContext = type('IExecutionContext', context_bases, {})

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError('Runtime(): incompatible constructor arguments: logger must be '
                                'a tensorrt.ILogger')
            self.logger = logger
            self.DLA_core = -1
            module.runtimes.append(self)

        def __enter__(self) -> 'Runtime':
            return self

        def __exit__(self, *exc_info: Any) -> None:
            pass

        def _fail(self, message: str) -> None:
            self.logger.log(ILogger.Severity.ERROR, message)
            self.logger.log(ILogger.Severity.ERROR, 'IRuntime::deserializeCudaEngine: Error '
                            'Code 4: Internal Error (Engine deserialization failed.)')

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Optional[Any]:
            count('deserialize_cuda_engine')
            blob = bytes(memoryview(serialized_engine))
            if not blob.startswith(PLAN_MAGIC):
                self._fail('IRuntime::deserializeCudaEngine: Error Code 1: Serialization '
                           '(Serialization assertion plan->header.magicTag == '
                           'rt::kPLAN_MAGIC_TAG failed.)')
                return None
            header, _, model = blob[len(PLAN_MAGIC):].partition(b'\n')
            try:
                plan = json.loads(header.decode('utf-8'))
            except (UnicodeDecodeError, ValueError):
                plan = None
            if plan is None or len(model) != plan.get('onnx_bytes', 0):
                self._fail('IRuntime::deserializeCudaEngine: Error Code 1: Serialization '
                           '(Serialization assertion: the plan is truncated.)')
                return None
            if plan['tensorrt_version'] != version:
                self._fail(f'The engine plan file is not compatible with this version of '
                           f'TensorRT, expecting library version {version} got '
                           f'{plan["tensorrt_version"]}, please rebuild.')
                return None
            if plan['compute_capability'] != compute_capability:
                self._fail(f'The engine plan file is generated on an incompatible device, '
                           f'expecting compute {compute_capability} got compute '
                           f'{plan["compute_capability"]}, please rebuild.')
                return None
            if model:
                EMBEDDED_MODELS[plan['onnx']] = model
            return ICudaEngine(plan, self.logger)

    def volume(shape: Sequence[int]) -> int:
        return int(np.prod(list(shape)))

    module.runtimes = []
    for name, value in (('ILogger', ILogger), ('Logger', Logger), ('DataType', DataType),
                        ('nptype', nptype), ('Dims', Dims), ('ICudaEngine', ICudaEngine),
                        ('IExecutionContext', ExecutionContext), ('Runtime', Runtime),
                        ('volume', volume), ('float32', DataType.FLOAT),
                        ('float16', DataType.HALF), ('int32', DataType.INT32)):
        setattr(module, name, value)
    if has_tensors:
        module.TensorIOMode = TensorIOMode
    from tensorrt_standin.builder import add_builder_api
    add_builder_api(module, version, compute_capability)
    return module
