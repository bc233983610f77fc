"""STAND-IN for the builder side of the `tensorrt` module: Builder, OnnxParser, builder config.

Not NVIDIA code. `add_builder_api(module, version, compute_capability)` adds to a stand-in
`tensorrt` module (trt.py) the build classes of that TensorRT generation, with the members
that feature tests look for:

* < 10 (8.x): `NetworkDefinitionCreationFlag.EXPLICIT_BATCH`; a network created without it
  has an implicit batch dimension, which the ONNX parser refuses, as in 8.x.
  `Builder.max_batch_size`, `IBuilderConfig.max_workspace_size` beside
  `set_memory_pool_limit`.
* 10.x: EXPLICIT_BATCH still exists (deprecated, ignored) and STRONGLY_TYPED; no
  `max_batch_size` or `max_workspace_size`; `IProgressMonitor` and
  `IBuilderConfig.progress_monitor`.
* >= 11: strong typing only: no `BuilderFlag.FP16`, no `Builder.platform_has_fast_fp16`, no
  EXPLICIT_BATCH.

What matters behaves as in TensorRT. `OnnxParser.parse` returns False, logs an error and
records ParserErrors (`desc`, `code`, `node`) for a model that does not load (checked by
loading it in onnxruntime). `build_serialized_network` returns None and logs an ERROR through
the ILogger for a network that was not parsed, one with dynamic inputs and no optimization
profile, or when `module.standin_build_error` is set (a build failing for reasons the
stand-in cannot produce, such as GPU memory running out). Otherwise it returns a plan that the
stand-in Runtime deserializes and runs: the ONNX model's bytes ride inside it, so the plan is
self-contained. Building takes no time; the precision is recorded in the plan, the arithmetic
stays float32 (see trt.py). `module.builds` counts `build_serialized_network` calls, and
`module.platform_fast_fp16` is what `Builder.platform_has_fast_fp16` answers.
"""
from __future__ import annotations

import enum
import hashlib
import json
import types
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ONNX_DTYPES = {'tensor(float)': 'float32', 'tensor(float16)': 'float16'}


def add_builder_api(module: types.ModuleType, version: str, compute_capability: str) -> None:
    """Add the builder classes of TensorRT `version` to the stand-in `module`."""
    from tensorrt_standin.trt import PLAN_MAGIC
    major = int(version.split('.')[0])
    ILogger, DataType, Dims = module.ILogger, module.DataType, module.Dims
    module.builds = 0
    module.standin_build_error = None
    module.platform_fast_fp16 = True

    creation_flags: Dict[str, int] = {}
    if major < 11:
        creation_flags['EXPLICIT_BATCH'] = 0
    if major >= 10:
        creation_flags['STRONGLY_TYPED'] = 1
    NetworkDefinitionCreationFlag = enum.IntEnum('NetworkDefinitionCreationFlag',
                                                 creation_flags)
    builder_flags = {'DEBUG': 2, 'GPU_FALLBACK': 3, 'REFIT': 4, 'TF32': 6}
    if major < 11:
        builder_flags.update({'FP16': 0, 'INT8': 1})
    BuilderFlag = enum.IntEnum('BuilderFlag', builder_flags)
    MemoryPoolType = enum.IntEnum('MemoryPoolType', {'WORKSPACE': 0, 'DLA_MANAGED_SRAM': 1,
                                                     'DLA_LOCAL_DRAM': 2, 'DLA_GLOBAL_DRAM': 3})
    ErrorCode = enum.IntEnum('ErrorCode', {
        'SUCCESS': 0, 'INTERNAL_ERROR': 1, 'MEM_ALLOC_FAILED': 2, 'MODEL_DESERIALIZE_FAILED': 3,
        'INVALID_VALUE': 4, 'INVALID_GRAPH': 5, 'INVALID_NODE': 6, 'UNSUPPORTED_GRAPH': 7,
        'UNSUPPORTED_NODE': 8})

    class ParserError:
        def __init__(self, code: Any, desc: str) -> None:
            self._code, self._desc = code, desc

        def code(self) -> Any:
            return self._code

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return -1

        def file(self) -> str:
            return 'ModelImporter.cpp'

        def line(self) -> int:
            return 0

        def func(self) -> str:
            return 'parse'

        def __str__(self) -> str:
            return f'{self.file()}:{self.line()} In function {self.func()}:\n' \
                   f'[{int(self._code)}] {self._desc}'

    if major >= 10:
        ParserError.node_name = lambda self: ''
        ParserError.node_operator = lambda self: ''

    class ITensor:
        def __init__(self, name: str, shape: Sequence[int], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, Dims(shape), dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            explicit = 1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH \
                if major < 10 else 0
            self.implicit_batch = major < 10 and not flags & explicit
            self.inputs: List[ITensor] = []
            self.outputs: List[ITensor] = []
            self.model: Optional[bytes] = None
            self.session: Any = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self.outputs[index]

    if major < 10:
        INetworkDefinition.has_implicit_batch_dimension = property(
            lambda self: self.implicit_batch)

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: Dict[str, List[List[int]]] = {}

        def set_shape(self, input: str, min: Sequence[int], opt: Sequence[int],
                      max: Sequence[int]) -> None:
            self.shapes[input] = [list(min), list(opt), list(max)]

        def get_shape(self, input: str) -> List[Dims]:
            return [Dims(dims) for dims in self.shapes.get(input, [])]

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags_set: set = set()
            self.pool_limits: Dict[Any, int] = {}
            self.profiles: List[IOptimizationProfile] = []
            if major >= 10:
                self.progress_monitor = None

        def set_flag(self, flag: Any) -> None:
            self.flags_set.add(BuilderFlag(flag))

        def get_flag(self, flag: Any) -> bool:
            return BuilderFlag(flag) in self.flags_set

        def clear_flag(self, flag: Any) -> None:
            self.flags_set.discard(BuilderFlag(flag))

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self.pool_limits[MemoryPoolType(pool)] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self.pool_limits.get(MemoryPoolType(pool), 0)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    if major < 10:
        IBuilderConfig.max_workspace_size = property(
            lambda self: self.pool_limits.get(MemoryPoolType.WORKSPACE, 0),
            lambda self, size: self.pool_limits.__setitem__(MemoryPoolType.WORKSPACE,
                                                            int(size)))

    class IHostMemory(bytes):
        """The serialized engine; supports the buffer protocol like TensorRT's."""

        @property
        def nbytes(self) -> int:
            return len(self)

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError('OnnxParser(): incompatible constructor arguments')
            self.network, self.logger = network, logger
            self._errors: List[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors.clear()

        def _fail(self, code: Any, desc: str) -> bool:
            self._errors.append(ParserError(code, desc))
            self.logger.log(ILogger.Severity.ERROR, f'ModelImporter.cpp: {desc}')
            return False

        def parse(self, model: Any, path: Optional[str] = None) -> bool:
            data = bytes(memoryview(model))
            if self.network.implicit_batch:
                return self._fail(ErrorCode.INVALID_GRAPH, (
                    'This version of the ONNX parser only supports TensorRT '
                    'INetworkDefinitions with an explicit batch dimension. Please ensure the '
                    'network was created using the EXPLICIT_BATCH '
                    'NetworkDefinitionCreationFlag.'))
            import onnxruntime
            try:
                session = onnxruntime.InferenceSession(data,
                                                       providers=['CPUExecutionProvider'])
            except Exception as error:  # onnxruntime raises its own exception types
                return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED,
                                  f'Failed to parse ONNX model: {error}')
            network = self.network
            for nodes, tensors in ((session.get_inputs(), network.inputs),
                                   (session.get_outputs(), network.outputs)):
                for node in nodes:
                    if node.type not in ONNX_DTYPES:
                        return self._fail(ErrorCode.UNSUPPORTED_GRAPH,
                                          f'tensor {node.name} has unsupported type {node.type}')
                    shape = [dim if isinstance(dim, int) and dim >= 0 else -1
                             for dim in node.shape]
                    dtype = DataType.HALF if node.type == 'tensor(float16)' else DataType.FLOAT
                    tensors.append(ITensor(node.name, shape, dtype))
            network.model, network.session = data, session
            return True

    def _runtime_shapes(network: INetworkDefinition,
                        profiles: Dict[str, List[List[int]]]) -> Optional[Dict[str, List[int]]]:
        """Run-time shape of every I/O tensor (inputs at the profile's opt), or None."""
        shapes = {tensor.name: list(tensor.shape) for tensor in network.inputs}
        for tensor in network.inputs:
            if -1 in shapes[tensor.name]:
                if tensor.name not in profiles:
                    return None
                shapes[tensor.name] = profiles[tensor.name][1]
        if any(-1 in list(tensor.shape) for tensor in network.outputs):
            feeds = {tensor.name: np.zeros(shapes[tensor.name],
                                           np.float16 if tensor.dtype == DataType.HALF
                                           else np.float32) for tensor in network.inputs}
            results = network.session.run([tensor.name for tensor in network.outputs], feeds)
            shapes.update({tensor.name: list(result.shape)
                           for tensor, result in zip(network.outputs, results)})
        else:
            shapes.update({tensor.name: list(tensor.shape) for tensor in network.outputs})
        return shapes

    class Builder:
        def __init__(self, logger: Any) -> None:
            if not isinstance(logger, ILogger):
                raise TypeError('Builder(): incompatible constructor arguments')
            self.logger = logger
            if major < 10:
                self.max_batch_size = 1

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def _fail(self, message: str) -> None:
            self.logger.log(ILogger.Severity.ERROR, message)

        def build_serialized_network(self, network: INetworkDefinition,
                                     config: IBuilderConfig) -> Optional[IHostMemory]:
            module.builds += 1
            if network.model is None:
                return self._fail('IBuilder::buildSerializedNetwork: Error Code 4: API Usage '
                                  'Error (Network must have at least one output.)')
            if module.standin_build_error:
                return self._fail(module.standin_build_error)
            profiles: Dict[str, List[List[int]]] = {}
            for profile in config.profiles:
                profiles.update(profile.shapes)
            shapes = _runtime_shapes(network, profiles)
            if shapes is None:
                return self._fail('IBuilder::buildSerializedNetwork: Error Code 4: Internal '
                                  'Error (Network has dynamic or shape inputs, but no '
                                  'optimization profile has been defined.)')
            monitor = getattr(config, 'progress_monitor', None)
            if monitor is not None:
                monitor.phase_start('Building engine', None, 2)
                for step in range(2):
                    if not monitor.step_complete('Building engine', step):
                        monitor.phase_finish('Building engine')
                        return self._fail('Build cancelled by the progress monitor.')
                monitor.phase_finish('Building engine')
            tensors = []
            for mode, group in (('input', network.inputs), ('output', network.outputs)):
                for tensor in group:
                    entry = {'name': tensor.name, 'mode': mode,
                             'dtype': 'float16' if tensor.dtype == DataType.HALF
                             else 'float32',
                             'shape': list(tensor.shape), 'runtime_shape': shapes[tensor.name]}
                    if tensor.name in profiles:
                        entry['profile'] = profiles[tensor.name]
                    tensors.append(entry)
            fp16 = 'FP16' in BuilderFlag.__members__ and BuilderFlag.FP16 in config.flags_set
            header = {'tensorrt_version': version, 'compute_capability': compute_capability,
                      'onnx': 'sha256:' + hashlib.sha256(network.model).hexdigest(),
                      'onnx_bytes': len(network.model),
                      'precision': 'fp16' if fp16 else 'fp32', 'tensors': tensors}
            return IHostMemory(PLAN_MAGIC + json.dumps(header).encode('utf-8') + b'\n'
                               + network.model)

    if major < 11:
        Builder.platform_has_fast_fp16 = property(lambda self: module.platform_fast_fp16)

    for name, value in (('NetworkDefinitionCreationFlag', NetworkDefinitionCreationFlag),
                        ('BuilderFlag', BuilderFlag), ('MemoryPoolType', MemoryPoolType),
                        ('ErrorCode', ErrorCode), ('ParserError', ParserError),
                        ('ITensor', ITensor), ('INetworkDefinition', INetworkDefinition),
                        ('IOptimizationProfile', IOptimizationProfile),
                        ('IBuilderConfig', IBuilderConfig), ('IHostMemory', IHostMemory),
                        ('OnnxParser', OnnxParser), ('Builder', Builder)):
        setattr(module, name, value)
    if major >= 10:
        class IProgressMonitor:
            def __init__(self) -> None:
                pass

            def phase_start(self, phase_name: str, parent_phase: Optional[str],
                            num_steps: int) -> None:
                raise NotImplementedError

            def step_complete(self, phase_name: str, step: int) -> bool:
                raise NotImplementedError

            def phase_finish(self, phase_name: str) -> None:
                raise NotImplementedError

        module.IProgressMonitor = IProgressMonitor
