"""TensorRT engines built from ONNX (engines/tensorrt_build.py) through the stand-in builder.

The stand-in builder (test/tensorrt_standin/builder.py) parses with onnxruntime, fails where
TensorRT's builder fails, and produces plans that the stand-in runtime runs on the real
default model; the outputs are compared with the ONNX Runtime engine. Real TensorRT never
ran this code here: test_tensorrt_real.py covers the real library where it is installed.
"""
from __future__ import annotations

import ast
import json
import logging
import os

import numpy as np
import pytest
import tensorrt_standin
from network_inputs import sample_network_input
from tensorrt_standin.trt import PLAN_MAGIC

from human_detector_ros.assets import default_model_path, sample_image_path
from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import load_engine
from human_detector_ros.engines.tensorrt_build import engine_for_onnx, onnx_metadata
from human_detector_ros.engines.tensorrt_engine import TensorRTEngine
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.model_metadata import split_engine_header

VERSIONS = ('8.5.2', '8.6.1', '10.3.0', '11.0.0')


@pytest.fixture(scope='module')
def onnx_bytes() -> bytes:
    return default_model_path().read_bytes()


@pytest.fixture
def onnx_path(tmp_path, onnx_bytes):
    """A copy of the default model that a test may edit."""
    path = tmp_path / 'models' / 'people.onnx'
    path.parent.mkdir()
    path.write_bytes(onnx_bytes)
    return path


@pytest.fixture(scope='module')
def image() -> np.ndarray:
    return sample_network_input('camera.png')


@pytest.fixture(scope='module')
def reference(image) -> np.ndarray:
    with load_engine(default_model_path(), backend='onnxruntime', device='cpu') as engine:
        return engine.infer(image)['output0']


def _cached(cache):
    return sorted(path.name for path in cache.iterdir()) if cache.exists() else []


def _plan_header(path):
    """The stand-in plan's JSON header inside a cached engine file."""
    blob = path.read_bytes()
    plan = blob[split_engine_header(blob, path)[1]:]
    assert plan.startswith(PLAN_MAGIC)
    return json.loads(plan[len(PLAN_MAGIC):].partition(b'\n')[0])


@pytest.mark.parametrize('version', VERSIONS)
def test_first_start_builds_and_caches_second_start_reuses(
        monkeypatch, tmp_path, onnx_path, image, reference, version, caplog):
    standin = tensorrt_standin.install(monkeypatch, version)
    cache = tmp_path / 'cache'
    caplog.set_level(logging.INFO, logger='human_detector_ros')
    with load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=cache) as engine:
        assert isinstance(engine, TensorRTEngine)
        assert engine.metadata.names == {0: 'Normal', 1: 'Fall'}
        assert engine.metadata.imgsz == (640, 640)
        np.testing.assert_allclose(engine.infer(image)['output0'], reference, rtol=1e-5,
                                   atol=1e-3)
    assert standin.trt.builds == 1
    names = _cached(cache)
    assert len(names) == 1 and engine.model_path == cache / names[0]
    precision = 'typed' if version.startswith('11') else 'fp16'
    assert names[0].startswith('people.') and names[0].endswith(
        f'.trt{version}.stand-in-gpu.sm87.{precision}.b1.engine')
    log = caplog.text
    assert 'Building a TensorRT engine from' in log and 'Jetson' in log
    assert 'Built the TensorRT engine in' in log
    if not version.startswith('8'):
        assert 'TensorRT build: Building engine (2 steps)' in log
    caplog.clear()

    with load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=cache) as engine:
        np.testing.assert_allclose(engine.infer(image)['output0'], reference, rtol=1e-5,
                                   atol=1e-3)
    assert standin.trt.builds == 1
    assert 'Using the cached TensorRT engine' in caplog.text
    assert _cached(cache) == names


@pytest.mark.parametrize('version, expected', [
    ('8.6.1', {'fp16': 'fp16', 'fp32': 'fp32'}),
    ('10.3.0', {'fp16': 'fp16', 'fp32': 'fp32'}),
    ('11.0.0', {'fp16': 'fp32', 'fp32': 'fp32'}),
])
def test_precision_reaches_the_builder_and_keys_the_cache(monkeypatch, tmp_path, onnx_path,
                                                          version, expected, caplog):
    standin = tensorrt_standin.install(monkeypatch, version)
    cache = tmp_path / 'cache'
    built = {}
    for precision in ('fp16', 'fp32'):
        path = engine_for_onnx(onnx_path, 'cuda', precision, cache)
        header = split_engine_header(path.read_bytes(), path)[0]
        built[precision] = (path, header['precision'], _plan_header(path)['precision'])
    assert {p: plan for p, (_, _, plan) in built.items()} == expected
    if version.startswith('11'):
        # Strong typing: both requests build the same engine, once.
        assert built['fp16'][0] == built['fp32'][0] and standin.trt.builds == 1
        assert built['fp16'][1] == 'typed'
        assert 'builds strongly typed networks' in caplog.text
    else:
        assert built['fp16'][0] != built['fp32'][0] and standin.trt.builds == 2
        assert built['fp16'][1] == 'fp16' and built['fp32'][1] == 'fp32'


def test_gpu_without_fast_fp16_builds_fp32_and_says_so(monkeypatch, tmp_path, onnx_path,
                                                       caplog):
    standin = tensorrt_standin.install(monkeypatch, '8.6.1')
    standin.trt.platform_fast_fp16 = False
    path = engine_for_onnx(onnx_path, 'cuda', 'fp16', tmp_path)
    assert _plan_header(path)['precision'] == 'fp32'
    assert 'has no fast FP16: building the engine in FP32' in caplog.text


def test_edited_onnx_tensorrt_upgrade_or_other_gpu_rebuilds(monkeypatch, tmp_path, onnx_path):
    cache = tmp_path / 'cache'
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    first = engine_for_onnx(onnx_path, 'cuda', 'fp16', cache)
    assert engine_for_onnx(onnx_path, 'cuda', 'fp16', cache) == first
    assert standin.trt.builds == 1
    # The same ONNX model with one more metadata entry: other bytes, same network.
    onnx = pytest.importorskip('onnx')
    model = onnx.load_model_from_string(onnx_path.read_bytes())
    onnx.helper.set_model_props(model, dict(
        {prop.key: prop.value for prop in model.metadata_props}, author='edited'))
    onnx_path.write_bytes(model.SerializeToString())
    edited = engine_for_onnx(onnx_path, 'cuda', 'fp16', cache)
    assert edited != first and standin.trt.builds == 2
    upgraded = tensorrt_standin.install(monkeypatch, '10.13.0')
    assert engine_for_onnx(onnx_path, 'cuda', 'fp16', cache) not in (first, edited)
    assert upgraded.trt.builds == 1
    orin = tensorrt_standin.install(monkeypatch, '10.13.0', compute_capability='8.6')
    assert '.sm86.' in engine_for_onnx(onnx_path, 'cuda', 'fp16', cache).name
    assert orin.trt.builds == 1
    assert len(_cached(cache)) == 4


@pytest.mark.parametrize('data, said', [
    (b'\x08\x07\x12\x07pytorch' + b'\x00' * 200, 'Failed to parse ONNX model'),
    (b'this is not a model at all\n' * 10, 'Failed to parse ONNX model'),
], ids=['truncated', 'text'])
def test_broken_onnx_gives_one_clear_message(monkeypatch, tmp_path, data, said):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    path = tmp_path / 'broken.onnx'
    path.write_bytes(data)
    cache = tmp_path / 'cache'
    with pytest.raises(ModelLoadError) as error:
        load_engine(path, backend='tensorrt', tensorrt_cache_dir=cache)
    message = str(error.value)
    assert message.startswith('TensorRT 10.3.0 cannot build an engine from ' + str(path))
    assert 'ONNX parser rejected the model' in message and said in message
    assert 'yolo export' in message and 'onnxruntime' in message
    assert standin.trt.builds == 0 and _cached(cache) == []


def test_cut_onnx_file_is_refused_by_the_parser(monkeypatch, tmp_path, onnx_bytes):
    tensorrt_standin.install(monkeypatch, '8.6.1')
    path = tmp_path / 'cut.onnx'
    path.write_bytes(onnx_bytes[:len(onnx_bytes) // 2])
    with pytest.raises(ModelLoadError, match='ONNX parser rejected the model'):
        load_engine(path, backend='tensorrt', tensorrt_cache_dir=tmp_path / 'cache')


def test_failed_build_gives_one_clear_message_and_caches_nothing(monkeypatch, tmp_path,
                                                                 onnx_path):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    standin.trt.standin_build_error = (
        'Error Code 2: OutOfMemory (Requested size was 2147483648 bytes.)')
    cache = tmp_path / 'cache'
    with pytest.raises(ModelLoadError) as error:
        load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=cache)
    message = str(error.value)
    assert message.startswith(f'TensorRT 10.3.0 could not build an engine from {onnx_path}')
    assert 'OutOfMemory' in message and 'tensorrt_precision fp32' in message
    assert 'trtexec --onnx=' in message
    assert standin.trt.builds == 1 and _cached(cache) == []


def test_dynamic_onnx_gets_an_optimization_profile(monkeypatch, tmp_path, onnx_path, image,
                                                   reference):
    onnx = pytest.importorskip('onnx')
    model = onnx.load_model_from_string(onnx_path.read_bytes())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for index, name in ((0, 'batch'), (2, 'height'), (3, 'width')):
        dims[index].dim_param = name
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    for index, name in ((0, 'batch'), (2, 'anchors')):
        out_dims[index].dim_param = name
    onnx_path.write_bytes(model.SerializeToString())
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    with load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=tmp_path) as engine:
        assert engine.inputs[0].shape == (1, 3, 640, 640)
        assert engine.outputs[0].shape == (1, 6, 8400)
        np.testing.assert_allclose(engine.infer(image)['output0'], reference, rtol=1e-5,
                                   atol=1e-3)
    assert standin.trt.builds == 1


def test_a_killed_build_leaves_no_engine_behind(monkeypatch, tmp_path, onnx_path):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    cache = tmp_path / 'cache'

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        engine_for_onnx(onnx_path, 'cuda', 'fp16', cache)
    assert _cached(cache) == []
    monkeypatch.undo()
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    path = engine_for_onnx(onnx_path, 'cuda', 'fp16', cache)
    assert _cached(cache) == [path.name] and standin.trt.builds == 1


@pytest.mark.parametrize('version, flagged', [('8.5.2', True), ('10.3.0', False),
                                              ('11.0.0', False)])
def test_explicit_batch_flag_only_where_implicit_batch_exists(monkeypatch, tmp_path,
                                                              onnx_path, version, flagged):
    standin = tensorrt_standin.install(monkeypatch, version)
    created = []
    original = standin.trt.Builder.create_network

    def create_network(self, flags=0):
        created.append(flags)
        return original(self, flags)

    monkeypatch.setattr(standin.trt.Builder, 'create_network', create_network)
    engine_for_onnx(onnx_path, 'cuda', 'fp32', tmp_path)
    assert created == [1 if flagged else 0]


def test_standin_parser_refuses_implicit_batch_networks(monkeypatch, onnx_bytes):
    standin = tensorrt_standin.install(monkeypatch, '8.6.1')
    trt = standin.trt
    logger = trt.Logger()
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert not parser.parse(onnx_bytes)
    assert 'EXPLICIT_BATCH' in parser.get_error(0).desc()


def test_cpu_device_and_missing_tensorrt(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    with pytest.raises(ModelLoadError, match='NVIDIA GPU only.*onnxruntime'):
        load_engine(onnx_path, backend='tensorrt', device='cpu', tensorrt_cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="Unknown TensorRT precision 'int8'"):
        load_engine(onnx_path, backend='tensorrt', tensorrt_precision='int8',
                    tensorrt_cache_dir=tmp_path)
    monkeypatch.setitem(__import__('sys').modules, 'tensorrt', None)
    with pytest.raises(ModelLoadError, match='tensorrt Python package is not installed'):
        load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=tmp_path)


def test_unwritable_cache_fails_before_building(monkeypatch, tmp_path, onnx_path):
    standin = tensorrt_standin.install(monkeypatch, '10.3.0')
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    with pytest.raises(ModelLoadError, match='tensorrt_cache_dir'):
        engine_for_onnx(onnx_path, 'cuda', 'fp16', blocker / 'engines')
    assert standin.trt.builds == 0


def test_default_cache_follows_the_package_cache(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    monkeypatch.setenv('HUMAN_DETECTOR_ROS_CACHE', str(tmp_path / 'pkgcache'))
    path = engine_for_onnx(onnx_path, 'auto', 'fp16')
    assert path.parent == tmp_path / 'pkgcache' / 'engines'


def test_onnx_metadata_gives_the_names_ultralytics_stored_and_nothing_for_garbage(onnx_bytes):
    metadata = onnx_metadata(onnx_bytes)
    assert ast.literal_eval(metadata['names']) == {0: 'Normal', 1: 'Fall'}
    assert onnx_metadata(b'\xff' * 50) == {}


def test_detector_on_a_real_image_through_the_built_engine(monkeypatch, tmp_path, onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    frame = read_bgr(str(sample_image_path('astronaut.png')))
    expected = HumanDetector(onnx_path, backend='onnxruntime', device='cpu')(frame)
    with HumanDetector(onnx_path, backend='tensorrt', tensorrt_precision='fp32',
                       tensorrt_cache_dir=tmp_path) as detector:
        found = detector(frame)
        assert detector.names == {0: 'Normal', 1: 'Fall'}
    assert len(found) == len(expected) > 0
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-2)


def test_cli_builds_the_engine_and_shows_the_progress(monkeypatch, tmp_path, onnx_path,
                                                      capsys):
    from human_detector_ros.cli import main
    standin = tensorrt_standin.install(monkeypatch, '8.6.1')
    image_path = str(sample_image_path('astronaut.png'))
    monkeypatch.setenv('HUMAN_DETECTOR_ROS_CACHE', str(tmp_path / 'cache'))
    arguments = [image_path, '--model', str(onnx_path),
                 '--backend', 'tensorrt', '--tensorrt-precision', 'fp32',
                 '--output-dir', str(tmp_path / 'out')]
    assert main(arguments) == 0
    assert 'Building a TensorRT engine from' in capsys.readouterr().err
    summary = json.loads((tmp_path / 'out' / 'detections.json').read_text())
    assert summary['backend'] == 'tensorrt' and summary['images'][0]['detections']
    assert summary['model'].endswith('.fp32.b1.engine')
    assert main(arguments) == 0 and standin.trt.builds == 1
    assert 'Using the cached TensorRT engine' in capsys.readouterr().err


def test_cached_engine_that_no_longer_loads_is_named_for_deletion(monkeypatch, tmp_path,
                                                                  onnx_path):
    tensorrt_standin.install(monkeypatch, '10.3.0')
    path = engine_for_onnx(onnx_path, 'cuda', 'fp16', tmp_path)
    assert path.stat().st_mode & 0o777 == 0o644
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError) as error:
        load_engine(onnx_path, backend='tensorrt', tensorrt_cache_dir=tmp_path)
    message = str(error.value)
    assert 'cannot deserialize' in message
    assert f'{path} is the engine cached for {onnx_path}: delete it' in message
