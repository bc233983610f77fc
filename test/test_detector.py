"""HumanDetector on the real default model (ONNX Runtime, CPU); layout wiring via stand-ins."""
from __future__ import annotations

import pathlib
from typing import Dict

import cv2
import numpy as np
import pytest

from human_detector_ros import assets, detector as detector_module
from human_detector_ros.detector import HumanDetector, StageTimings
from human_detector_ros.engines.base import Engine, ModelMetadata, TensorSpec
from human_detector_ros.errors import InferenceError, InvalidImageError, ModelLoadError
from human_detector_ros.postprocess import NmsConfig, OutputLayout

# The cameraman in camera.png, annotated by hand (x1, y1, x2, y2 pixels): hair to feet,
# coat edge to the hand on the camera.
CAMERAMAN_BOX = (0, 65, 335, 512)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _sample(name):
    image = cv2.imread(str(assets.sample_image_path(name)), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


@pytest.fixture(scope='module')
def detector():
    with HumanDetector(backend='onnxruntime', device='cpu') as instance:
        yield instance


def test_uses_the_default_model_and_its_metadata(detector):
    assert detector.engine.backend == 'onnxruntime'
    assert detector.engine.model_path == assets.default_model_path()
    assert detector.names == {0: 'Normal', 1: 'Fall'}
    assert detector.layout is OutputLayout.RAW
    assert detector.input_hw == (640, 640)
    assert detector.config == NmsConfig(0.5, 0.45, 300, None, False)


def test_cameraman_is_found(detector):
    detections = detector(_sample('camera.png'))
    assert len(detections) == 1
    assert detections.class_ids.tolist() == [0]
    assert detections.scores[0] > 0.5
    assert _iou(detections.boxes[0].tolist(), CAMERAMAN_BOX) > 0.8
    timings = detector.last_timings
    assert isinstance(timings, StageTimings)
    assert timings.preprocess_ms > 0 and timings.infer_ms > 0 and timings.postprocess_ms > 0
    assert timings.total_ms == pytest.approx(
        timings.preprocess_ms + timings.infer_ms + timings.postprocess_ms)


def test_as_array_gives_the_seed_rows(detector):
    detections = detector(_sample('camera.png'))
    rows = detections.as_array()
    assert rows.dtype == np.float32 and rows.shape == (1, 6)
    assert _iou(rows[0, :4].tolist(), CAMERAMAN_BOX) > 0.8
    assert rows[0, 4] == detections.scores[0] and rows[0, 5] == 0.0
    assert detector(_sample('coffee.png')).as_array().shape == (0, 6)


def test_coffee_has_no_person(detector):
    assert len(detector(_sample('coffee.png'))) == 0


def test_astronaut_is_a_person(detector):
    detections = detector(_sample('astronaut.png'))
    assert 0 in detections.class_ids.tolist()


def test_boxes_follow_the_image_when_it_is_padded_and_scaled(detector):
    camera = _sample('camera.png')
    reference = detector(camera).boxes[0]
    # Wide canvas: the picture sits at x = 300, scaled by 1.5; the model sees it at the same
    # size in the letterbox but with different padding and resize.
    scaled = cv2.resize(camera, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR)
    canvas = np.full((768, 1500, 3), 114, np.uint8)
    canvas[:, 300:300 + 768] = scaled
    moved = detector(canvas)
    assert moved.class_ids.tolist() == [0]
    expected = reference * 1.5 + np.array([300, 0, 300, 0])
    assert _iou(moved.boxes[0].tolist(), expected.tolist()) > 0.9


def test_non_contiguous_input_is_accepted(detector):
    camera = _sample('camera.png')
    flipped = camera[:, ::-1]
    first = detector(flipped)
    second = detector(np.ascontiguousarray(flipped))
    np.testing.assert_array_equal(first.boxes, second.boxes)
    assert first.boxes[0, 2] == pytest.approx(512 - detector(camera).boxes[0, 0], abs=25)


def test_config_can_be_replaced(detector):
    camera = _sample('camera.png')
    detector.config = NmsConfig(conf_threshold=0.95)
    try:
        assert len(detector(camera)) == 0
        detector.config = NmsConfig(conf_threshold=0.5, classes=(1,))
        assert len(detector(camera)) == 0
    finally:
        detector.config = NmsConfig()


def test_stages_can_be_run_one_by_one(detector):
    camera = _sample('camera.png')
    images, transform = detector.preprocess(camera)
    assert images.shape == (1, 3, 640, 640) and images.dtype == np.float32
    assert transform.src_hw == (512, 512)
    outputs = detector.infer(images)
    np.testing.assert_array_equal(detector.postprocess(outputs, transform).boxes,
                                  detector(camera).boxes)


@pytest.mark.parametrize('image', [
    np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8), [[1, 2, 3]], None])
def test_invalid_images_raise_invalid_image_error(detector, image):
    with pytest.raises(InvalidImageError):
        detector(image)


def test_missing_model_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        HumanDetector(tmp_path / 'missing.onnx')


# --- layout wiring with stand-in engines -------------------------------------------------------

class StandInEngine(Engine):
    """Returns fixed outputs; records what it was given."""

    backend = 'standin'

    def __init__(self, outputs: Dict[str, np.ndarray]) -> None:
        specs = tuple(TensorSpec(name, array.shape, array.dtype)
                      for name, array in outputs.items())
        super().__init__(pathlib.Path('standin.onnx'), 'cpu',
                         (TensorSpec('images', (1, 3, 320, 480), np.dtype(np.float16)),), specs,
                         ModelMetadata(names={0: 'person'}))
        self.outputs_to_return = outputs
        self.seen = []
        self.closed = False

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        self.seen.append(images.copy())
        return self.outputs_to_return

    def close(self) -> None:
        self.closed = True


def _with_engine(monkeypatch, engine):
    monkeypatch.setattr(detector_module, 'load_engine',
                        lambda path, backend, device, **options: engine)
    return HumanDetector('standin.onnx', conf_threshold=0.25)


def test_end_to_end_engine_through_the_detector(monkeypatch):
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, 0] = [100, 40, 200, 280, 0.9, 0]
    rows[0, 1] = [10, 10, 20, 20, 0.1, 0]
    engine = StandInEngine({'output0': rows})
    with _with_engine(monkeypatch, engine) as instance:
        assert instance.layout is OutputLayout.END_TO_END
        detections = instance(np.zeros((480, 640, 3), np.uint8))
    assert engine.closed
    assert engine.seen[0].shape == (1, 3, 320, 480) and engine.seen[0].dtype == np.float16
    transform = instance.transform_for((480, 640))
    np.testing.assert_allclose(detections.boxes, transform.boxes_to_source(rows[0, :1, :4]))
    assert detections.scores.tolist() == pytest.approx([0.9])


def test_efficient_nms_engine_through_the_detector(monkeypatch):
    outputs = {'num_dets': np.array([[2]], np.int32),
               'det_boxes': np.array([[[0, 0, 100, 100], [50, 50, 70, 90], [0, 0, 1, 1]]],
                                     np.float32),
               'det_scores': np.array([[0.8, 0.6, 0.99]], np.float32),
               'det_classes': np.array([[0, 0, 0]], np.int32)}
    with _with_engine(monkeypatch, StandInEngine(outputs)) as instance:
        assert instance.layout is OutputLayout.EFFICIENT_NMS
        detections = instance(np.zeros((320, 480, 3), np.uint8))
    np.testing.assert_allclose(detections.boxes, [[0, 0, 100, 100], [50, 50, 70, 90]])


def test_unsupported_engine_outputs_raise_and_close_the_engine(monkeypatch):
    engine = StandInEngine({'a': np.zeros((1, 6, 100), np.float32),
                            'b': np.zeros((1, 32, 8, 8), np.float32)})
    with pytest.raises(ModelLoadError, match='2 outputs'):
        _with_engine(monkeypatch, engine)
    assert engine.closed


def test_outputs_that_do_not_match_their_layout_raise_inference_error(monkeypatch):
    engine = StandInEngine({'output0': np.zeros((1, 6, 100), np.float32)})
    with _with_engine(monkeypatch, engine) as instance:
        engine.outputs_to_return = {'output0': np.zeros((1, 6), np.float32)}
        with pytest.raises(InferenceError, match='output0'):
            instance(np.zeros((320, 480, 3), np.uint8))
