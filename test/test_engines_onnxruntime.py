"""ONNX Runtime backend and load_engine: the default model for real, tiny ONNX graphs for edges."""
from __future__ import annotations

import os
import pathlib
import zipfile

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.engines import detect_backend, load_engine
from human_detector_ros.engines.onnxruntime_engine import OnnxRuntimeEngine, physical_core_count
from human_detector_ros.errors import InferenceError, ModelLoadError


@pytest.fixture(scope='module')
def engine():
    with load_engine(default_model_path(), device='cpu') as loaded:
        yield loaded


@pytest.fixture(scope='module')
def astronaut_input() -> np.ndarray:
    """astronaut.png resized to 640x640, RGB, CHW, /255, float32 [1, 3, 640, 640]."""
    bgr = cv2.imread(str(sample_image_path('astronaut.png')), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(cv2.resize(bgr, (640, 640)), cv2.COLOR_BGR2RGB)
    return (rgb.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)


def _save(tmp_path: pathlib.Path, graph: onnx.GraphProto, name: str = 'tiny.onnx',
          metadata: dict = None) -> pathlib.Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _conv_model(tmp_path: pathlib.Path, input_shape, weight: np.ndarray,
                elem_type: int = TensorProto.FLOAT, **kwargs) -> pathlib.Path:
    """images [input_shape] -> 1x1 Conv(weight) -> reshape [1, C, -1] as output0."""
    channels = weight.shape[0]
    graph = helper.make_graph(
        [helper.make_node('Conv', ['images', 'w'], ['conv']),
         helper.make_node('Reshape', ['conv', 'shape'], ['output0'])],
        'tiny',
        [helper.make_tensor_value_info('images', elem_type, input_shape)],
        [helper.make_tensor_value_info('output0', elem_type, [1, channels, 'anchors'])],
        [numpy_helper.from_array(weight, 'w'),
         numpy_helper.from_array(np.array([1, channels, -1], np.int64), 'shape')])
    return _save(tmp_path, graph, **kwargs)


def test_default_model_specs_and_metadata(engine):
    assert engine.backend == 'onnxruntime' and engine.device == 'cpu'
    assert [(s.name, s.shape, s.dtype) for s in engine.inputs] == [
        ('images', (1, 3, 640, 640), np.float32)]
    assert [(s.name, s.shape, s.dtype) for s in engine.outputs] == [
        ('output0', (1, 6, 8400), np.float32)]
    assert engine.metadata.names == {0: 'Normal', 1: 'Fall'}
    assert engine.metadata.imgsz == (640, 640) and engine.metadata.stride == 32
    assert engine.input_hw == (640, 640)
    options = engine._session.get_session_options()
    assert options.intra_op_num_threads == physical_core_count()
    assert options.graph_optimization_level == \
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_default_model_matches_onnxruntime_and_sees_the_astronaut(engine, astronaut_input):
    outputs = engine.infer(astronaut_input)
    session = onnxruntime.InferenceSession(str(default_model_path()),
                                           providers=['CPUExecutionProvider'])
    reference = session.run(['output0'], {'images': astronaut_input})[0]
    assert list(outputs) == ['output0']
    np.testing.assert_allclose(outputs['output0'], reference, rtol=1e-4, atol=1e-3)
    scores = outputs['output0'][0, 4:]
    assert scores.max() > 0.5
    box = outputs['output0'][0, :4, scores.max(axis=0).argmax()]
    assert 0 < box[0] < 640 and 0 < box[1] < 640 and box[2] > 100 and box[3] > 100


def test_infer_converts_dtype_and_rejects_wrong_shapes(engine, astronaut_input):
    as_float64 = engine.infer(astronaut_input.astype(np.float64))['output0']
    np.testing.assert_allclose(as_float64, engine.infer(astronaut_input)['output0'], atol=1e-4)
    with pytest.raises(InferenceError, match=r'\[1, 3, 640, 640\]'):
        engine.infer(np.zeros((1, 3, 480, 640), np.float32))
    with pytest.raises(InferenceError):
        engine.infer(np.zeros((3, 640, 640), np.float32))


def test_outputs_belong_to_the_caller(engine, astronaut_input):
    first = engine.infer(astronaut_input)['output0']
    kept = first.copy()
    first[...] = -1
    np.testing.assert_array_equal(engine.infer(astronaut_input)['output0'], kept)


def test_backend_detected_from_content_without_extension(tmp_path):
    link = tmp_path / 'model.bin'
    link.symlink_to(default_model_path())
    assert detect_backend(link) == 'onnxruntime'
    with load_engine(link) as loaded:
        assert loaded.backend == 'onnxruntime' and loaded.metadata.names[1] == 'Fall'


def test_dynamic_input_uses_metadata_imgsz_and_computes(tmp_path):
    weight = np.random.default_rng(1).normal(size=(6, 3, 1, 1)).astype(np.float32)
    path = _conv_model(tmp_path, ['batch', 3, 'height', 'width'], weight,
                       metadata={'imgsz': '[320, 416]', 'names': "{0: 'a', 1: 'b'}"})
    with load_engine(path, backend='onnxruntime', device='cpu') as loaded:
        assert loaded.inputs[0].shape == (-1, 3, -1, -1)
        assert loaded.outputs[0].shape == (1, 6, -1)
        assert loaded.input_hw == (320, 416)
        images = np.random.default_rng(2).random((1, 3, 320, 416), dtype=np.float32)
        result = loaded.infer(images)['output0']
    expected = np.einsum('oc,chw->ohw', weight[:, :, 0, 0], images[0]).reshape(1, 6, -1)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_dynamic_input_without_imgsz_defaults_to_640(tmp_path):
    weight = np.ones((6, 3, 1, 1), np.float32)
    path = _conv_model(tmp_path, [1, 3, 'height', 'width'], weight)
    with load_engine(path) as loaded:
        assert loaded.input_hw == (640, 640)
        assert loaded.metadata.names == {} and loaded.metadata.imgsz is None


def test_dtype_mapping(tmp_path):
    weight = np.ones((6, 3, 1, 1), np.float16)
    graph = helper.make_graph(
        [helper.make_node('Conv', ['images', 'w'], ['conv']),
         helper.make_node('Reshape', ['conv', 'shape'], ['output0']),
         helper.make_node('Shape', ['images'], ['dims']),
         helper.make_node('Cast', ['dims'], ['dims32'], to=TensorProto.INT32)],
        'types',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT16, [1, 3, 8, 8])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT16, [1, 6, 64]),
         helper.make_tensor_value_info('dims', TensorProto.INT64, [4]),
         helper.make_tensor_value_info('dims32', TensorProto.INT32, [4])],
        [numpy_helper.from_array(weight, 'w'),
         numpy_helper.from_array(np.array([1, 6, -1], np.int64), 'shape')])
    engine = OnnxRuntimeEngine(_save(tmp_path, graph), 'cpu')
    assert [s.dtype for s in engine.inputs] == [np.float16]
    assert [(s.name, s.dtype) for s in engine.outputs] == [
        ('output0', np.float16), ('dims', np.int64), ('dims32', np.int32)]
    outputs = engine.infer(np.full((1, 3, 8, 8), 0.5, np.float32))
    assert outputs['output0'].dtype == np.float16
    np.testing.assert_array_equal(outputs['output0'], np.full((1, 6, 64), 1.5, np.float16))
    np.testing.assert_array_equal(outputs['dims32'], [1, 3, 8, 8])


@pytest.mark.parametrize('input_shape, problem', [
    ([1, 1, 64, 64], '1 channels'),
    ([1, 3, 64], 'rank 3'),
])
def test_input_validation(tmp_path, input_shape, problem):
    weight = np.ones((6, input_shape[1], 1, 1), np.float32)
    if len(input_shape) == 3:
        weight = weight[..., 0]
    path = _conv_model(tmp_path, input_shape, weight)
    with pytest.raises(ModelLoadError) as error:
        load_engine(path)
    message = str(error.value)
    assert str(path) in message and problem in message and '[B, 3, H, W]' in message


def test_two_inputs_rejected(tmp_path):
    graph = helper.make_graph(
        [helper.make_node('Add', ['images', 'other'], ['output0'])], 'two',
        [helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 4, 4]),
         helper.make_tensor_value_info('other', TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info('output0', TensorProto.FLOAT, [1, 3, 4, 4])])
    path = _save(tmp_path, graph)
    with pytest.raises(ModelLoadError, match='2 inputs'):
        load_engine(path)


def test_unsupported_output_layout_rejected_by_load_engine(tmp_path):
    path = _conv_model(tmp_path, [1, 3, 8, 8], np.ones((3, 3, 1, 1), np.float32))
    with pytest.raises(ModelLoadError) as error:
        load_engine(path)
    assert str(path) in str(error.value) and 'Unsupported model outputs' in str(error.value)
    assert OnnxRuntimeEngine(path, 'cpu').outputs[0].shape == (1, 3, 64)


def test_missing_empty_directory_and_truncated_files(tmp_path):
    cases = {'missing': tmp_path / 'nope.onnx', 'directory': tmp_path}
    empty = tmp_path / 'empty.onnx'
    empty.write_bytes(b'')
    truncated = tmp_path / 'truncated.onnx'
    with open(default_model_path(), 'rb') as source:
        truncated.write_bytes(source.read(100000))
    garbage = tmp_path / 'model.weights'
    garbage.write_bytes(b'not a model at all\n' * 10)
    for path, words in ((cases['missing'], 'does not exist'),
                        (cases['directory'], 'not a file'),
                        (empty, 'empty'),
                        (truncated, 'truncated'),
                        (garbage, 'Cannot tell')):
        with pytest.raises(ModelLoadError) as error:
            load_engine(path)
        assert str(path) in str(error.value) and words in str(error.value)


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads files regardless of permissions')
def test_unreadable_file(tmp_path):
    path = tmp_path / 'secret.onnx'
    path.write_bytes(b'\x08\x07')
    path.chmod(0)
    with pytest.raises(ModelLoadError, match='not readable'):
        load_engine(path)


def test_unknown_backend_and_device(tmp_path):
    with pytest.raises(ModelLoadError, match='Unknown backend') as error:
        load_engine(default_model_path(), backend='openvino')
    assert 'onnxruntime, tensorrt, torchscript' in str(error.value)
    for device in ('gpu', 'cpu:1', 'cuda:x', 'auto:0'):
        with pytest.raises(ModelLoadError, match='Unknown device'):
            load_engine(default_model_path(), device=device)


def test_a_backend_that_does_not_run_the_file_says_which_does(tmp_path):
    """Not "PyTorch is missing" (or a zip error) for an ONNX file given to TorchScript."""
    with pytest.raises(ModelLoadError) as error:
        load_engine(default_model_path(), backend='torchscript', device='cpu')
    assert 'Backend "torchscript" cannot run' in str(error.value)
    assert 'Use backend "auto" or "onnxruntime"' in str(error.value)
    archive = tmp_path / 'model.torchscript'
    with zipfile.ZipFile(archive, 'w') as writer:
        writer.writestr('model/code/__torch__.py', 'pass')
    with pytest.raises(ModelLoadError, match='for backend "torchscript". Use backend "auto"'):
        load_engine(archive, backend='onnxruntime', device='cpu')


@pytest.mark.skipif('CUDAExecutionProvider' in onnxruntime.get_available_providers(),
                    reason='this onnxruntime has CUDA')
def test_cuda_asked_without_cuda_support():
    with pytest.raises(ModelLoadError) as error:
        load_engine(default_model_path(), device='cuda:0')
    assert 'onnxruntime-gpu' in str(error.value) and 'cuda:0' in str(error.value)


@pytest.mark.skipif('CUDAExecutionProvider' not in onnxruntime.get_available_providers(),
                    reason='this onnxruntime has no CUDA execution provider')
def test_cuda_execution_provider_matches_cpu(engine, astronaut_input):
    with load_engine(default_model_path(), device='cuda:0') as on_gpu:
        assert on_gpu.device == 'cuda:0'
        result = on_gpu.infer(astronaut_input)['output0']
    expected = engine.infer(astronaut_input)['output0']
    np.testing.assert_allclose(result[0, 4:], expected[0, 4:], atol=1e-2)


def test_physical_core_count():
    assert 1 <= physical_core_count() <= (os.cpu_count() or 1)
