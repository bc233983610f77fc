"""Layout detection and decoding of every layout; NMS cases whose answer is known by design."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from human_detector_ros.engines.base import TensorSpec
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.letterbox import letterbox_transform
from human_detector_ros.postprocess import (
    Detections, efficient_nms_roles, filter_detections, MAX_NMS, nms_indices,
    non_max_suppression, NmsConfig, OutputLayout, postprocess, resolve_layout)

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
IDENTITY = letterbox_transform((640, 640), (640, 640))


def spec(name, shape, dtype=F32):
    return TensorSpec(name, tuple(shape), np.dtype(dtype))


def raw_output(boxes_xywh, class_scores):
    """[1, 4+nc, N] float32 from N (cx, cy, w, h) boxes and an (N, nc) score matrix."""
    boxes = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
    scores = np.asarray(class_scores, np.float32).reshape(boxes.shape[0], -1)
    return np.concatenate([boxes, scores], 1).T[None].copy()


def decode_raw(output, **config):
    return postprocess({'output0': output}, OutputLayout.RAW, NmsConfig(**config), IDENTITY)


# --- layouts -------------------------------------------------------------------------------

@pytest.mark.parametrize('outputs, layout', [
    ([spec('output0', (1, 6, 8400))], OutputLayout.RAW),
    ([spec('output0', (1, 84, 8400))], OutputLayout.RAW),
    ([spec('output0', (1, 5, 2100), np.float16)], OutputLayout.RAW),
    ([spec('output0', (-1, 6, -1))], OutputLayout.RAW),
    ([spec('output0', (1, 300, 6))], OutputLayout.END_TO_END),
    ([spec('output0', (-1, -1, 6))], OutputLayout.END_TO_END),
    ([spec('num_dets', (1, 1), I32), spec('det_boxes', (1, 100, 4)),
      spec('det_scores', (1, 100)), spec('det_classes', (1, 100), I32)],
     OutputLayout.EFFICIENT_NMS),
    ([spec('det_classes', (-1, 100), I32), spec('det_scores', (-1, 100)),
      spec('det_boxes', (-1, 100, 4)), spec('num_dets', (-1, 1), I32)],
     OutputLayout.EFFICIENT_NMS),
    ([spec('a', (1, 100, 4)), spec('b', (1, 1), I32), spec('c', (1, 100), I32),
      spec('d', (1, 100))], OutputLayout.EFFICIENT_NMS),
])
def test_layout_is_recognised_from_specs(outputs, layout):
    assert resolve_layout(outputs) is layout


def test_efficient_nms_roles_by_name_and_by_shape():
    named = [spec('num_detections', (1, 1), I32), spec('detection_boxes', (1, 50, 4)),
             spec('detection_scores', (1, 50)), spec('detection_classes', (1, 50), I32)]
    assert efficient_nms_roles(named) == {
        'num_dets': 'num_detections', 'boxes': 'detection_boxes',
        'scores': 'detection_scores', 'classes': 'detection_classes'}
    anonymous = [spec('o3', (1, 50), I32), spec('o1', (1, 50, 4)), spec('o0', (1, 1), I32),
                 spec('o2', (1, 50))]
    assert efficient_nms_roles(anonymous) == {
        'num_dets': 'o0', 'boxes': 'o1', 'scores': 'o2', 'classes': 'o3'}


@pytest.mark.parametrize('outputs, message', [
    ([], '0 outputs'),
    ([spec('a', (1, 6, 8400)), spec('b', (1, 32, 160, 160))], '2 outputs'),
    ([spec('output0', (6, 8400))], 'rank 2'),
    ([spec('output0', (1, 6, 8400), np.int32)], 'not float'),
    ([spec('output0', (1, 4, 8400))], '4 channels'),
    ([spec('output0', (1, -1, 8400))], 'dynamic'),
    ([spec('output0', (0, 6, 8400))], 'batch 0'),
    ([spec('a', (1, 100)), spec('b', (1, 100)), spec('c', (1, 100)), spec('d', (1, 100))],
     'cannot tell'),
    ([spec('num_dets', (1, 1), F32), spec('det_boxes', (1, 100, 4)),
      spec('det_scores', (1, 100)), spec('det_classes', (1, 100), I32)], 'integer'),
    ([spec('num_dets', (1, 1), I32), spec('det_boxes', (1, 100)),
      spec('det_scores', (1, 100)), spec('det_classes', (1, 100), I32)], 'rank'),
])
def test_unsupported_layouts_raise_model_load_error(outputs, message):
    with pytest.raises(ModelLoadError, match=message) as raised:
        resolve_layout(outputs)
    assert 'Supported:' in str(raised.value)


# --- raw head + NMS --------------------------------------------------------------------------

def test_confidence_threshold_is_strict():
    output = raw_output([[100, 100, 20, 20], [300, 300, 20, 20]], [[0.5], [0.50001]])
    detections = decode_raw(output, conf_threshold=0.5)
    assert len(detections) == 1
    np.testing.assert_allclose(detections.scores, [0.50001])


def test_best_class_only_with_its_score():
    output = raw_output([[100, 100, 40, 60]], [[0.6, 0.7, 0.1]])
    detections = decode_raw(output, conf_threshold=0.25)
    assert detections.class_ids.tolist() == [1]
    np.testing.assert_allclose(detections.scores, [0.7])
    np.testing.assert_allclose(detections.boxes, [[80, 70, 120, 130]])
    assert detections.boxes.dtype == np.float32 and detections.class_ids.dtype == np.int64


def test_class_aware_keeps_overlapping_boxes_of_two_classes_agnostic_does_not():
    # Same box, 0.9 for class 0 and 0.8 for class 1: IoU 1.
    output = raw_output([[200, 200, 100, 100], [202, 200, 100, 100]], [[0.9, 0.0], [0.0, 0.8]])
    aware = decode_raw(output, conf_threshold=0.25, agnostic=False)
    agnostic = decode_raw(output, conf_threshold=0.25, agnostic=True)
    assert aware.class_ids.tolist() == [0, 1]
    assert agnostic.class_ids.tolist() == [0]
    np.testing.assert_allclose(agnostic.scores, [0.9])


def test_same_class_overlap_is_suppressed_and_disjoint_boxes_survive():
    output = raw_output([[100, 100, 50, 50], [102, 101, 50, 50], [400, 400, 50, 50]],
                        [[0.7], [0.9], [0.6]])
    detections = decode_raw(output, conf_threshold=0.25)
    np.testing.assert_allclose(detections.scores, [0.9, 0.6])
    np.testing.assert_allclose(detections.boxes[0], [77, 76, 127, 126])


@pytest.mark.parametrize('iou_threshold, kept', [(0.5, 2), (0.4999, 1)])
def test_iou_exactly_at_threshold_is_kept(iou_threshold, kept):
    # A = [0,0,10,10], B = [0,0,10,20]: intersection 100, union 200, IoU exactly 0.5.
    output = raw_output([[5, 5, 10, 10], [5, 10, 10, 20]], [[0.9], [0.8]])
    assert len(decode_raw(output, conf_threshold=0.25, iou_threshold=iou_threshold)) == kept


def test_max_det_keeps_the_best_and_output_is_sorted_by_score():
    centres = np.arange(10) * 60 + 30
    boxes = [[c, 300, 40, 40] for c in centres]
    scores = np.linspace(0.3, 0.95, 10)[::-1][np.argsort(np.arange(10) % 3, kind='stable')]
    output = raw_output(boxes, scores[:, None])
    everything = decode_raw(output, conf_threshold=0.25)
    assert len(everything) == 10
    assert (np.diff(everything.scores) <= 0).all()
    top3 = decode_raw(output, conf_threshold=0.25, max_det=3)
    np.testing.assert_allclose(top3.scores, np.sort(scores)[::-1][:3], rtol=1e-6)


def test_class_filter():
    output = raw_output([[100, 100, 50, 50], [300, 300, 50, 50], [500, 500, 50, 50]],
                        [[0.9, 0.1, 0.0], [0.1, 0.8, 0.0], [0.0, 0.0, 0.7]])
    detections = decode_raw(output, conf_threshold=0.25, classes=(1, 2))
    assert detections.class_ids.tolist() == [1, 2]


def test_filtered_class_does_not_suppress_others():
    # Class 0 box would suppress the class 1 box if agnostic; filtered out, it cannot.
    output = raw_output([[100, 100, 50, 50], [101, 100, 50, 50]], [[0.9, 0.0], [0.0, 0.8]])
    detections = decode_raw(output, conf_threshold=0.25, agnostic=True, classes=(1,))
    assert detections.class_ids.tolist() == [1]


def test_more_than_max_nms_candidates_keeps_only_the_best_max_nms():
    # MAX_NMS identical boxes (all suppressed by the best) plus 5 disjoint low scorers that
    # survive NMS only if they are not truncated away first.
    crowd = MAX_NMS
    boxes = [[100, 100, 50, 50]] * crowd + [[400 + 40 * i, 500, 20, 20] for i in range(5)]
    scores = np.concatenate([np.linspace(0.9, 0.5, crowd), np.full(5, 0.3)])
    output = raw_output(boxes, scores[:, None])
    assert len(decode_raw(output, conf_threshold=0.25)) == 1
    assert len(decode_raw(output[:, :, crowd - 10:], conf_threshold=0.25)) == 6


def test_no_candidates_gives_empty_detections():
    output = raw_output([[100, 100, 50, 50]], [[0.1, 0.2]])
    detections = decode_raw(output, conf_threshold=0.25)
    assert len(detections) == 0
    assert detections.boxes.shape == (0, 4) and detections.class_ids.dtype == np.int64


def test_raw_output_is_not_modified_and_float16_is_accepted():
    rng = np.random.default_rng(1)
    output = raw_output(np.c_[rng.uniform(50, 590, (200, 2)), rng.uniform(5, 80, (200, 2))],
                        rng.uniform(0, 1, (200, 2)))
    before = output.copy()
    first = decode_raw(output, conf_threshold=0.25)
    np.testing.assert_array_equal(output, before)
    second = decode_raw(output, conf_threshold=0.25)
    np.testing.assert_array_equal(first.boxes, second.boxes)
    half = decode_raw(output.astype(np.float16), conf_threshold=0.25)
    assert abs(len(half) - len(first)) <= 2


def test_boxes_are_mapped_to_source_pixels():
    transform = letterbox_transform((240, 640), (640, 640))   # scale 1, 200 px top padding
    output = raw_output([[320, 320, 100, 60], [320, 210, 100, 40]], [[0.9], [0.8]])
    detections = postprocess({'o': output}, OutputLayout.RAW, NmsConfig(0.25), transform)
    np.testing.assert_allclose(detections.boxes, [[270, 90, 370, 150], [270, 0, 370, 30]])


def _naive_nms(boxes, scores, threshold):
    """Textbook greedy NMS in float64 Python, for random inputs away from the threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for j in keep:
            ix = max(0.0, min(boxes[i][2], boxes[j][2]) - max(boxes[i][0], boxes[j][0]))
            iy = max(0.0, min(boxes[i][3], boxes[j][3]) - max(boxes[i][1], boxes[j][1]))
            inter = ix * iy
            area_i = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            area_j = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize('seed', range(5))
def test_nms_matches_a_textbook_implementation(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (300, 2))
    boxes = np.c_[xy, xy + rng.uniform(10, 120, (300, 2))].astype(np.float32)
    scores = rng.permutation(300).astype(np.float32) / 300
    assert nms_indices(boxes, scores, 0.45).tolist() == _naive_nms(
        boxes.astype(np.float64).tolist(), scores.tolist(), 0.45)


def test_nms_keeps_input_order_for_equal_scores():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    assert nms_indices(boxes, scores, 0.45).tolist() == [0, 2]


# --- end-to-end and EfficientNMS ------------------------------------------------------------

def test_end_to_end_filters_in_model_order_without_nms():
    rows = np.zeros((1, 300, 6), np.float32)
    rows[0, :5] = [[10, 10, 50, 50, 0.6, 0], [12, 10, 52, 50, 0.9, 0], [0, 0, 5, 5, 0.25, 1],
                   [100, 100, 200, 200, 0.8, 1], [300, 300, 310, 310, 0.7, 0]]
    before = rows.copy()
    layout = resolve_layout([spec('output0', rows.shape)])
    detections = postprocess({'output0': rows}, layout, NmsConfig(0.25), IDENTITY)
    np.testing.assert_allclose(detections.scores, [0.6, 0.9, 0.8, 0.7])
    assert detections.class_ids.tolist() == [0, 0, 1, 0]
    limited = postprocess({'output0': rows}, layout, NmsConfig(0.25, classes=(0,), max_det=2),
                          IDENTITY)
    np.testing.assert_allclose(limited.scores, [0.6, 0.9])
    np.testing.assert_array_equal(rows, before)


def _efficient_nms_outputs(count, k=100):
    rng = np.random.default_rng(2)
    boxes = np.full((1, k, 4), -1.0, np.float32)
    scores = np.full((1, k), 0.99, np.float32)        # garbage past num_dets must be ignored
    classes = np.full((1, k), 7, np.int32)
    boxes[0, :count] = np.sort(rng.uniform(0, 640, (count, 4)).reshape(count, 2, 2), 1).reshape(
        count, 4)[:, [0, 2, 1, 3]]
    scores[0, :count] = np.linspace(0.9, 0.2, count)
    classes[0, :count] = np.arange(count) % 2
    return {'det_boxes': boxes, 'num_dets': np.array([[count]], np.int32),
            'det_classes': classes, 'det_scores': scores}


def test_efficient_nms_uses_num_dets_conf_class_filter_and_max_det():
    outputs = _efficient_nms_outputs(8)
    layout = resolve_layout([spec(n, a.shape, a.dtype) for n, a in outputs.items()])
    assert layout is OutputLayout.EFFICIENT_NMS
    detections = postprocess(outputs, layout, NmsConfig(0.25), IDENTITY)
    expected_scores = np.linspace(0.9, 0.2, 8)
    np.testing.assert_allclose(detections.scores, expected_scores[expected_scores > 0.25],
                               rtol=1e-6)
    np.testing.assert_allclose(detections.boxes, outputs['det_boxes'][0, :len(detections)])
    ones = postprocess(outputs, layout, NmsConfig(0.25, classes=(1,), max_det=2), IDENTITY)
    assert ones.class_ids.tolist() == [1, 1]
    np.testing.assert_allclose(ones.scores, expected_scores[[1, 3]], rtol=1e-6)


def test_efficient_nms_with_no_detections():
    outputs = _efficient_nms_outputs(0)
    detections = postprocess(outputs, OutputLayout.EFFICIENT_NMS, NmsConfig(0.25), IDENTITY)
    assert len(detections) == 0


def test_filter_detections_threshold_is_strict():
    rows = np.array([[0, 0, 1, 1, 0.5, 0], [0, 0, 1, 1, 0.6, 0]], np.float32)
    assert filter_detections(rows, NmsConfig(0.5)).shape == (1, 6)


# --- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize('kwargs', [{'conf_threshold': 1.5}, {'iou_threshold': -0.1},
                                    {'max_det': 0}])
def test_config_rejects_out_of_range_values(kwargs):
    with pytest.raises(ValueError):
        NmsConfig(**kwargs)


def test_config_classes_become_a_tuple_of_ints():
    assert NmsConfig(classes=[np.int64(0), 2]).classes == (0, 2)


def test_empty_detections():
    empty = Detections.empty()
    assert len(empty) == 0
    assert [a.dtype for a in (empty.boxes, empty.scores, empty.class_ids)] == [
        np.float32, np.float32, np.int64]


@pytest.mark.parametrize('agnostic, classes',
                         list(itertools.product([False, True], [None, (0,)])))
def test_non_max_suppression_rows_are_consistent(agnostic, classes):
    rng = np.random.default_rng(3)
    prediction = raw_output(np.c_[rng.uniform(50, 590, (500, 2)), rng.uniform(5, 80, (500, 2))],
                            rng.uniform(0, 1, (500, 3)))[0]
    rows = non_max_suppression(prediction, NmsConfig(0.3, 0.5, classes=classes,
                                                     agnostic=agnostic))
    assert rows.dtype == np.float32 and rows.shape[1] == 6
    assert (rows[:, 4] > 0.3).all() and (np.diff(rows[:, 4]) <= 0).all()
    if classes is not None:
        assert set(rows[:, 5].tolist()) <= {0.0}
    for cls in np.unique(rows[:, 5]):
        same = rows[rows[:, 5] == cls] if not agnostic else rows
        kept = nms_indices(same[:, :4].copy(), same[:, 4].copy(), 0.5)
        assert len(kept) == len(same)     # no two kept boxes overlap more than the threshold
