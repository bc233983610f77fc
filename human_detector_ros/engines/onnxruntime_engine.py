"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where installed."""
from __future__ import annotations

import os
import pathlib
from typing import Any, Dict, List, Tuple

import numpy as np

from human_detector_ros.engines.base import DeviceRequest, Engine, TensorSpec, parse_device
from human_detector_ros.errors import InferenceError, ModelLoadError
from human_detector_ros.model_metadata import metadata_from_mapping

ORT_DTYPES = {
    'tensor(float)': np.dtype(np.float32),
    'tensor(float16)': np.dtype(np.float16),
    'tensor(double)': np.dtype(np.float64),
    'tensor(int32)': np.dtype(np.int32),
    'tensor(int64)': np.dtype(np.int64),
    'tensor(uint8)': np.dtype(np.uint8),
    'tensor(int8)': np.dtype(np.int8),
    'tensor(bool)': np.dtype(np.bool_),
}
GPU_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')


def physical_core_count() -> int:
    """Physical CPU cores usable by this process (SMT siblings counted once)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    usable = usable or os.cpu_count() or 1
    cores = set()
    physical_id = core_id = None
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'physical id':
                    physical_id = value.strip()
                elif key == 'core id':
                    core_id = value.strip()
                elif not key and core_id is not None:
                    cores.add((physical_id, core_id))
                    physical_id = core_id = None
        if core_id is not None:
            cores.add((physical_id, core_id))
    except OSError:
        pass
    return max(1, min(len(cores), usable)) if cores else usable


def _spec(node: Any, model_path: pathlib.Path) -> TensorSpec:
    dtype = ORT_DTYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(
            f'Model {model_path} has tensor {node.name!r} of type {node.type}, which the '
            f'detector does not handle (supported: {", ".join(sorted(ORT_DTYPES))}). '
            f'Re-export the model with float32 or float16 inputs and outputs.')
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape)
    return TensorSpec(node.name, shape, dtype)


def _providers(ort: Any, device: DeviceRequest) -> List[Any]:
    if device.kind == 'cpu':
        return ['CPUExecutionProvider']
    available = ort.get_available_providers()
    gpu = [name for name in GPU_PROVIDERS if name in available]
    if not gpu and device.kind == 'cuda':
        raise ModelLoadError(
            f'Device {device.cuda_name} was asked for, but the installed onnxruntime '
            f'{ort.__version__} has no CUDA support (providers: {", ".join(available)}). '
            f'Install onnxruntime-gpu (on Jetson: the JetPack onnxruntime-gpu wheel), or use '
            f'device "cpu".')
    from human_detector_ros.assets import cache_dir
    options = {
        'TensorrtExecutionProvider': {
            'device_id': device.index,
            'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache_dir() / 'onnxruntime_tensorrt_cache'),
        },
        'CUDAExecutionProvider': {'device_id': device.index},
    }
    return [(name, options[name]) for name in gpu] + ['CPUExecutionProvider']


class OnnxRuntimeEngine(Engine):
    """An ONNX model run by onnxruntime.InferenceSession.

    max_batch: the most frames per `infer` for a model with a dynamic batch axis (a fixed
    batch is the model's own).
    """

    backend = 'onnxruntime'

    def __init__(self, model_path: pathlib.Path, device: str = 'auto',
                 max_batch: int = 1) -> None:
        request = parse_device(device, model_path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError(
                f'Cannot load ONNX model {model_path}: onnxruntime is not installed. Install '
                f'it with `pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu`.'
            ) from None
        providers = _providers(ort, request)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = physical_core_count()
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options,
                                           providers=providers)
        except Exception as error:  # onnxruntime raises its own unrelated exception types
            raise ModelLoadError(
                f'onnxruntime {ort.__version__} cannot load {model_path}: {error}. The file is '
                f'truncated, corrupt, not an ONNX model, or uses operators this onnxruntime '
                f'does not have; re-export it (`yolo export model=best.pt format=onnx`) or '
                f'upgrade onnxruntime.') from None
        used = session.get_providers()
        on_gpu = any(name in GPU_PROVIDERS for name in used)
        if request.kind == 'cuda' and not on_gpu:
            raise ModelLoadError(
                f'onnxruntime could not start CUDA for {model_path} on {request.cuda_name} and '
                f'would run on the CPU (providers in use: {", ".join(used)}). Check the CUDA '
                f'and cuDNN libraries that onnxruntime-gpu {ort.__version__} needs, or use '
                f'device "cpu".')
        self._session = session
        inputs = tuple(_spec(node, model_path) for node in session.get_inputs())
        outputs = tuple(_spec(node, model_path) for node in session.get_outputs())
        metadata = metadata_from_mapping(session.get_modelmeta().custom_metadata_map,
                                         model_path)
        super().__init__(model_path, request.cuda_name if on_gpu else 'cpu', inputs, outputs,
                         metadata, max_batch)
        self._output_names: Tuple[str, ...] = tuple(spec.name for spec in outputs)

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[b, 3, H, W] array -> {output name: array with leading dimension b} (the input
        converted to the input dtype, and padded to a fixed batch, if needed)."""
        batch = images.shape[0]
        feed = {self.inputs[0].name: self.check_images(images)}
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as error:  # onnxruntime raises its own unrelated exception types
            raise InferenceError(
                f'onnxruntime failed on {self.model_path.name}: {error}') from None
        if self.run_batch(batch) != batch:  # padded: the pad rows' outputs are dropped
            results = [result[:batch] for result in results]
        return dict(zip(self._output_names, results))

    def close(self) -> None:
        self._session = None
