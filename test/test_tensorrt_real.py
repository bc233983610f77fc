"""The TensorRT backend on a real GPU: real CUDA runtime, and real TensorRT where installed.

Engines are built here from the default ONNX model with the TensorRT builder API and
compared with the ONNX Runtime engine. Each test skips, saying why, where its real library or
a CUDA GPU is missing.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

import numpy as np
import pytest
import tensorrt_standin
from network_inputs import sample_network_input

from human_detector_ros.assets import default_model_path
from human_detector_ros.engines import load_engine
from human_detector_ros.engines.tensorrt_engine import import_cudart
from human_detector_ros.errors import ModelLoadError


def _real_cudart() -> Optional[Any]:
    try:
        cudart = import_cudart()
    except ImportError:
        return None
    error, count = cudart.cudaGetDeviceCount()
    return cudart if error == cudart.cudaError_t.cudaSuccess and count > 0 else None


def _real_tensorrt() -> Optional[Any]:
    try:
        return importlib.import_module('tensorrt')
    except ImportError:
        return None


CUDART = _real_cudart()
TRT = _real_tensorrt()
NEEDS_CUDA = pytest.mark.skipif(
    CUDART is None, reason='needs cuda-python (`pip install cuda-python`) and a CUDA GPU')
NEEDS_TENSORRT = pytest.mark.skipif(
    TRT is None or CUDART is None,
    reason='needs the real tensorrt package (JetPack, or `pip install tensorrt` on x86), '
           'cuda-python and a CUDA GPU')


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    return sample_network_input('astronaut.png')


@pytest.fixture(scope='module')
def reference(image) -> np.ndarray:
    with load_engine(default_model_path(), backend='onnxruntime', device='cpu') as engine:
        return engine.infer(image)['output0']


def build_engine(precision: str) -> bytes:
    """A serialized plan of the default model; precision 'fp32', 'fp16' or 'fp16-io'."""
    logger = TRT.Logger(TRT.Logger.WARNING)
    builder = TRT.Builder(logger)
    explicit = getattr(TRT.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = TRT.OnnxParser(network, logger)
    if not parser.parse(default_model_path().read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError(f'ONNX parser failed: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(TRT.MemoryPoolType.WORKSPACE, 1 << 30)
    if precision != 'fp32':
        config.set_flag(TRT.BuilderFlag.FP16)
    if precision == 'fp16-io':
        network.get_input(0).dtype = TRT.float16
        network.get_output(0).dtype = TRT.float16
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, 'TensorRT could not build the engine'
    return bytes(serialized)


@NEEDS_TENSORRT
@pytest.mark.parametrize('precision, header', [
    ('fp32', False), ('fp16', True), ('fp16-io', True)])
def test_real_tensorrt_matches_onnxruntime(tmp_path, image, reference, precision, header):
    plan = build_engine(precision)
    metadata = {'names': {'0': 'Normal', '1': 'Fall'}, 'imgsz': [640, 640], 'stride': 32}
    data = tensorrt_standin.ultralytics_engine_bytes(plan, metadata) if header else plan
    path = tmp_path / 'model.engine'
    path.write_bytes(data)
    with load_engine(path, device='cuda:0') as engine:
        dtype = np.float16 if precision == 'fp16-io' else np.float32
        assert engine.inputs[0].shape == (1, 3, 640, 640) and engine.inputs[0].dtype == dtype
        assert engine.outputs[0].shape == (1, 6, 8400) and engine.outputs[0].dtype == dtype
        assert engine.metadata.names == ({0: 'Normal', 1: 'Fall'} if header else {})
        results = [engine.infer(image.astype(dtype))['output0'] for _ in range(3)]
    for result in results:
        scores = result[0, 4:].astype(np.float32)
        np.testing.assert_allclose(scores, reference[0, 4:], atol=2e-2)
        confident = reference[0, 4:].max(axis=0) > 0.25
        np.testing.assert_allclose(result[0, :4, confident].astype(np.float32),
                                   reference[0, :4, confident], rtol=2e-2, atol=2.0)
    assert confident.any()


@NEEDS_TENSORRT
def test_real_tensorrt_rejects_garbage_with_version(tmp_path):
    path = tmp_path / 'garbage.engine'
    path.write_bytes(b'\x00' * 4096)
    with pytest.raises(ModelLoadError) as error:
        load_engine(path, device='cuda')
    assert str(path) in str(error.value) and TRT.__version__ in str(error.value)


@NEEDS_CUDA
@pytest.mark.parametrize('version, dtype', [('8.6.1', 'float16'), ('10.3.0', 'float32')])
def test_real_cuda_runtime_with_standin_tensorrt(monkeypatch, tmp_path, image, reference,
                                                 version, dtype):
    """Real cudaMalloc/cudaMallocHost/async copies/streams; stand-in TensorRT computes."""
    tensorrt_standin.install(monkeypatch, version, real_cudart=True)
    plan = tensorrt_standin.plan_bytes(str(default_model_path()), version, dtype, dynamic=True)
    path = tmp_path / 'model.engine'
    path.write_bytes(plan)
    with load_engine(path, device='cuda:0') as engine:
        results = [engine.infer(image.astype(dtype))['output0'] for _ in range(3)]
    for result in results:
        assert result.dtype == np.dtype(dtype)
        np.testing.assert_allclose(result[0, 4:].astype(np.float32), reference[0, 4:],
                                   atol=1e-2)
    np.testing.assert_array_equal(results[0], results[2])


@NEEDS_TENSORRT
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_real_tensorrt_builds_from_onnx_caches_and_reuses(tmp_path, image, reference, precision):
    """engine_path: model.onnx with backend tensorrt, through the real builder API."""
    with load_engine(default_model_path(), backend='tensorrt', device='cuda:0',
                     tensorrt_precision=precision, tensorrt_cache_dir=tmp_path) as engine:
        cached = engine.model_path
        assert cached.parent == tmp_path and engine.metadata.names == {0: 'Normal', 1: 'Fall'}
        scores = engine.infer(image)['output0'][0, 4:]
    np.testing.assert_allclose(scores, reference[0, 4:], atol=2e-2)
    built = cached.stat().st_mtime_ns
    with load_engine(default_model_path(), backend='tensorrt', device='cuda:0',
                     tensorrt_precision=precision, tensorrt_cache_dir=tmp_path) as engine:
        assert engine.model_path == cached
    assert cached.stat().st_mtime_ns == built and len(list(tmp_path.iterdir())) == 1


@NEEDS_TENSORRT
def test_real_tensorrt_parser_rejects_a_cut_onnx(tmp_path):
    path = tmp_path / 'cut.onnx'
    data = default_model_path().read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelLoadError, match='ONNX parser rejected the model'):
        load_engine(path, backend='tensorrt', device='cuda:0', tensorrt_cache_dir=tmp_path)
