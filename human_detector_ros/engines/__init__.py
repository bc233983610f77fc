"""Inference backends behind one interface, and `load_engine` that picks one from the file.

Backends import their runtimes (onnxruntime, tensorrt + cuda-python, torch) only when a
model of their kind is loaded, so this package imports with numpy alone.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import zipfile
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Type, Union

from human_detector_ros.engines.base import Engine, ModelMetadata, TensorSpec, parse_device
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.model_metadata import has_engine_header

__all__ = ['BACKENDS', 'Backend', 'Engine', 'ModelMetadata', 'REGISTRY', 'TensorSpec',
           'detect_backend', 'load_engine']


@dataclass(frozen=True)
class Backend:
    """One inference backend: its name, the class that runs it and the file suffixes it owns.

    engine_class: 'module:Class' of its Engine subclass, imported only when a model of this
    kind is loaded (so this package imports with numpy alone). suffixes: lower-case file
    extensions that name this backend's files when the content does not tell.
    """

    name: str
    engine_class: str
    suffixes: Tuple[str, ...]

    def load_class(self) -> Type[Engine]:
        module, _, name = self.engine_class.partition(':')
        return getattr(importlib.import_module(module), name)


_PACKAGE = 'human_detector_ros.engines'
REGISTRY: Dict[str, Backend] = {backend.name: backend for backend in (
    Backend('onnxruntime', f'{_PACKAGE}.onnxruntime_engine:OnnxRuntimeEngine', ('.onnx',)),
    Backend('tensorrt', f'{_PACKAGE}.tensorrt_engine:TensorRTEngine',
            ('.engine', '.plan', '.trt')),
    Backend('torchscript', f'{_PACKAGE}.torchscript_engine:TorchScriptEngine',
            ('.torchscript', '.pt', '.pth', '.ptl')),
)}
"""Every backend, by name: the one place a new backend is added."""
BACKENDS = tuple(REGISTRY)
_ZIP_MAGIC = b'PK\x03\x04'
_SNIFF_BYTES = 64
# Field tags that can follow ir_version (field 1) at the start of an ONNX ModelProto.
_ONNX_SECOND_FIELD_TAGS = frozenset(b'\x12\x1a\x22\x2a\x32\x3a\x42\x52\x5a\x72')


def _looks_like_onnx(head: bytes) -> bool:
    return (len(head) >= 3 and head[0] == 0x08 and 0 < head[1] < 0x80
            and head[2] in _ONNX_SECOND_FIELD_TAGS)


def _zip_backend(path: pathlib.Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelLoadError(
            f'Model {path} is a damaged zip archive ({error}); a TorchScript or PyTorch file '
            f'was probably truncated. Copy or export it again.') from None
    if any(name.endswith('/constants.pkl') or '/code/' in name for name in members):
        return 'torchscript'
    if any(name.endswith('data.pkl') for name in members):
        raise ModelLoadError(
            f'Model {path} is a PyTorch checkpoint (torch.save), not a TorchScript module, and '
            f'cannot be run without Ultralytics. Export it first: `yolo export model={path.name}'
            f' format=onnx` (or format=engine for TensorRT, format=torchscript).')
    raise ModelLoadError(
        f'Model {path} is a zip archive but neither TorchScript nor a PyTorch checkpoint. '
        f'Use an ONNX (.onnx), TensorRT (.engine/.plan) or TorchScript (.torchscript) model.')


def detect_backend(path: pathlib.Path) -> str:
    """The backend for a readable model file, from its content first, then its extension."""
    with open(path, 'rb') as stream:
        head = stream.read(_SNIFF_BYTES)
    suffix = path.suffix.lower()
    if head.startswith(_ZIP_MAGIC):
        return _zip_backend(path)
    if has_engine_header(head):
        return 'tensorrt'
    if suffix in REGISTRY['onnxruntime'].suffixes or _looks_like_onnx(head):
        return 'onnxruntime'
    for backend in REGISTRY.values():
        if suffix in backend.suffixes:
            # A zip-based format is told by its members (a checkpoint is refused there).
            return _zip_backend(path) if backend.name == 'torchscript' else backend.name
    raise ModelLoadError(
        f'Cannot tell what kind of model {path} is: it is not ONNX, not a zip archive '
        f'(TorchScript) and has no known extension. Rename it to one of '
        f'{", ".join(s for b in REGISTRY.values() for s in b.suffixes)}, or pass the backend '
        f'explicitly ({", ".join(BACKENDS)}).')


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        raise ModelLoadError(
            f'Model file {path} does not exist. Check the path (engine_path parameter / '
            f'--model option), or fetch the default model with `human_detector_fetch_assets`.')
    if not path.is_file():
        raise ModelLoadError(f'Model path {path} is not a file. Give the path of an .onnx, '
                             f'.engine/.plan or .torchscript file.')
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f'Model file {path} is not readable by this user. Fix its '
                             f'permissions (e.g. `chmod a+r {path}`).')
    if path.stat().st_size == 0:
        raise ModelLoadError(f'Model file {path} is empty; the download or copy probably '
                             f'failed. Copy or export the model again.')


def _check_backend_runs(backend: str, kind: Optional[str], path: pathlib.Path) -> None:
    """ModelLoadError when `path`, a model for backend `kind` (None: not told), is one that
    `backend` does not run (an ONNX model runs on 'onnxruntime' and, built into an engine, on
    'tensorrt'); a file whose kind is not told is left to the backend."""
    if kind is None or kind == backend or (kind, backend) == ('onnxruntime', 'tensorrt'):
        return
    also = ' (or "tensorrt", which builds an engine from it)' if kind == 'onnxruntime' else ''
    raise ModelLoadError(f'Backend "{backend}" cannot run {path}: it is a model for backend '
                         f'"{kind}"{also}. Use backend "auto" or "{kind}".')


def load_engine(path: Union[str, os.PathLike], backend: str = 'auto',
                device: str = 'auto', tensorrt_precision: str = 'fp16',
                tensorrt_cache_dir: Union[str, os.PathLike, None] = None,
                max_batch: int = 1) -> Engine:
    """Load a model file into the backend that runs it.

    backend: 'auto' (from the file: ONNX, Ultralytics/TensorRT engine, TorchScript zip) or
    one of BACKENDS. device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'. max_batch (>= 1): the most
    frames one `infer` call should take; a model with a dynamic batch axis is run (and a
    TensorRT engine built from ONNX is profiled) up to it, a model with a fixed batch keeps
    its own (see `Engine.max_batch`). An ONNX model with backend 'tensorrt' runs as a
    TensorRT engine built from it in `tensorrt_precision` ('fp16' or 'fp32') and cached in
    `tensorrt_cache_dir` (None: the package cache); see tensorrt_build.
    Raises ModelLoadError with what went wrong, the file, and how to fix it.
    """
    model_path = pathlib.Path(path).expanduser()
    _check_file(model_path)
    parse_device(device, model_path)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ModelLoadError(f'max_batch must be an integer >= 1 for model {model_path}, got '
                             f'{max_batch!r}.')
    chosen: Optional[str] = backend.strip().lower() if isinstance(backend, str) else None
    try:
        kind: Optional[str] = detect_backend(model_path)
    except ModelLoadError:
        if chosen == 'auto':
            raise
        kind = None  # an explicit backend may still run it, or says why not
    if chosen == 'auto':
        chosen = kind
    if chosen not in REGISTRY:
        raise ModelLoadError(
            f'Unknown backend {backend!r} for model {model_path}. Use "auto" or one of: '
            f'{", ".join(BACKENDS)}.')
    _check_backend_runs(chosen, kind, model_path)
    engine_class = REGISTRY[chosen].load_class()
    built_from: Optional[pathlib.Path] = None
    if chosen == 'tensorrt' and kind == 'onnxruntime':
        from human_detector_ros.engines.tensorrt_build import engine_for_onnx
        built_from, model_path = model_path, engine_for_onnx(
            model_path, device, tensorrt_precision, tensorrt_cache_dir, max_batch=max_batch)
    try:
        engine = engine_class(model_path, device, max_batch=max_batch)
    except ModelLoadError as error:
        if built_from is None:
            raise
        raise ModelLoadError(f'{error} ({model_path} is the engine cached for {built_from}: '
                             f'delete it and start again to build it anew.)') from None
    from human_detector_ros.postprocess import resolve_layout
    try:
        resolve_layout(engine.outputs)
    except ModelLoadError as error:
        engine.close()
        raise ModelLoadError(f'Model {model_path} cannot be used: {error}') from None
    return engine
