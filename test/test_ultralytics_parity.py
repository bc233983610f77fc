"""Our detector equals Ultralytics' own pipeline, frame for frame.

test/fixtures/ultralytics_reference.json holds what Ultralytics (LetterBox -> ONNX Runtime ->
non_max_suppression -> scale_boxes) found in the sample images and in generated frames of many
sizes, for several thresholds; tools/make_reference_fixtures.py wrote it and rebuilds the
frames here from their seed. Ultralytics itself is not needed to run this test. Both the numpy
pipeline and the torch pipeline letterboxing on the device (`resize_on='device'`, run here on a
CPU torch device) are checked against it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from network_inputs import OnnxThroughTorch

from human_detector_ros import assets
from human_detector_ros.detector import HumanDetector
from human_detector_ros.letterbox import letterbox
from human_detector_ros.postprocess import NmsConfig

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / 'test' / 'fixtures' / 'ultralytics_reference.json'
BOX_TOLERANCE_PX = 0.01
SCORE_TOLERANCE = 1e-4


def _load_generator():
    spec = importlib.util.spec_from_file_location(
        'make_reference_fixtures', ROOT / 'tools' / 'make_reference_fixtures.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
reference = json.loads(FIXTURE.read_text())


@pytest.fixture(scope='module')
def detector():
    model = assets.default_model_path()
    if hashlib.sha256(model.read_bytes()).hexdigest() != reference['model_sha256']:
        pytest.fail(f'{model} is not the model the fixture was made with; re-fetch it')
    with HumanDetector(model, backend='onnxruntime', device='cpu') as instance:
        yield instance


# Engine outputs by the sha256 of the network input: a frame whose device letterbox equals the
# numpy one (what the device test checks) is inferred once for both tests.
_OUTPUTS_BY_INPUT = {}


def _infer(engine, images):
    key = hashlib.sha256(np.ascontiguousarray(images).tobytes()).digest()
    if key not in _OUTPUTS_BY_INPUT:
        _OUTPUTS_BY_INPUT[key] = engine.infer(images)
    return _OUTPUTS_BY_INPUT[key]


@pytest.fixture(scope='module')
def device_pipeline(detector):
    """The torch pipeline letterboxing on the device, on a CPU torch device."""
    pytest.importorskip('torch')
    from human_detector_ros.gpu_pipeline import TorchPipeline

    engine = OnnxThroughTorch(detector.engine,
                              infer=lambda images: _infer(detector.engine, images))
    return engine, TorchPipeline(engine, detector.layout, detector.postprocess,
                                 resize_on='device')


@pytest.fixture(scope='module')
def samples():
    return generator.load_samples()


@pytest.fixture(scope='module')
def figures():
    """Largest differences seen over the module, printed at the end (pytest -s)."""
    seen = {'images': 0, 'detections': 0, 'box_px': 0.0, 'score': 0.0}
    yield seen
    print(f'\nUltralytics {reference["ultralytics_version"]} parity: {seen["images"]} images, '
          f'{seen["detections"]} detections, max box diff {seen["box_px"]:.2e} px, '
          f'max score diff {seen["score"]:.2e}')


def _config(entry):
    return NmsConfig(conf_threshold=entry['conf'], iou_threshold=entry['iou'],
                     max_det=entry['max_det'], agnostic=entry['agnostic'],
                     classes=None if entry['classes'] is None else tuple(entry['classes']))


def _image(entry, samples):
    kind, _, name = entry['source'].partition(':')
    return samples[name] if kind == 'sample' else generator.generate_frame(int(name), samples,
                                                                           reference['seed'])


def test_fixture_matches_this_generator():
    assert reference['generator_version'] == generator.GENERATOR_VERSION
    assert reference['num_frames'] >= 200
    assert [entry['source'] for entry in reference['images']] == (
        [f'sample:{name}' for name in generator.SAMPLE_NAMES]
        + [f'frame:{index}' for index in range(reference['num_frames'])])
    assert [_config(entry) for entry in reference['configs']]
    frames_with_people = sum(any(row[5] == 0 for row in entry['detections'][0])
                             for entry in reference['images'])
    assert frames_with_people > 100


@pytest.mark.parametrize('entry', reference['images'], ids=lambda entry: entry['source'])
def test_detections_equal_ultralytics(entry, detector, samples, figures):
    image = _image(entry, samples)
    assert generator.array_sha256(image) == entry['image_sha256'], (
        'the generated frame differs from the one Ultralytics saw (numpy/OpenCV changed?); '
        'regenerate the fixture with tools/make_reference_fixtures.py')
    images, transform = detector.preprocess(image)
    letterboxed = letterbox(image, transform)
    assert generator.array_sha256(letterboxed) == entry['letterbox_sha256']
    outputs = _infer(detector.engine, images)
    figures['images'] += 1
    for config_entry, expected_rows in zip(reference['configs'], entry['detections']):
        detector.config = _config(config_entry)
        _compare(detector.postprocess(outputs, transform), expected_rows,
                 f'{entry["source"]} {config_entry}', figures)


@pytest.mark.parametrize('entry', reference['images'], ids=lambda entry: entry['source'])
def test_device_resize_detections_equal_ultralytics(entry, detector, device_pipeline, samples,
                                                    figures):
    """resize_on='device': the letterboxed bytes are Ultralytics' and so are the detections.

    Every frame with the first thresholds; the samples and the fixed sizes (23x17 ...
    3840x2160) with all of them (the same bytes make the same engine outputs; the NMS on them
    is checked for every threshold in test_device_nms.py).
    """
    engine, pipeline = device_pipeline
    image = _image(entry, samples)
    transform = detector.checked_transform(image)
    kind, _, name = entry['source'].partition(':')
    every_config = kind == 'sample' or int(name) < len(generator.FIXED_SIZES)
    configs = reference['configs'] if every_config else reference['configs'][:1]
    for config_entry, expected_rows in zip(configs, entry['detections']):
        detections = pipeline.run(image, transform, _config(config_entry), time.perf_counter())
        _compare(detections, expected_rows, f'{entry["source"]} {config_entry} device', figures)
    network_input = pipeline.input.numpy()[0]
    letterboxed = np.ascontiguousarray(
        np.rint(network_input * 255).astype(np.uint8)[::-1].transpose(1, 2, 0))
    assert generator.array_sha256(letterboxed) == entry['letterbox_sha256']
    assert pipeline.fallbacks == 0


def _compare(detections, expected_rows, label, figures):
    expected = np.asarray(expected_rows, np.float64).reshape(-1, 6)
    assert len(detections) == len(expected), label
    assert detections.class_ids.tolist() == expected[:, 5].astype(int).tolist(), label
    if len(expected):
        box_diff = float(np.abs(detections.boxes - expected[:, :4]).max())
        score_diff = float(np.abs(detections.scores - expected[:, 4]).max())
        assert box_diff <= BOX_TOLERANCE_PX, label
        assert score_diff <= SCORE_TOLERANCE, label
        figures['box_px'] = max(figures['box_px'], box_diff)
        figures['score'] = max(figures['score'], score_diff)
        figures['detections'] += len(expected)
