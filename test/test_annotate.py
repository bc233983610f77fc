"""Drawing detections: boxes where they belong, labels inside the image, input untouched."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from human_detector_ros.annotate import class_color, draw_detections, line_width, track_labels
from human_detector_ros.postprocess import Detections

NAMES = {0: 'person', 1: 'fall'}
# Ultralytics' palette entries 0 and 1 (FF3838, FF9D97) as BGR.
PERSON_BGR = (0x38, 0x38, 0xFF)
FALL_BGR = (0x97, 0x9D, 0xFF)


def detections(boxes: Sequence[Sequence[float]], scores: Sequence[float],
               class_ids: Sequence[int]) -> Detections:
    return Detections(boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                      scores=np.asarray(scores, dtype=np.float32),
                      class_ids=np.asarray(class_ids, dtype=np.int64))


def uniform(height: int = 360, width: int = 480, value: int = 80) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def textured(height: int = 360, width: int = 480) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


def is_color(image: np.ndarray, color: Sequence[int]) -> np.ndarray:
    return np.all(image == np.asarray(color, dtype=np.uint8), axis=-1)


def test_palette_and_line_width_follow_ultralytics() -> None:
    assert class_color(0) == PERSON_BGR and class_color(1) == FALL_BGR
    assert class_color(20) == class_color(0)
    # max(round(sum(shape) / 2 * 0.003), 2)
    assert line_width((360, 480, 3)) == 2
    assert line_width((1080, 1920, 3)) == 5
    assert line_width((2160, 3840, 3)) == 9


def test_box_edges_are_drawn_in_the_class_colour() -> None:
    image = uniform()
    out = draw_detections(image, detections([[100, 120, 300, 260], [350, 200, 450, 330]],
                                            [0.87, 0.5], [0, 1]), NAMES)
    for y, x in [(190, 100), (190, 300), (260, 200), (120, 290)]:
        assert tuple(out[y, x]) == PERSON_BGR, (y, x)
    for y, x in [(265, 350), (265, 450), (330, 400)]:
        assert tuple(out[y, x]) == FALL_BGR, (y, x)


def test_only_pixels_near_boxes_and_labels_change() -> None:
    image = textured()
    x1, y1, x2, y2 = 100, 120, 300, 260
    out = draw_detections(image, detections([[x1, y1, x2, y2]], [0.87], [0]), NAMES)
    lw = line_width(image.shape)
    changed_y, changed_x = np.nonzero(np.any(out != image, axis=2))
    assert changed_y.size > 0
    # Box lines, plus the label that sits above the box's top-left corner.
    assert changed_y.min() >= y1 - 40 and changed_y.max() <= y2 + lw + 1
    assert changed_x.min() >= x1 - lw - 1 and changed_x.max() <= x2 + lw + 1
    margin = lw + 2
    np.testing.assert_array_equal(out[y1 + margin:y2 - margin, x1 + margin:x2 - margin],
                                  image[y1 + margin:y2 - margin, x1 + margin:x2 - margin])


def test_input_is_not_modified_and_may_be_read_only() -> None:
    image = textured()
    original = image.copy()
    read_only = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.shape)
    assert not read_only.flags.writeable
    found = detections([[10, 10, 200, 150]], [0.9], [0])
    out = draw_detections(image, found, NAMES)
    np.testing.assert_array_equal(image, original)
    np.testing.assert_array_equal(draw_detections(read_only, found, NAMES), out)
    assert not np.array_equal(out, original)


def test_empty_detections_return_an_equal_copy() -> None:
    image = textured()
    for empty in (Detections.empty(), detections([], [], [])):
        out = draw_detections(image, empty, NAMES)
        np.testing.assert_array_equal(out, image)
        assert not np.shares_memory(out, image)


def test_box_corners_are_rounded_to_whole_pixels() -> None:
    image = uniform()

    def drawn(x1: float) -> np.ndarray:
        return draw_detections(image, detections([[x1, 50, 200, 150]], [0.5], [0]), NAMES)

    np.testing.assert_array_equal(drawn(100.4), drawn(100.0))
    np.testing.assert_array_equal(drawn(100.6), drawn(101.0))
    assert not np.array_equal(drawn(100.6), drawn(100.0))


def test_unknown_class_is_labelled_with_its_number() -> None:
    image = uniform()
    found = detections([[50, 60, 150, 160]], [0.75], [7])
    out = draw_detections(image, found, NAMES)
    np.testing.assert_array_equal(out, draw_detections(image, found, {7: '7'}))
    assert not np.array_equal(out, draw_detections(image, found, {7: 'someone'}))
    assert tuple(out[110, 50]) == class_color(7)


def test_label_at_the_top_right_border_moves_inside_the_image() -> None:
    image = uniform(200, 400, value=0)
    out = draw_detections(image, detections([[392, 0, 399, 60]], [0.87], [0]), NAMES)
    # The box spans columns 392..399 only, so class colour further left is the label, which
    # had to move left (it would start at 392) and down into the box (no room above row 0).
    label_columns = np.nonzero(is_color(out[2:8, :392], PERSON_BGR).any(axis=0))[0]
    assert label_columns.size > 60
    assert label_columns.max() == 391
    # Rows above the glyphs are pure label background.
    assert is_color(out[0:3, 399 - 60:392], PERSON_BGR).all()


def test_label_at_the_left_border_starts_at_column_zero() -> None:
    image = uniform(200, 400, value=0)
    out = draw_detections(image, detections([[-30, 100, 80, 180]], [0.5], [1]), NAMES)
    # Column 0 above the box holds only the label's background (the glyphs start further in).
    assert np.count_nonzero(is_color(out[:100, 0], FALL_BGR)) >= 10
    assert tuple(out[140, 0]) == FALL_BGR


def test_label_goes_inside_the_box_when_there_is_no_room_above() -> None:
    image = uniform(200, 400, value=0)
    out = draw_detections(image, detections([[10, 5, 14, 150]], [0.5], [0]), NAMES)
    # The box is 5 px wide, so colour right of it is the label: below the top edge, not above.
    assert not is_color(out[0:3, 20:60], PERSON_BGR).any()
    assert is_color(out[5:8, 20:60], PERSON_BGR).all()


def test_label_stays_inside_a_short_image() -> None:
    image = uniform(24, 400, value=0)
    out = draw_detections(image, detections([[10, 10, 14, 23]], [0.5], [0]), NAMES)
    # Placed at the box top (row 10) the label would run past row 23; it is lifted instead.
    assert is_color(out[6:9, 20:60], PERSON_BGR).all()


@pytest.mark.parametrize('height,width', [(1080, 1920), (240, 320)])
def test_line_width_scales_with_the_image(height: int, width: int) -> None:
    image = uniform(height, width, value=0)
    out = draw_detections(image, detections([[100, 100, 200, 200]], [0.5], [0]), NAMES)
    lw = line_width(image.shape)
    # OpenCV's anti-aliased lines of thickness t are t to t + 2 pixels solid.
    solid = np.count_nonzero(is_color(out[150, 90:110], PERSON_BGR))
    assert lw <= solid <= lw + 2


@pytest.mark.parametrize('image', [np.zeros((10, 10), np.uint8),
                                   np.zeros((10, 10, 3), np.float32)])
def test_non_bgr_input_is_refused(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        draw_detections(image, detections([], [], []), NAMES)


def test_track_id_and_distance_extend_the_label() -> None:
    assert track_labels(['3', '', '7', ''], [2.414, 1.0, None, None]) == \
        ['#3 2.41m', '1.00m', '#7', '']
    image = uniform()
    found = detections([[100, 120, 300, 260]], [0.87], [0])
    plain = draw_detections(image, found, NAMES)
    empty = draw_detections(image, found, NAMES, [''])
    tracked = draw_detections(image, found, NAMES, ['#3 2.41m'])
    np.testing.assert_array_equal(plain, empty)
    label_row = 120 - 5

    def label_end(out: np.ndarray) -> int:
        return int(np.nonzero(is_color(out[label_row], PERSON_BGR))[0].max())
    assert label_end(tracked) > label_end(plain) + 50
