"""human_detector_cli on real images, a folder and a video, with the real default model."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from human_detector_ros import assets
from human_detector_ros.cli import main

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
