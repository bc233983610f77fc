"""Metadata parsing: ONNX metadata_props strings, Ultralytics engine headers, config.txt."""
from __future__ import annotations

import json
import pathlib

import pytest

from human_detector_ros.engines.base import ModelMetadata
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.model_metadata import (
    has_engine_header, metadata_from_mapping, metadata_from_torchscript_config,
    split_engine_header)

SOURCE = pathlib.Path('/models/model.onnx')


def test_ultralytics_onnx_strings():
    raw = {'names': "{0: 'Normal', 1: 'Fall'}", 'imgsz': '[640, 640]', 'stride': '32',
           'task': 'detect', 'args': "{'batch': 1, 'half': False}"}
    assert metadata_from_mapping(raw, SOURCE) == ModelMetadata(
        names={0: 'Normal', 1: 'Fall'}, imgsz=(640, 640), stride=32)


@pytest.mark.parametrize('names, expected', [
    ('{"0": "person", "1": "bicycle"}', {0: 'person', 1: 'bicycle'}),
    ({'0': 'person'}, {0: 'person'}),
    ({3: 'dog'}, {3: 'dog'}),
    (['person', 'car'], {0: 'person', 1: 'car'}),
    ("['person', 'car']", {0: 'person', 1: 'car'}),
])
def test_names_forms(names, expected):
    assert metadata_from_mapping({'names': names}, SOURCE).names == expected


@pytest.mark.parametrize('imgsz, expected', [
    ('[480, 640]', (480, 640)), ([480, 640], (480, 640)), (320, (320, 320)),
    ('640', (640, 640)), ([512], (512, 512)), ([640.0, 480.0], (640, 480)),
])
def test_imgsz_forms(imgsz, expected):
    assert metadata_from_mapping({'imgsz': imgsz}, SOURCE).imgsz == expected


def test_missing_keys_give_empty_metadata():
    assert metadata_from_mapping({'task': 'detect'}, SOURCE) == ModelMetadata()


@pytest.mark.parametrize('raw, key', [
    ({'names': "__import__('os').system('touch /tmp/pwned')"}, 'names'),
    ({'names': '{0: 1}'}, 'names'),
    ({'names': '{-1: "x"}'}, 'names'),
    ({'names': '{"a": "x"}'}, 'names'),
    ({'names': 'not a dict'}, 'names'),
    ({'imgsz': '[0, 640]'}, 'imgsz'),
    ({'imgsz': '[1, 2, 3]'}, 'imgsz'),
    ({'imgsz': 'big'}, 'imgsz'),
    ({'stride': '-32'}, 'stride'),
    ({'stride': 'True'}, 'stride'),
])
def test_malformed_values_raise_naming_file_and_key(raw, key, tmp_path):
    marker = tmp_path / 'pwned'
    raw = {k: v.replace('/tmp/pwned', str(marker)) for k, v in raw.items()}
    with pytest.raises(ModelLoadError) as error:
        metadata_from_mapping(raw, SOURCE)
    assert str(SOURCE) in str(error.value) and repr(key) in str(error.value)
    assert not marker.exists()


def _engine_file(header: dict, plan: bytes = b'PLAN-BYTES') -> bytes:
    meta = json.dumps(header).encode()
    return len(meta).to_bytes(4, 'little') + meta + plan


def test_engine_header_split():
    header = {'names': {'0': 'person'}, 'imgsz': [640, 640], 'stride': 32, 'batch': 1}
    blob = _engine_file(header)
    parsed, offset = split_engine_header(blob, SOURCE)
    assert parsed == header and blob[offset:] == b'PLAN-BYTES'
    assert metadata_from_mapping(parsed, SOURCE) == ModelMetadata({0: 'person'}, (640, 640), 32)


def test_plain_plan_has_no_header():
    blob = b'ftrt\x00\x00\x00\x00' + bytes(range(256))
    assert not has_engine_header(blob)
    assert split_engine_header(blob, SOURCE) == ({}, 0)


def test_header_length_beyond_file_size_raises():
    blob = _engine_file({'imgsz': [640, 640]})
    claimed = len(blob)
    truncated = claimed.to_bytes(4, 'little') + blob[4:]
    with pytest.raises(ModelLoadError, match='truncated') as error:
        split_engine_header(truncated, SOURCE)
    assert str(SOURCE) in str(error.value)


@pytest.mark.parametrize('meta', [b'{"names": ', b'{\xff\xfe}', b'{"a": 1}x'])
def test_corrupt_header_raises(meta):
    blob = len(meta).to_bytes(4, 'little') + meta + b'PLAN'
    with pytest.raises(ModelLoadError, match='corrupt'):
        split_engine_header(blob, SOURCE)


def test_torchscript_config():
    config = json.dumps({'names': {'0': 'Normal', '1': 'Fall'}, 'imgsz': [640, 640],
                         'stride': 32, 'task': 'detect'}).encode()
    assert metadata_from_torchscript_config(config, SOURCE) == ModelMetadata(
        {0: 'Normal', 1: 'Fall'}, (640, 640), 32)
    assert metadata_from_torchscript_config(b'', SOURCE) == ModelMetadata()
    with pytest.raises(ModelLoadError, match='config.txt'):
        metadata_from_torchscript_config(b'{not json', SOURCE)
