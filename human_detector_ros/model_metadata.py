"""Class names, input size and stride from what Ultralytics writes into exported models.

Three carriers: ONNX `metadata_props` (strings; names as a Python-literal dict), the JSON
header of an Ultralytics TensorRT `.engine` file, and the `config.txt` extra file of a
TorchScript export (JSON). Parsed as data only (json / ast.literal_eval), never executed.
"""
from __future__ import annotations

import ast
import json
import pathlib
from typing import Any, Dict, Mapping, Optional, Tuple

from human_detector_ros.engines.base import ModelMetadata
from human_detector_ros.errors import ModelLoadError

ENGINE_HEADER_LENGTH_BYTES = 4


def _parse_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _invalid(source: pathlib.Path, key: str, value: Any, expected: str) -> ModelLoadError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:200] + '...'
    return ModelLoadError(
        f'Model {source} has unusable metadata {key!r} = {shown}; expected {expected}. '
        f'Re-export the model with Ultralytics, or fix the metadata of the file.')


def _parse_names(value: Any, source: pathlib.Path) -> Dict[int, str]:
    parsed = _parse_text(value) if isinstance(value, str) else value
    if isinstance(parsed, (list, tuple)):
        parsed = dict(enumerate(parsed))
    expected = 'a mapping of class index to class name, e.g. {0: "person"}'
    if not isinstance(parsed, dict):
        raise _invalid(source, 'names', value, expected)
    names: Dict[int, str] = {}
    for key, name in parsed.items():
        if isinstance(key, bool) or not isinstance(name, str):
            raise _invalid(source, 'names', value, expected)
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise _invalid(source, 'names', value, expected) from None
        if index < 0 or str(index) != str(key).strip():
            raise _invalid(source, 'names', value, expected)
        names[index] = name
    return names


def _positive_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value > 0:
        return value
    return None


def _parse_imgsz(value: Any, source: pathlib.Path) -> Tuple[int, int]:
    parsed = _parse_text(value) if isinstance(value, str) else value
    if not isinstance(parsed, (list, tuple)):
        parsed = [parsed]
    sizes = [_positive_int(item) for item in parsed]
    if len(sizes) not in (1, 2) or None in sizes:
        raise _invalid(source, 'imgsz', value, 'a positive size or [height, width]')
    return (sizes[0], sizes[-1])


def _parse_stride(value: Any, source: pathlib.Path) -> int:
    parsed = _parse_text(value) if isinstance(value, str) else value
    stride = _positive_int(parsed)
    if stride is None:
        raise _invalid(source, 'stride', value, 'a positive integer')
    return stride


def metadata_from_mapping(raw: Mapping[str, Any], source: pathlib.Path) -> ModelMetadata:
    """ModelMetadata from Ultralytics keys 'names', 'imgsz', 'stride' (strings or values).

    Missing keys give empty names / None; present but malformed ones raise ModelLoadError.
    """
    names = _parse_names(raw['names'], source) if raw.get('names') is not None else {}
    imgsz = _parse_imgsz(raw['imgsz'], source) if raw.get('imgsz') is not None else None
    stride = _parse_stride(raw['stride'], source) if raw.get('stride') is not None else None
    return ModelMetadata(names=names, imgsz=imgsz, stride=stride)


def has_engine_header(head: bytes) -> bool:
    """True if the file starting with `head` has an Ultralytics JSON header before the plan."""
    start = ENGINE_HEADER_LENGTH_BYTES
    return len(head) > start and head[start:start + 1] == b'{'


def split_engine_header(blob: bytes, source: pathlib.Path) -> Tuple[Dict[str, Any], int]:
    """Split an Ultralytics `.engine` file: (JSON header dict, offset of the TensorRT plan).

    Ultralytics writes a 4-byte little-endian length, that many bytes of UTF-8 JSON, then
    the plan. A file whose fifth byte is not '{' is a plain plan: ({}, 0).
    """
    if not has_engine_header(blob):
        return {}, 0
    start = ENGINE_HEADER_LENGTH_BYTES
    length = int.from_bytes(blob[:start], byteorder='little')
    end = start + length
    if end > len(blob):
        raise ModelLoadError(
            f'TensorRT engine {source} is truncated or corrupt: its Ultralytics metadata header '
            f'claims {length} bytes but the file has only {len(blob) - start} after the length '
            f'field. Copy the file again or re-export it on this device '
            f'(`yolo export model=best.pt format=engine`).')
    header = _json_object(
        blob[start:end], f'The Ultralytics metadata header of TensorRT engine {source}',
        'Copy the file again or re-export it on this device '
        '(`yolo export model=best.pt format=engine`).')
    return header, end


def metadata_from_torchscript_config(text: bytes, source: pathlib.Path) -> ModelMetadata:
    """ModelMetadata from the 'config.txt' extra file of an Ultralytics TorchScript export."""
    if not text:
        return ModelMetadata()
    config = _json_object(text, f'The config.txt of TorchScript model {source}',
                          'Re-export it (`yolo export model=best.pt format=torchscript`).')
    return metadata_from_mapping(config, source)


def _json_object(raw: bytes, what: str, fix: str) -> Dict[str, Any]:
    """`raw` as a JSON object; ModelLoadError saying `what` is wrong and `fix` otherwise."""
    try:
        value = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(f'{what} is corrupt ({error}). {fix}') from None
    if not isinstance(value, dict):
        raise ModelLoadError(f'{what} is not a JSON object. {fix}')
    return value
