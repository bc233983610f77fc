"""FramePipeline (ROS-free) with the real default model on the sample people: per-camera
tracking, 3D positions from depth, annotation, live reconfiguration and per-frame errors."""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import numpy as np
import pytest

from human_detector_ros.annotate import draw_detections, track_labels
from human_detector_ros.depth import DepthFrame, DepthImage, Intrinsics, locate_people
from human_detector_ros.detector import HumanDetector
from human_detector_ros.errors import InferenceError, InvalidImageError
from human_detector_ros.frame_pipeline import STAGES, CameraFrame, FramePipeline
from human_detector_ros.postprocess import NmsConfig
from human_detector_ros.synthetic import (
    Person, depth_metres, encode_depth, render, walking_sequence)
from human_detector_ros.tracking import LIBRARY_MISSING, TrackerConfig

INTRINSICS = Intrinsics(fx=600.0, fy=605.0, cx=640.5, cy=362.0)
needs_tracking = pytest.mark.skipif(bool(LIBRARY_MISSING), reason=str(LIBRARY_MISSING))


@pytest.fixture(scope='module')
def detector() -> Iterator[HumanDetector]:
    with HumanDetector(backend='onnxruntime', device='cpu', agnostic_nms=True) as instance:
        yield instance


@pytest.fixture(scope='module')
def frames() -> List[np.ndarray]:
    """Frames 0, 1 and 3 of the walking sequence: the model sees both people in each."""
    return [render(walking_sequence()[index].people)[0] for index in (0, 1, 3)]


def ids_of(result) -> List[int]:
    return sorted(result.track_ids.tolist())


@needs_tracking
def test_track_ids_persist_per_camera_and_cameras_are_independent(detector, frames):
    pipeline = FramePipeline(detector, tracking=True, annotate=False)
    alone, _ = render({'camera': Person('camera.png', 700, 100)})
    front_ids, rear_ids = [], []
    for index, bgr in enumerate(frames):
        front, rear = pipeline.process_batch([
            CameraFrame('front', bgr, 10.0 + 0.1 * index),
            CameraFrame('rear', alone, 500.0 + 0.1 * index)])
        assert front.error is None and rear.error is None
        assert front.camera == 'front' and rear.camera == 'rear'
        front_ids.append(ids_of(front))
        rear_ids.append(ids_of(rear))
    # Each camera's tracker numbers its own people from 1: the rear camera's person is not
    # given an id after the front camera's two.
    assert front_ids == [[1, 2]] * len(frames)
    assert rear_ids == [[1]] * len(frames)
    # A stamp going backwards restarts the front camera's tracker only.
    front, rear = pipeline.process_batch([CameraFrame('front', frames[0], 1.0),
                                          CameraFrame('rear', alone, 500.5)])
    assert ids_of(front) == [3, 4] and ids_of(rear) == [1]
    assert pipeline.tracker_resets('front') == 1 and pipeline.tracker_resets('rear') == 0


def depth_case(encoding: str, depths: Dict[str, Optional[float]]):
    bgr, rects = render({'astronaut': Person('astronaut.png', 60, 100),
                         'camera': Person('camera.png', 700, 100)})
    step, data = encode_depth(depth_metres(rects, depths), encoding)
    return bgr, DepthImage(encoding, bgr.shape[0], bgr.shape[1], step, False, data)


@pytest.mark.parametrize('encoding, depths', [
    ('16UC1', {'astronaut': 3.3, 'camera': 5.55}),
    ('32FC1', {'astronaut': None, 'camera': 2.0}),
])
def test_positions_equal_the_depth_module_on_the_detected_boxes(detector, encoding, depths):
    bgr, depth = depth_case(encoding, depths)
    pipeline = FramePipeline(detector)
    result = pipeline.process(CameraFrame('', bgr, depth=DepthFrame(depth, INTRINSICS)))
    expected = locate_people(depth, detector(bgr).boxes, INTRINSICS)
    assert len(expected) == 2 and result.positions == expected
    assert sum(position is None for position in result.positions) == \
        sum(z is None for z in depths.values())
    # A callable depth is asked for after detection and after `on_tracked`, and gives the
    # same positions.
    events = []

    def later() -> DepthFrame:
        events.append('depth')
        return DepthFrame(depth, INTRINSICS, (bgr.shape[1], bgr.shape[0]))

    def tracked(partial) -> None:
        events.append(('tracked', len(partial.detections), partial.positions))
    assert pipeline.process(CameraFrame('', bgr, depth=later), tracked).positions == expected
    assert events == [('tracked', 2, None), 'depth']


def test_depth_of_another_size_gives_no_positions_and_says_why(detector, frames):
    _, depth = depth_case('16UC1', {'astronaut': 2.0, 'camera': 3.0})
    pipeline = FramePipeline(detector)
    other_info = pipeline.process(
        CameraFrame('', frames[0], depth=DepthFrame(depth, INTRINSICS, (640, 360))))
    assert other_info.positions is None and len(other_info.detections) == 2
    assert 'camera_info 640x360 do not match the image 1280x720' in other_info.depth_problem
    small = DepthImage.from_array(np.full((360, 640), 2000, np.uint16))
    other_depth = pipeline.process(CameraFrame('', frames[0], depth=DepthFrame(small, INTRINSICS)))
    assert other_depth.positions is None
    assert other_depth.depth_problem == 'depth 640x360 does not match the image 1280x720'
    no_depth = pipeline.process(CameraFrame('', frames[0]))
    assert no_depth.positions is None and no_depth.depth_problem is None


@needs_tracking
def test_annotation_draws_ids_and_distances_and_can_be_switched_off(detector):
    bgr, depth = depth_case('32FC1', {'astronaut': 2.25, 'camera': 6.7})
    pipeline = FramePipeline(detector, tracking=True)
    result = pipeline.process(CameraFrame('', bgr, 3.0, DepthFrame(depth, INTRINSICS)))
    labels = track_labels([str(track_id) for track_id in result.track_ids.tolist()],
                          [position.z for position in result.positions])
    assert all(label.startswith('#') and label.endswith('m') for label in labels)
    np.testing.assert_array_equal(
        result.annotated, draw_detections(bgr, result.detections, detector.names, labels))
    assert set(result.timings_ms) == set(STAGES)
    assert all(value >= 0.0 for value in result.timings_ms.values())
    assert pipeline.process(CameraFrame('', bgr, 3.1, annotate=False)).annotated is None
    pipeline.reconfigure(annotate=False)
    assert pipeline.process(CameraFrame('', bgr, 3.2)).annotated is None
    pipeline.reconfigure(annotate=True, names={0: 'upright', 1: 'fallen'})
    renamed = pipeline.process(CameraFrame('', bgr, 3.3))
    labels = track_labels([str(track_id) for track_id in renamed.track_ids.tolist()],
                          [None] * len(renamed.detections))
    np.testing.assert_array_equal(renamed.annotated, draw_detections(
        bgr, renamed.detections, {0: 'upright', 1: 'fallen'}, labels))


@needs_tracking
def test_reconfigure_applies_from_the_next_frame(detector, frames):
    pipeline = FramePipeline(detector)
    first = pipeline.process(CameraFrame('', frames[0], 1.0))
    assert first.track_ids is None and len(first.detections) == 2
    pipeline.reconfigure(nms=NmsConfig(conf_threshold=0.99))
    assert len(pipeline.process(CameraFrame('', frames[1], 1.1)).detections) == 0
    pipeline.reconfigure(nms=NmsConfig(agnostic=True), tracking=True)
    tracked = pipeline.process(CameraFrame('', frames[1], 1.1))
    assert ids_of(tracked) == [1, 2]
    # A new tracker config restarts the tracker; ids stay unique.
    pipeline.reconfigure(tracker_config=TrackerConfig(lost_track_s=2.0))
    assert ids_of(pipeline.process(CameraFrame('', frames[2], 1.2))) == [3, 4]
    pipeline.reconfigure(tracking=False)
    assert pipeline.process(CameraFrame('', frames[2], 1.3)).track_ids is None


def test_a_bad_frame_fails_alone(detector, frames):
    pipeline = FramePipeline(detector, annotate=False)
    grey = frames[0][:, :, 0]
    good, bad, other = pipeline.process_batch([
        CameraFrame('a', frames[0]), CameraFrame('b', grey), CameraFrame('c', frames[1])])
    assert isinstance(bad.error, InvalidImageError) and len(bad.detections) == 0
    assert good.error is None and other.error is None
    np.testing.assert_array_equal(good.detections.boxes, detector(frames[0]).boxes)
    np.testing.assert_array_equal(other.detections.boxes, detector(frames[1]).boxes)
    # Both detected frames came from one detector call: its time, counted once.
    detection = ('preprocess', 'infer', 'postprocess')
    assert [good.timings_ms[stage] for stage in detection] == [
        other.timings_ms[stage] for stage in detection]
    assert pipeline.detect_ms == pytest.approx(sum(good.timings_ms[stage] for stage in detection))
    with pytest.raises(InvalidImageError, match='HxWx3 uint8'):
        pipeline.process(CameraFrame('b', grey))


def test_an_inference_failure_stays_with_its_frame(failing_tiny_model):
    with HumanDetector(failing_tiny_model, backend='onnxruntime', device='cpu',
                       conf_threshold=0.01) as tiny:
        pipeline = FramePipeline(tiny, annotate=False)
        image = np.random.default_rng(0).integers(0, 200, (64, 96, 3), np.uint8)
        white = np.full((64, 64, 3), 255, np.uint8)  # the input size: no grey padding
        results = pipeline.process_batch([CameraFrame('a', image), CameraFrame('b', white),
                                          CameraFrame('a', image)])
        assert [type(result.error) for result in results] == [type(None), InferenceError,
                                                              type(None)]
        expected = tiny(image)
        for result in (results[0], results[2]):
            np.testing.assert_array_equal(result.detections.scores, expected.scores)
        with pytest.raises(InferenceError):
            pipeline.process(CameraFrame('b', white))
