"""TensorRT backend against the stand-in TensorRT and CUDA runtime (test/tensorrt_standin).

The stand-in computes for real (the default ONNX model through onnxruntime, reading and
writing the bound device addresses), so these tests compare outputs with the ONNX Runtime
engine. Real TensorRT: test_tensorrt_real.py.
"""
from __future__ import annotations

import json
import sys
from typing import Dict

import numpy as np
import pytest
import tensorrt_standin
from network_inputs import sample_network_input
from tensorrt_standin import plan_bytes, ultralytics_engine_bytes

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import detect_backend, load_engine
from human_detector_ros.engines.tensorrt_engine import (
    choose_input_shape, MIN_PLAN_BYTES, PLAN_MAGIC, TensorRTEngine)
from human_detector_ros.errors import InferenceError, ModelLoadError

VERSIONS = {'8.4': '8.4.3', '8.6': '8.6.1', '10': '10.3.0'}
HEADER = {'description': 'Ultralytics YOLOv8 model', 'stride': 32, 'task': 'detect',
          'batch': 1, 'imgsz': [640, 640], 'names': {'0': 'Normal', '1': 'Fall'}}


@pytest.fixture(scope='module')
def onnx_path() -> str:
    return str(default_model_path())


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    return sample_network_input('camera.png')


@pytest.fixture(scope='module')
def references(onnx_path, image) -> Dict[str, np.ndarray]:
    """The ONNX Runtime engine's output0 for `image` as float32 and rounded through float16."""
    with load_engine(onnx_path, backend='onnxruntime', device='cpu') as engine:
        return {'float32': engine.infer(image)['output0'],
                'float16': engine.infer(image.astype(np.float16))['output0']}


@pytest.fixture(scope='module')
def reference(references) -> np.ndarray:
    return references['float32']


def _frame() -> np.ndarray:
    import cv2
    return cv2.imread(str(sample_image_path('astronaut.png')), cv2.IMREAD_COLOR)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize('dynamic', [False, True], ids=['static', 'dynamic'])
@pytest.mark.parametrize('dtype', ['float32', 'float16'])
@pytest.mark.parametrize('generation', sorted(VERSIONS))
def test_outputs_match_onnxruntime(monkeypatch, tmp_path, onnx_path, image, references,
                                   generation, dtype, dynamic):
    version = VERSIONS[generation]
    standin = tensorrt_standin.install(monkeypatch, version)
    path = _write(tmp_path, 'model.plan', plan_bytes(onnx_path, version, dtype, dynamic))
    with load_engine(path) as engine:
        assert isinstance(engine, TensorRTEngine) and engine.device == 'cuda:0'
        assert [(s.name, s.shape, s.dtype) for s in engine.inputs] == [
            ('images', (1, 3, 640, 640), np.dtype(dtype))]
        assert [(s.name, s.shape, s.dtype) for s in engine.outputs] == [
            ('output0', (1, 6, 8400), np.dtype(dtype))]
        assert engine.metadata.names == {} and engine.input_hw == (640, 640)
        outputs = engine.infer(image.astype(dtype))
    api = 'v2' if generation == '8.4' else 'v3'
    assert standin.trt.calls[f'execute_async_{api}'] == 1
    assert sum(name.startswith('execute_async') for name in standin.trt.calls) == 1
    shape_call = 'set_binding_shape' if api == 'v2' else 'set_input_shape'
    assert standin.trt.calls.get(shape_call, 0) == (1 if dynamic else 0)
    result = outputs['output0']
    assert result.dtype == np.dtype(dtype) and result.shape == (1, 6, 8400)
    np.testing.assert_allclose(result.astype(np.float32), references[dtype], rtol=1e-3,
                               atol=1e-3)
    np.testing.assert_allclose(result[0, 4:].astype(np.float32), references['float32'][0, 4:],
                               atol=1e-2)
    assert np.abs(result.astype(np.float32)).max() > 10


def test_api_generations_are_distinct_objects(monkeypatch, tmp_path, onnx_path):
    have = {}
    for generation, version in VERSIONS.items():
        standin = tensorrt_standin.install(monkeypatch, version)
        runtime = standin.trt.Runtime(standin.trt.Logger())
        engine = runtime.deserialize_cuda_engine(plan_bytes(onnx_path, version))
        have[generation] = (hasattr(engine, 'num_bindings'), hasattr(engine, 'num_io_tensors'))
    assert have == {'8.4': (True, False), '8.6': (True, True), '10': (False, True)}


def test_ultralytics_header_metadata_and_dla(
        monkeypatch, tmp_path, onnx_path, image, reference):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    data = ultralytics_engine_bytes(plan_bytes(onnx_path, '10.3.0', 'float16', dynamic=True),
                                    dict(HEADER, dla=1))
    path = _write(tmp_path, 'best.engine', data)
    with load_engine(path) as engine:
        assert engine.metadata.names == {0: 'Normal', 1: 'Fall'}
        assert engine.metadata.imgsz == (640, 640) and engine.metadata.stride == 32
        assert standin.trt.runtimes[-1].DLA_core == 1
        scores = engine.infer(image.astype(np.float16))['output0'][0, 4:].astype(np.float32)
    np.testing.assert_allclose(scores, reference[0, 4:], atol=1e-2)


@pytest.mark.parametrize('header, expected_hw', [
    (None, (480, 480)),
    ({'imgsz': [640, 640]}, (640, 640)),
    ({'imgsz': [320, 416]}, (320, 416)),
    ({'imgsz': [1280, 1280]}, (480, 480)),
])
def test_dynamic_shape_from_metadata_imgsz_else_profile_opt(monkeypatch, tmp_path, onnx_path,
                                                            header, expected_hw):
    tensorrt_standin.install(monkeypatch, '8.6.1')
    profile = [[1, 3, 320, 320], [1, 3, 480, 480], [1, 3, 640, 640]]
    plan = plan_bytes(onnx_path, '8.6.1', dynamic=True, profile=profile)
    data = ultralytics_engine_bytes(plan, header) if header else plan
    engine = TensorRTEngine(_write(tmp_path, 'model.engine', data), 'cuda')
    assert engine.inputs[0].shape == (1, 3) + expected_hw
    assert engine.input_hw == expected_hw
    engine.close()


def test_choose_input_shape_keeps_static_dimensions():
    profile = ((1, 3, 320, 320), (4, 3, 480, 480), (8, 3, 640, 640))
    assert choose_input_shape((-1, 3, -1, -1), profile, None) == (1, 3, 480, 480)
    assert choose_input_shape((-1, 3, 640, 640), profile, (320, 320)) == (1, 3, 640, 640)
    assert choose_input_shape((-1, 3, -1, -1), ((2, 3, 32, 32),) * 3, None) is None


def test_buffers_allocated_once_and_freed_on_close(monkeypatch, tmp_path, onnx_path, image,
                                                   reference):
    standin = tensorrt_standin.install(monkeypatch, '8.6.1')
    gpu = standin.gpu
    engine = load_engine(_write(tmp_path, 'm.engine', plan_bytes(onnx_path, '8.6.1')))
    after_load = dict(gpu.counts)
    assert after_load['cudaMalloc'] == 2 and after_load['cudaMallocHost'] == 2
    assert after_load['cudaStreamCreate'] == 1
    noise = np.random.default_rng(0).random(image.shape, dtype=np.float32)
    results = [engine.infer(x)['output0'] for x in (image, noise, image, noise, image)]
    for name in ('cudaMalloc', 'cudaMallocHost', 'cudaStreamCreate'):
        assert gpu.counts[name] == after_load[name]
    assert gpu.counts['cudaMemcpyAsync'] == 10 and gpu.counts['cudaStreamSynchronize'] >= 5
    for result in results[::2]:
        np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-3)
    assert np.abs(results[1] - results[0]).max() > 1
    assert gpu.live('device') == 2 and gpu.live('pinned') == 2 and len(gpu.streams) == 1
    engine.close()
    engine.close()
    assert gpu.live('device') == 0 and gpu.live('pinned') == 0 and not gpu.streams
    with pytest.raises(InferenceError, match='closed'):
        engine.infer(image)


def test_results_are_copies_of_the_pinned_buffers(monkeypatch, tmp_path, onnx_path, image):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    with load_engine(_write(tmp_path, 'm.plan', plan_bytes(onnx_path, '10.3.0'))) as engine:
        first = engine.infer(image)['output0']
        kept = first.copy()
        engine.infer(np.zeros_like(image))
        np.testing.assert_array_equal(first, kept)


def test_legacy_cuda_python_layout(monkeypatch, tmp_path, onnx_path, image, reference):
    standin = tensorrt_standin.install(monkeypatch, '8.4.3', cudart_layout='legacy')
    with load_engine(_write(tmp_path, 'm.trt', plan_bytes(onnx_path, '8.4.3'))) as engine:
        np.testing.assert_allclose(engine.infer(image)['output0'], reference, rtol=1e-5,
                                   atol=1e-3)
    assert standin.gpu.counts['cudaMalloc'] == 2


@pytest.mark.parametrize('plan_kwargs, said', [
    ({'version': '8.5.2'}, 'expecting library version 10.3.0 got 8.5.2'),
    ({'version': '10.3.0', 'compute_capability': '8.6'}, 'incompatible device'),
])
def test_version_or_device_mismatch(monkeypatch, tmp_path, onnx_path, plan_kwargs, said):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    path = _write(tmp_path, 'old.engine', ultralytics_engine_bytes(
        plan_bytes(onnx_path, **plan_kwargs), HEADER))
    with pytest.raises(ModelLoadError) as error:
        load_engine(path)
    message = str(error.value)
    assert str(path) in message and 'TensorRT 10.3.0' in message and said in message
    assert 'trtexec --onnx=' in message and 'format=engine' in message
    assert standin.gpu.live('device') == 0


@pytest.mark.parametrize('data', [b'\x00' * 64, b'not a TensorRT plan\n' * 4],
                         ids=['zeros', 'text'])
def test_corrupt_plan(monkeypatch, tmp_path, data):
    tensorrt_standin.install(monkeypatch, '8.6.1')
    path = _write(tmp_path, 'bad.plan', data)
    with pytest.raises(ModelLoadError, match='magicTag') as error:
        load_engine(path)
    assert str(path) in str(error.value)


def test_truncated_plan(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '8.6.1')
    plan = plan_bytes(onnx_path, '8.6.1')
    path = _write(tmp_path, 'cut.plan', plan[:len(plan) // 2])
    with pytest.raises(ModelLoadError, match='cannot deserialize'):
        load_engine(path)


def test_header_length_beyond_file_size(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    data = bytearray(ultralytics_engine_bytes(plan_bytes(onnx_path, '10.3.0'), HEADER))
    data[:4] = (len(data) + 100).to_bytes(4, 'little')
    path = _write(tmp_path, 'short.engine', bytes(data))
    with pytest.raises(ModelLoadError, match='truncated') as error:
        load_engine(path)
    assert str(path) in str(error.value)


def test_ultralytics_engine_detected_without_extension(tmp_path, onnx_path):
    path = _write(tmp_path, 'model.bin', ultralytics_engine_bytes(
        plan_bytes(onnx_path, '10.3.0'), HEADER))
    assert detect_backend(path) == 'tensorrt'
    for suffix in ('.engine', '.plan', '.trt'):
        assert detect_backend(_write(tmp_path, 'm' + suffix, b'\x01\x02\x03\x04xyz')) == \
            'tensorrt'


def test_no_tensorrt_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    path = _write(tmp_path, 'm.engine', PLAN_MAGIC + bytes(MIN_PLAN_BYTES))  # may be a plan
    with pytest.raises(ModelLoadError) as error:
        load_engine(path)
    message = str(error.value)
    assert str(path) in message and 'JetPack' in message and 'pip install tensorrt' in message


def test_no_cuda_python_installed(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    monkeypatch.setitem(sys.modules, 'cuda', None)
    monkeypatch.setitem(sys.modules, 'cuda.bindings', None)
    path = _write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0'))
    with pytest.raises(ModelLoadError, match='pip install cuda-python'):
        load_engine(path)


def test_without_pytorch_on_cuda_the_engine_runs_the_host_pipeline(monkeypatch, tmp_path,
                                                                   onnx_path, image):
    """No PyTorch with CUDA (the stand-in GPU is invisible to torch): cuda-python buffers,
    no `infer_torch`, and HumanDetector keeps the numpy pipeline."""
    tensorrt_standin.install(monkeypatch, '10.3.0')
    path = _write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0'))
    with load_engine(path) as engine:
        assert not engine.runs_torch and engine.torch_input() is None
        with pytest.raises(InferenceError, match='cuda-python buffers'):
            engine.infer_torch(image)
    with HumanDetector(path) as detector, \
            HumanDetector(onnx_path, backend='onnxruntime', device='cpu') as reference:
        assert detector.torch_pipeline is None
        found, expected = detector(_frame()), reference(_frame())
        assert len(expected) > 0 and found.class_ids.tolist() == expected.class_ids.tolist()
        np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-2)
    with pytest.raises(ModelLoadError, match='TensorRT with a CUDA build of PyTorch'):
        HumanDetector(path, pipeline='torch')


def test_torch_buffers_need_pytorch_on_the_device(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    path = _write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0'))
    with pytest.raises(ModelLoadError, match='asked to use torch buffers') as error:
        TensorRTEngine(path, 'cuda', buffers='torch')
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match='buffers'):
        TensorRTEngine(path, 'cuda', buffers='unified')


@pytest.mark.parametrize('device_count, device, words', [
    (0, 'auto', 'has 0 usable CUDA device'),
    (0, 'cuda', 'cudaErrorNoDevice'),
    (1, 'cuda:1', 'needs CUDA device 1'),
    (1, 'cpu', 'NVIDIA GPU only'),
])
def test_no_usable_cuda_device(monkeypatch, tmp_path, onnx_path, device_count, device, words):
    tensorrt_standin.install(monkeypatch, '10.3.0', device_count=device_count)
    path = _write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0'))
    with pytest.raises(ModelLoadError, match=words) as error:
        load_engine(path, device=device)
    assert str(path) in str(error.value)


def test_second_device_is_selected_for_load_and_inference(monkeypatch, tmp_path, onnx_path,
                                                          image):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0', device_count=2)
    with load_engine(_write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0')),
                     device='cuda:1') as engine:
        assert engine.device == 'cuda:1' and standin.gpu.current_device == 1
        standin.gpu.current_device = 0
        engine.infer(image)
        assert standin.gpu.current_device == 1


def test_input_validation_on_engine_tensors(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    tensors = [{'name': 'images', 'mode': 'input', 'dtype': 'float32',
                'shape': [1, 4, 640, 640], 'runtime_shape': [1, 4, 640, 640]},
               {'name': 'output0', 'mode': 'output', 'dtype': 'float32',
                'shape': [1, 6, 8400], 'runtime_shape': [1, 6, 8400]}]
    path = _write(tmp_path, 'rgba.engine', plan_bytes(onnx_path, '10.3.0', tensors=tensors))
    with pytest.raises(ModelLoadError, match='4 channels'):
        load_engine(path)


def test_cuda_and_execution_failures_become_inference_errors(
        monkeypatch, tmp_path, onnx_path, image):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    path = _write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0', dynamic=True))
    with load_engine(path) as engine:
        engine._context.set_input_shape('images', (1, 3, 320, 320))
        with pytest.raises(InferenceError, match='TensorRT said: stand-in engine runs'):
            engine.infer(image)
        engine._context.set_input_shape('images', (1, 3, 640, 640))
        assert engine.infer(image)['output0'].shape == (1, 6, 8400)
        standin.cudart.cudaStreamDestroy(engine._stream)
        with pytest.raises(InferenceError, match='cudaErrorInvalidResourceHandle'):
            engine.infer(image)


def test_wrong_input_shape(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    with load_engine(_write(tmp_path, 'm.engine', plan_bytes(onnx_path, '10.3.0'))) as engine:
        with pytest.raises(InferenceError, match=r'\[1, 3, 640, 640\]'):
            engine.infer(np.zeros((1, 3, 320, 320), np.float32))


# The stand-in must be able to fail where real TensorRT/CUDA fail, or it proves nothing.

def test_standin_refuses_unset_dynamic_shape_and_host_pointers(monkeypatch, onnx_path):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    trt, cudart = standin.trt, standin.cudart
    logged = []

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            logged.append((severity, msg))

    engine = trt.Runtime(Logger()).deserialize_cuda_engine(
        plan_bytes(onnx_path, '10.3.0', dynamic=True))
    context = engine.create_execution_context()
    assert tuple(context.get_tensor_shape('output0')) == (-1, 6, -1)
    _, stream = cudart.cudaStreamCreate()
    host = np.zeros((1, 3, 640, 640), np.float32)
    out = np.zeros((1, 6, 8400), np.float32)
    context.set_tensor_address('images', host.ctypes.data)
    context.set_tensor_address('output0', out.ctypes.data)
    assert not context.execute_async_v3(int(stream))
    assert 'not specified' in logged[-1][1]
    assert not context.set_input_shape('images', (1, 3, 1280, 1280))
    assert context.set_input_shape('images', (1, 3, 640, 640))
    assert tuple(context.get_tensor_shape('output0')) == (1, 6, 8400)
    assert not context.execute_async_v3(int(stream))
    assert 'illegal memory access' in logged[-1][1]
    with pytest.raises(TypeError):
        context.execute_async_v3(stream)


def test_standin_async_copies_land_only_after_synchronize(monkeypatch):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    cudart = standin.cudart
    _, stream = cudart.cudaStreamCreate()
    _, device = cudart.cudaMalloc(16)
    source = np.arange(4, dtype=np.float32)
    target = np.zeros(4, np.float32)
    h2d, d2h = (cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    assert cudart.cudaMemcpyAsync(device, source.ctypes.data, 16, h2d, stream)[0] == 0
    assert cudart.cudaMemcpyAsync(target.ctypes.data, device, 16, d2h, stream)[0] == 0
    assert not target.any()
    assert cudart.cudaStreamSynchronize(stream)[0] == 0
    np.testing.assert_array_equal(target, source)
    swapped = cudart.cudaMemcpyAsync(source.ctypes.data, device, 16, h2d, stream)[0]
    assert swapped == 0 and cudart.cudaStreamSynchronize(stream)[0] != 0
    assert cudart.cudaFreeHost(device)[0] != 0 and cudart.cudaFree(device)[0] == 0
    assert cudart.cudaFree(device)[0] != 0


def test_plan_file_is_json_after_the_magic(onnx_path):
    plan = plan_bytes(onnx_path, '8.6.1', 'float16', dynamic=True)
    header = json.loads(plan[len(tensorrt_standin.trt.PLAN_MAGIC):])
    assert header['tensorrt_version'] == '8.6.1'
    assert [t['shape'] for t in header['tensors']] == [[-1, 3, -1, -1], [-1, 6, -1]]
