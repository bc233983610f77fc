"""3D positions from human_detector_ros.depth against synthetic depth images of known scenes."""
from __future__ import annotations

import numpy as np
import pytest

from human_detector_ros.depth import (
    DepthImage, Intrinsics, StampBuffer, locate_people, locate_person, surface_depth)
from human_detector_ros.errors import InvalidImageError

INTRINSICS = Intrinsics(fx=615.0, fy=610.0, cx=641.5, cy=358.0)
HEIGHT, WIDTH = 720, 1280


def depth_message(metres: np.ndarray, encoding: str, big_endian: bool = False,
                  padding: int = 0) -> DepthImage:
    """A DepthImage over message bytes made from `metres` (NaN = no depth) the way a camera
    driver writes them: 16UC1 millimetres (0 = none), 32FC1 metres."""
    if encoding == '16UC1':
        values = np.where(np.isfinite(metres), np.round(metres * 1000.0), 0).astype(
            '>u2' if big_endian else '<u2')
    else:
        values = metres.astype('>f4' if big_endian else '<f4')
    rows = values.view(np.uint8).reshape(metres.shape[0], -1)
    rows = np.pad(rows, ((0, 0), (0, padding)))
    return DepthImage(encoding, metres.shape[0], metres.shape[1], rows.shape[1], big_endian,
                      rows.tobytes())


def scene(people, background_m: float = 12.0, holes: float = 0.0, seed: int = 0
          ) -> np.ndarray:
    """HxW metres: `background_m` everywhere, each (box, z) person a flat plate at z; a
    fraction `holes` of all pixels without depth."""
    metres = np.full((HEIGHT, WIDTH), background_m, np.float32)
    for (x1, y1, x2, y2), z in people:
        metres[y1:y2, x1:x2] = z
    if holes:
        metres[np.random.default_rng(seed).random(metres.shape) < holes] = np.nan
    return metres


def expected_position(box, z: float):
    u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return ((u - INTRINSICS.cx) * z / INTRINSICS.fx, (v - INTRINSICS.cy) * z / INTRINSICS.fy, z)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
@pytest.mark.parametrize('z', [1.0, 2.5, 4.0, 6.3, 8.0])
def test_positions_within_2_cm_from_1_to_8_m(encoding: str, z: float):
    # The box is much wider than the plate (arms, gaps): background fills 45 % of the sampled
    # central half of the box.
    plate = (335, 150, 385, 560)
    box = (270, 140, 450, 570)
    other = ((900, 200, 1000, 500), z + 1.5)
    depth = depth_message(scene([(plate, z), other], holes=0.2), encoding)
    position = locate_person(depth, box, INTRINSICS)
    assert position is not None
    np.testing.assert_allclose((position.x, position.y, position.z),
                               expected_position(box, z), atol=0.02)
    assert position.width == pytest.approx(180 * position.z / INTRINSICS.fx)
    assert position.height == pytest.approx(430 * position.z / INTRINSICS.fy)
    assert 0.0 <= position.depth_extent < 0.01


def test_noisy_surface_with_background_and_a_stray_near_patch():
    rng = np.random.default_rng(1)
    metres = scene([((500, 100, 700, 600), 5.0)])
    metres[100:600, 500:700] += rng.normal(0.0, 0.03, (500, 200)).astype(np.float32)
    metres[300:320, 590:610] = 0.4
    position = locate_person(depth_message(metres, '32FC1'), (480, 90, 720, 610), INTRINSICS)
    assert position.z == pytest.approx(5.0, abs=0.01)
    assert 0.05 < position.depth_extent < 0.15


def test_a_box_without_depth_gives_none():
    metres = scene([((300, 150, 420, 560), 3.0)])
    metres[150:560, 300:420] = np.nan
    metres[150:560, 300:420][::20, ::20] = 3.0  # a few scattered readings are not enough
    for encoding in ('16UC1', '32FC1'):
        depth = depth_message(metres, encoding)
        assert locate_person(depth, (300, 150, 420, 560), INTRINSICS) is None
    found = locate_people(depth_message(scene([((300, 150, 420, 560), 3.0)]), '16UC1'),
                          np.array([[300, 150, 420, 560], [5000, 10, 5100, 20]]), INTRINSICS)
    assert found[0] is not None and found[1] is None


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_byte_order_and_row_padding(encoding: str):
    metres = scene([((100, 100, 200, 300), 2.0)])
    reference = depth_message(metres, encoding).to_metres()
    for big_endian, padding in ((True, 0), (False, 64), (True, 6)):
        np.testing.assert_array_equal(
            depth_message(metres, encoding, big_endian, padding).to_metres(), reference)
    assert reference[200, 150] == pytest.approx(2.0)


def test_zero_nan_inf_and_negative_mean_no_depth():
    values = np.array([[0.0, np.nan, np.inf, -1.0, 1.5]], np.float32)
    metres = depth_message(values, '32FC1').to_metres()
    assert np.isnan(metres[0, :4]).all() and metres[0, 4] == 1.5
    assert surface_depth(np.full((10, 10), np.nan, np.float32)) is None


@pytest.mark.parametrize('fields, problem', [
    (('16UC1', 10, 10, 19, False, bytes(200)), 'step'),
    (('16UC1', 10, 10, 20, False, bytes(199)), 'bytes'),
    (('mono8', 10, 10, 10, False, bytes(100)), 'not supported'),
    (('32FC1', 0, 10, 40, False, b''), 'size'),
])
def test_invalid_depth_images_are_refused(fields, problem: str):
    with pytest.raises(InvalidImageError, match=problem):
        DepthImage(*fields)


def test_intrinsics_from_k():
    assert Intrinsics.from_k([615.0, 0, 641.5, 0, 610.0, 358.0, 0, 0, 1]) == INTRINSICS
    with pytest.raises(ValueError, match='not a calibration'):
        Intrinsics.from_k([0.0] * 9)


def test_stamp_buffer_gives_the_nearest_frame_within_the_tolerance():
    buffer: StampBuffer[str] = StampBuffer(capacity=3)
    for stamp, name in ((100, 'a'), (200, 'b'), (300, 'c'), (400, 'd')):
        buffer.add(stamp, name)
    assert len(buffer) == 3
    assert buffer.nearest(290, 20) == 'c'
    assert buffer.nearest(350, 60) in ('c', 'd')
    assert buffer.nearest(100, 50) is None
    assert buffer.nearest(250, 40) is None
