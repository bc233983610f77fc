"""human_detector_cli on real images, a folder and a video, with the real default model."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from human_detector_ros import assets
from human_detector_ros.cli import main
from human_detector_ros.synthetic import depth_metres, render, walking_sequence
from human_detector_ros.tracking import LIBRARY_MISSING

ROOT = Path(__file__).resolve().parents[1]

CPU = ['--backend', 'onnxruntime', '--device', 'cpu']


@pytest.fixture
def samples(tmp_path):
    folder = tmp_path / 'samples'
    folder.mkdir()
    for name in ('camera.png', 'coffee.png'):
        shutil.copy(assets.sample_image_path(name), folder / name)
    (folder / 'notes.txt').write_text('not an image')
    return folder


def _read_json(output_dir):
    return json.loads((output_dir / 'detections.json').read_text())


def test_images_give_annotated_files_json_and_one_line_each(samples, tmp_path, capsys):
    output_dir = tmp_path / 'out'
    code = main([str(samples / 'camera.png'), str(samples / 'coffee.png'), *CPU,
                 '--output-dir', str(output_dir)])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if 'detection(s)' in line]
    assert len(lines) == 2
    assert 'camera.png: 512x512, 1 detection(s) [Normal' in lines[0]
    assert 'coffee.png: 600x400, 0 detection(s)' in lines[1]
    result = _read_json(output_dir)
    assert result['backend'] == 'onnxruntime' and result['config']['conf_threshold'] == 0.5
    camera, coffee = result['images']
    assert (camera['width'], camera['height']) == (512, 512)
    assert coffee['detections'] == []
    (person,) = camera['detections']
    assert person['class_id'] == 0 and person['class_name'] == 'Normal' and person['score'] > 0.5
    x1, y1, x2, y2 = person['box_xyxy']
    assert 0 <= x1 < 60 and 40 < y1 < 110 and 290 < x2 < 380 and y2 > 470
    assert set(camera['timings']) == {'preprocess_ms', 'infer_ms', 'postprocess_ms'}
    original = cv2.imread(str(samples / 'camera.png'))
    annotated = cv2.imread(camera['annotated'])
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original).sum() > 0
    np.testing.assert_array_equal(cv2.imread(coffee['annotated']),
                                  cv2.imread(str(samples / 'coffee.png')))


def test_folder_and_thresholds(samples, tmp_path):
    output_dir = tmp_path / 'out'
    assert main([str(samples), *CPU, '--conf', '0.25', '--iou', '0.7',
                 '--output-dir', str(output_dir)]) == 0
    result = _read_json(output_dir)
    assert [entry['file'] for entry in result['images']] == [
        str(samples / 'camera.png'), str(samples / 'coffee.png')]
    # At 0.25 the model sees a (wrong) 'Fall' in the coffee picture; --classes 0 drops it.
    assert result['images'][1]['detections'][0]['class_name'] == 'Fall'
    assert main([str(samples / 'coffee.png'), *CPU, '--conf', '0.25', '--classes', '0',
                 '--output-dir', str(output_dir)]) == 0
    assert _read_json(output_dir)['images'][0]['detections'] == []


def test_video_frames(tmp_path):
    camera = cv2.imread(str(assets.sample_image_path('camera.png')))
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5, (512, 512))
    assert writer.isOpened()
    for shift in (0, 40):
        writer.write(np.roll(camera, shift, axis=1))
    writer.release()
    output_dir = tmp_path / 'out'
    assert main([str(video), *CPU, '--output-dir', str(output_dir)]) == 0
    frames = _read_json(output_dir)['images']
    assert [frame['frame'] for frame in frames] == [0, 1]
    assert all(frame['file'] == str(video) for frame in frames)
    assert [len(frame['detections']) for frame in frames] == [1, 1]
    assert (output_dir / 'clip_000001.jpg').is_file()


@pytest.mark.parametrize('make_bad', [
    lambda folder: folder / 'missing.png',
    lambda folder: folder / 'notes.txt',
    lambda folder: folder.parent,          # holds only the samples folder: nothing to read
])
def test_bad_inputs_exit_2_with_a_message(samples, tmp_path, capsys, make_bad):
    bad = make_bad(samples)
    assert main([str(samples / 'camera.png'), str(bad), *CPU,
                 '--output-dir', str(tmp_path / 'out')]) == 2
    error = capsys.readouterr().err
    assert 'human_detector_cli: error:' in error and str(bad) in error
    assert not (tmp_path / 'out').exists()


def test_missing_model_exits_2(tmp_path, capsys):
    image = str(assets.sample_image_path('camera.png'))
    assert main([image, '--model', str(tmp_path / 'nope.onnx'),
                 '--output-dir', str(tmp_path / 'out')]) == 2
    assert 'nope.onnx' in capsys.readouterr().err


def test_undecodable_image_is_reported_and_the_rest_processed(samples, tmp_path, capsys):
    (samples / 'broken.png').write_bytes(b'not a png')
    output_dir = tmp_path / 'out'
    assert main([str(samples / 'broken.png'), str(samples / 'camera.png'), *CPU,
                 '--output-dir', str(output_dir)]) == 1
    assert 'cannot read image' in capsys.readouterr().err
    assert len(_read_json(output_dir)['images']) == 1


def test_writing_into_the_input_folder_never_overwrites_an_input(samples):
    originals = {path.name: path.read_bytes() for path in samples.glob('*.png')}
    assert main([str(samples), *CPU, '--output-dir', str(samples)]) == 0
    for name, content in originals.items():
        assert (samples / name).read_bytes() == content
    assert len(list(samples.glob('*.png'))) == 2 * len(originals) == 4


CAMERA_INFO_YAML = """image_width: 1280
image_height: 720
camera_name: front
camera_matrix:
  rows: 3
  cols: 3
  data: [600.0, 0.0, 640.5, 0.0, 605.0, 362.0, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [600.0, 0.0, 640.5, 0.0, 0.0, 605.0, 362.0, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


@pytest.mark.skipif(bool(LIBRARY_MISSING), reason=str(LIBRARY_MISSING))
def test_tracking_and_depth_over_an_image_sequence(tmp_path):
    """The CLI process on frames 0, 1 and 3 of the walking scene, with a 16UC1 PNG or 32FC1
    TIFF depth image per frame and the camera's camera_info YAML."""
    images, depth = tmp_path / 'images', tmp_path / 'depth'
    images.mkdir()
    depth.mkdir()
    truth = {'astronaut': 2.5, 'camera': 4.0}
    for index in (0, 1, 3):
        bgr, rects = render(walking_sequence()[index].people)
        cv2.imwrite(str(images / f'frame{index}.png'), bgr)
        metres = depth_metres(rects, truth)
        if index == 3:
            assert cv2.imwrite(str(depth / f'frame{index}.tiff'), metres)
        else:
            assert cv2.imwrite(str(depth / f'frame{index}.png'),
                               np.round(metres * 1000.0).astype(np.uint16))
    (tmp_path / 'front.yaml').write_text(CAMERA_INFO_YAML)
    output_dir = tmp_path / 'out'
    run = subprocess.run(
        [sys.executable, '-m', 'human_detector_ros.cli', str(images), *CPU, '--agnostic-nms',
         '--tracking', '--depth', str(depth), '--camera-info', str(tmp_path / 'front.yaml'),
         '--output-dir', str(output_dir)], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 0, run.stderr
    frames = _read_json(output_dir)['images']
    assert [Path(frame['file']).name for frame in frames] == ['frame0.png', 'frame1.png',
                                                              'frame3.png']
    ids = {'astronaut': set(), 'camera': set()}
    for frame in frames:
        assert len(frame['detections']) == 2
        for detection in frame['detections']:
            # The astronaut stands left of the camera person.
            who = 'astronaut' if detection['box_xyxy'][0] < 400 else 'camera'
            ids[who].add(detection['track_id'])
            x1, y1, x2, y2 = detection['box_xyxy']
            z = truth[who]
            position = detection['position_m']
            assert position['z'] == pytest.approx(z, abs=0.02)
            u, v = (x1 + x2) / 2, (y1 + y2) / 2
            assert position['x'] == pytest.approx((u - 640.5) * z / 600.0, abs=0.02)
            assert position['y'] == pytest.approx((v - 362.0) * z / 605.0, abs=0.02)
    assert len(ids['astronaut']) == len(ids['camera']) == 1
    assert None not in ids['astronaut'] | ids['camera']
    assert ids['astronaut'] != ids['camera']


@pytest.mark.skipif(bool(LIBRARY_MISSING), reason=str(LIBRARY_MISSING))
def test_video_tracking_and_frames_without_depth(tmp_path, capsys):
    camera = cv2.imread(str(assets.sample_image_path('camera.png')))
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 5, (512, 512))
    for shift in (0, 8, 16):
        writer.write(np.roll(camera, shift, axis=1))
    writer.release()
    depth = tmp_path / 'depth'
    depth.mkdir()
    cv2.imwrite(str(depth / 'clip_000001.png'), np.full((512, 512), 3000, np.uint16))
    output_dir = tmp_path / 'out'
    assert main([str(video), *CPU, '--tracking', '--depth', str(depth),
                 '--intrinsics', '500,500,256,256', '--output-dir', str(output_dir)]) == 0
    frames = _read_json(output_dir)['images']
    assert [[d['track_id'] for d in frame['detections']] for frame in frames] == [[1]] * 3
    positions = [frame['detections'][0]['position_m'] for frame in frames]
    assert positions[0] is None and positions[2] is None
    assert positions[1]['z'] == pytest.approx(3.0)
    error = capsys.readouterr().err
    assert 'no depth image for clip_000000' in error and 'clip_000002' in error


@pytest.mark.parametrize('arguments, message', [
    (['--depth', 'DEPTH'], '--camera-info YAML or --intrinsics'),
    (['--intrinsics', '500,500,256,256'], 'need --depth'),
    (['--depth', 'DEPTH', '--camera-info', 'DEPTH/none.yaml'], 'not a calibrated camera_info'),
])
def test_depth_without_what_it_needs_exits_2(tmp_path, capsys, arguments, message):
    image = str(assets.sample_image_path('camera.png'))
    (tmp_path / 'depth').mkdir()
    arguments = [value.replace('DEPTH', str(tmp_path / 'depth')) for value in arguments]
    assert main([image, *CPU, *arguments, '--output-dir', str(tmp_path / 'out')]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_an_output_dir_that_cannot_be_made_exits_2(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    image = str(assets.sample_image_path('camera.png'))
    assert main([image, *CPU, '--output-dir', str(blocker / 'out')]) == 2
    assert 'cannot create --output-dir' in capsys.readouterr().err


def test_a_negative_class_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(assets.sample_image_path('camera.png')), *CPU, '--classes', '0', '-1'])
    assert exit_info.value.code == 2
    assert 'class index >= 0' in capsys.readouterr().err
