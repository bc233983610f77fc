"""A bad TensorRT engine file on a machine without TensorRT: the file's fault is reported
first, so that installing TensorRT is not followed by a second error. Only a file that may be
a plan gets the missing-package message."""
from __future__ import annotations

import sys
from typing import Callable

import cv2
import numpy as np
import pytest
from tensorrt_standin import ultralytics_engine_bytes

from human_detector_ros.assets import default_model_path
from human_detector_ros.engines import load_engine
from human_detector_ros.engines.tensorrt_engine import MIN_PLAN_BYTES, PLAN_MAGIC
from human_detector_ros.errors import ModelLoadError

HEADER = {'description': 'Ultralytics YOLOv8 model', 'stride': 32, 'task': 'detect',
          'batch': 1, 'imgsz': [640, 640], 'names': {'0': 'Normal', '1': 'Fall'}}
MISSING_PACKAGE = 'pip install tensorrt'
PLAUSIBLE_PLAN = PLAN_MAGIC + bytes(range(256)) * 64


def png_bytes() -> bytes:
    return cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def truncated_header() -> bytes:
    whole = ultralytics_engine_bytes(PLAUSIBLE_PLAN, HEADER)
    return whole[:40]


def corrupt_header() -> bytes:
    whole = bytearray(ultralytics_engine_bytes(PLAUSIBLE_PLAN, HEADER))
    whole[20:24] = b'\xff\xfe\x00}'
    return bytes(whole)


@pytest.fixture
def without_tensorrt(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, 'tensorrt', None)


@pytest.mark.parametrize('name, make, words', [
    ('truncated header', truncated_header, 'truncated'),
    ('corrupt header', corrupt_header, 'corrupt'),
    ('header only', lambda: ultralytics_engine_bytes(b'', HEADER), 'no TensorRT plan'),
    ('truncated plan', lambda: ultralytics_engine_bytes(PLAUSIBLE_PLAN[:300], HEADER),
     'truncated'),
    ('truncated plain plan', lambda: PLAUSIBLE_PLAN[:MIN_PLAN_BYTES - 1], 'truncated'),
    ('cut inside the magic', lambda: PLAN_MAGIC[:2], 'truncated'),
    ('foreign: a PNG', png_bytes, 'not a TensorRT plan'),
    ('foreign: ONNX after an Ultralytics header',
     lambda: ultralytics_engine_bytes(default_model_path().read_bytes(), HEADER),
     'not a TensorRT plan'),
    ('foreign: text', lambda: b'not a TensorRT plan\n' * 100, 'not a TensorRT plan'),
])
def test_a_bad_file_is_reported_before_the_missing_package(
        without_tensorrt, tmp_path, name: str, make: Callable[[], bytes], words: str):
    path = tmp_path / 'model.engine'
    path.write_bytes(make())
    with pytest.raises(ModelLoadError) as error:
        load_engine(path)
    message = str(error.value)
    assert words in message and str(path) in message, message
    assert MISSING_PACKAGE not in message, message
    assert 'trtexec --onnx=' in message or 'format=engine' in message, message


def test_an_empty_file_is_reported_before_the_missing_package(without_tensorrt, tmp_path):
    path = tmp_path / 'model.engine'
    path.write_bytes(b'')
    with pytest.raises(ModelLoadError, match='empty') as error:
        load_engine(path)
    assert MISSING_PACKAGE not in str(error.value)


@pytest.mark.parametrize('data', [
    PLAUSIBLE_PLAN, ultralytics_engine_bytes(PLAUSIBLE_PLAN, HEADER),
], ids=['plain plan', 'Ultralytics engine'])
def test_a_file_that_may_be_a_plan_gets_the_missing_package_message(
        without_tensorrt, tmp_path, data):
    path = tmp_path / 'model.engine'
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=MISSING_PACKAGE) as error:
        load_engine(path)
    assert 'JetPack' in str(error.value) and str(path) in str(error.value)
