"""Letterbox geometry, pixels and the inverse box mapping (Ultralytics LetterBox semantics)."""
from __future__ import annotations

import cv2
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from human_detector_ros.letterbox import (
    letterbox, letterbox_transform, PAD_VALUE, to_network_input)

INPUT_HW = (640, 640)
ODD_SIZES = [(23, 17), (17, 23), (1, 3000), (3000, 1), (481, 640), (639, 640), (333, 999),
             (1999, 601), (2160, 3840), (3840, 2160), (512, 512), (640, 640), (7, 7)]
DST_SIZES = [(640, 640), (384, 640), (640, 480), (321, 479)]


def _random_image(hw, seed=0):
    return np.random.default_rng(seed).integers(0, 256, tuple(hw) + (3,), dtype=np.uint8)


@pytest.mark.parametrize('src_hw, dst_hw, resized_hw, pad_top, pad_left', [
    ((480, 640), (640, 640), (480, 640), 80, 0),
    ((640, 480), (640, 640), (640, 480), 0, 80),
    ((1080, 1920), (640, 640), (360, 640), 140, 0),
    ((481, 640), (640, 640), (481, 640), 79, 0),      # 159 rows of padding: 79 top, 80 bottom
    ((639, 640), (640, 640), (639, 640), 0, 0),       # 1 row of padding: all at the bottom
    ((100, 50), (640, 640), (640, 320), 0, 160),      # scaled up
    ((1, 3000), (640, 640), (1, 640), 319, 0),        # a thin image keeps 1 row
    ((23, 17), (640, 640), (640, 473), 0, 83),        # 167 columns: 83 left, 84 right
])
def test_transform_matches_hand_computed_geometry(src_hw, dst_hw, resized_hw, pad_top,
                                                  pad_left):
    transform = letterbox_transform(src_hw, dst_hw)
    assert transform.resized_hw == resized_hw
    assert (transform.pad_top, transform.pad_left) == (pad_top, pad_left)
    assert transform.scale == pytest.approx(min(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from(DST_SIZES))
def test_padding_splits_k_and_k_plus_1_and_fills_the_input(src_h, src_w, dst_hw):
    transform = letterbox_transform((src_h, src_w), dst_hw)
    resized_h, resized_w = transform.resized_hw
    bottom = dst_hw[0] - resized_h - transform.pad_top
    right = dst_hw[1] - resized_w - transform.pad_left
    assert bottom - transform.pad_top in (0, 1)
    assert right - transform.pad_left in (0, 1)
    assert min(transform.pad_top, transform.pad_left, bottom, right) >= 0
    # One side fits the input exactly (up to the rounding of the other side to >= 1 px).
    assert resized_h == dst_hw[0] or resized_w == dst_hw[1]


def test_python_round_is_half_to_even_like_ultralytics():
    # Source (4, 5) into (2, 10): r = 0.5, width 2.5 -> round-half-even 2, not 3.
    transform = letterbox_transform((4, 5), (2, 10))
    assert transform.resized_hw == (2, 2)
    assert (transform.pad_top, transform.pad_left) == (0, 4)


@pytest.mark.parametrize('src_hw', ODD_SIZES)
def test_letterbox_pixels_are_padding_and_the_opencv_resize(src_hw):
    image = _random_image(src_hw)
    transform = letterbox_transform(src_hw, INPUT_HW)
    out = letterbox(image, transform)
    top, left = transform.pad_top, transform.pad_left
    height, width = transform.resized_hw
    interior = out[top:top + height, left:left + width]
    if transform.resized_hw == src_hw:
        np.testing.assert_array_equal(interior, image)
    else:
        expected = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(interior, expected)
    mask = np.ones(INPUT_HW, bool)
    mask[top:top + height, left:left + width] = False
    assert (out[mask] == PAD_VALUE).all()


def test_same_size_is_copied_not_resized():
    image = _random_image(INPUT_HW, seed=3)
    transform = letterbox_transform(INPUT_HW, INPUT_HW)
    assert (transform.pad_top, transform.pad_left, transform.scale) == (0, 0, 1.0)
    np.testing.assert_array_equal(letterbox(image, transform), image)


def test_letterbox_writes_into_out_and_overwrites_stale_content():
    transform = letterbox_transform((300, 500), INPUT_HW)
    image = _random_image((300, 500), seed=4)
    fresh = letterbox(image, transform)
    out = np.full(INPUT_HW + (3,), 7, np.uint8)
    returned = letterbox(image, transform, out=out)
    assert returned is out
    np.testing.assert_array_equal(out, fresh)


def test_non_contiguous_source_gives_the_same_letterbox():
    image = _random_image((301, 517), seed=5)
    flipped_view = image[:, ::-1]
    transform = letterbox_transform(flipped_view.shape[:2], INPUT_HW)
    np.testing.assert_array_equal(letterbox(flipped_view, transform),
                                  letterbox(np.ascontiguousarray(flipped_view), transform))


def test_letterbox_rejects_mismatched_image_and_buffer():
    transform = letterbox_transform((300, 500), INPUT_HW)
    with pytest.raises(ValueError):
        letterbox(_random_image((500, 300)), transform)
    with pytest.raises(ValueError):
        letterbox(_random_image((300, 500)), transform, out=np.empty((640, 640, 3), np.float32))
    with pytest.raises(ValueError):
        letterbox_transform((0, 5), INPUT_HW)


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_network_input_is_rgb_chw_divided_by_255(dtype):
    image = _random_image((640, 640), seed=6)
    out = np.empty((1, 3, 640, 640), dtype)
    returned = to_network_input(image, dtype, out=out)
    assert returned is out and out.dtype == dtype
    for channel, bgr_index in enumerate((2, 1, 0)):
        expected = (image[:, :, bgr_index].astype(np.float32) / np.float32(255)).astype(dtype)
        np.testing.assert_array_equal(out[0, channel], expected)
    assert to_network_input(image, dtype).shape == (1, 3, 640, 640)


@pytest.mark.parametrize('src_hw', ODD_SIZES)
def test_boxes_round_trip_through_the_letterbox(src_hw):
    transform = letterbox_transform(src_hw, INPUT_HW)
    rng = np.random.default_rng(7)
    height, width = src_hw
    corners = np.sort(rng.uniform(0, 1, (50, 2, 2)), axis=1)
    boxes = np.stack([corners[:, 0, 0] * width, corners[:, 0, 1] * height,
                      corners[:, 1, 0] * width, corners[:, 1, 1] * height], 1)
    letterboxed = transform.boxes_to_letterbox(boxes)
    assert (letterboxed[:, 0::2] >= transform.pad_left - 1e-3).all()
    assert (letterboxed[:, 0::2] <= transform.pad_left + transform.resized_hw[1] + 1e-3).all()
    recovered = transform.boxes_to_source(letterboxed)
    np.testing.assert_allclose(recovered, boxes, rtol=1e-5, atol=1e-3 * max(src_hw))


@pytest.mark.parametrize('src_hw', [(480, 640), (1080, 1920), (333, 999), (1999, 601),
                                    (100, 50)])
def test_a_drawn_rectangle_maps_back_to_where_it_was(src_hw):
    """Geometry, not algebra: find a white block in the letterboxed image, map it back."""
    height, width = src_hw
    x1, y1, x2, y2 = width // 5, height // 3, width * 3 // 5, height * 5 // 6
    image = np.zeros((height, width, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    transform = letterbox_transform(src_hw, INPUT_HW)
    bright = letterbox(image, transform)[:, :, 0] > 127
    rows, cols = np.flatnonzero(bright.any(1)), np.flatnonzero(bright.any(0))
    found = np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], np.float32)
    recovered = transform.boxes_to_source(found)[0]
    tolerance = 1.0 / min(transform.gain_xy) + 1.0
    np.testing.assert_allclose(recovered, [x1, y1, x2, y2], atol=tolerance)


def test_boxes_to_source_clips_and_leaves_its_input_alone():
    transform = letterbox_transform((480, 640), INPUT_HW)
    boxes = np.array([[-20.0, 10.0, 700.0, 660.0], [100.0, 100.0, 200.0, 200.0]], np.float32)
    before = boxes.copy()
    mapped = transform.boxes_to_source(boxes)
    np.testing.assert_array_equal(boxes, before)
    np.testing.assert_allclose(mapped[0], [0, 0, 640, 480])
    np.testing.assert_allclose(mapped[1], [100, 20, 200, 120])
    assert mapped.dtype == np.float32


def test_inverse_divides_by_the_resize_actually_done():
    # 23x17 -> 640x473: r = 27.826..., but the width was resized by 473 / 17 = 27.8235...
    transform = letterbox_transform((23, 17), INPUT_HW)
    right_edge = transform.pad_left + transform.resized_hw[1]
    mapped = transform.boxes_to_source(np.array([[transform.pad_left, 0, right_edge, 640]]))
    np.testing.assert_allclose(mapped[0], [0, 0, 17, 23], atol=1e-4)
