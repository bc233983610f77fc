"""TensorRT engines built from ONNX models on first use and cached for the next start.

`engine_for_onnx` turns `model.onnx` into a serialized engine with the TensorRT builder API
(`trt.Builder`, `OnnxParser`, `build_serialized_network`) and keeps it in a cache folder,
keyed by the ONNX file's SHA-256, the TensorRT version, the GPU (name and compute capability)
and the precision, so an edited ONNX, a TensorRT upgrade or another GPU builds a new engine.
The cached file is an Ultralytics-style `.engine` (4-byte length, JSON header, plan): the
header carries the ONNX metadata (class names, imgsz, stride) and what the engine was built
from. It is written to a temporary file and renamed, so a killed build leaves no half engine.

Works with TensorRT 8.5 to 11 by feature tests, not version numbers: EXPLICIT_BATCH only
where implicit batch still exists (8.x), `set_memory_pool_limit` else `max_workspace_size`,
`BuilderFlag.FP16` where it exists (TensorRT 11 builds strongly typed networks: the engine
then computes in the ONNX model's own types), `IProgressMonitor` (10+) for progress.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from human_detector_ros.engines.base import DEFAULT_INPUT_HW, parse_device
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.model_metadata import ENGINE_HEADER_LENGTH_BYTES, metadata_from_mapping

LOG = logging.getLogger(__name__)
PRECISIONS = ('fp16', 'fp32')
DEFAULT_PRECISION = 'fp16'
# Caps the scratch memory of a layer at build and run time; a Jetson shares it with the CPU.
WORKSPACE_BYTES = 1 << 30
_COPIED_METADATA = ('names', 'imgsz', 'stride', 'task', 'description')
_SLUG = re.compile(r'[^A-Za-z0-9]+')


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine is built for: its name and compute capability ('8.7')."""

    name: str
    compute_capability: str


def default_cache_dir() -> pathlib.Path:
    """`engines/` in the package cache (`$HUMAN_DETECTOR_ROS_CACHE`, else ~/.cache/...)."""
    from human_detector_ros.assets import cache_dir
    return cache_dir() / 'engines'


def onnx_metadata(onnx_bytes: bytes) -> Dict[str, str]:
    """The `metadata_props` of a serialized ONNX ModelProto, read with the `onnx` library ({}
    when it has none or does not parse); Ultralytics stores names, imgsz and stride there."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError as error:
        raise ModelLoadError(
            'building a TensorRT engine from ONNX reads the model\'s class names with the '
            f'onnx package, which is not installed ({error}). Install it: pip install onnx'
        ) from error
    try:
        model = onnx.load_model_from_string(onnx_bytes)
    except (DecodeError, ValueError):
        return {}
    return {entry.key: entry.value for entry in model.metadata_props}


def gpu_identity(device_index: int, model_path: pathlib.Path) -> GpuIdentity:
    """Name and compute capability of CUDA device `device_index`, from the CUDA runtime."""
    from human_detector_ros.engines.tensorrt_engine import CudaCallError, CudaRuntime, \
        import_cudart
    try:
        cuda = CudaRuntime(import_cudart())
    except ImportError:
        raise ModelLoadError(
            f'Cannot build a TensorRT engine from {model_path}: the CUDA runtime bindings are '
            f'not installed. Install them with `pip install cuda-python` (matching the CUDA '
            f'major version of this machine).') from None
    try:
        count = cuda.call('cudaGetDeviceCount')
        if device_index >= count:
            raise CudaCallError(f'this machine has {count} usable CUDA device(s)')
        properties = cuda.call('cudaGetDeviceProperties', device_index)
    except CudaCallError as error:
        raise ModelLoadError(
            f'Cannot build a TensorRT engine from {model_path} on CUDA device {device_index}: '
            f'{error}. Check the NVIDIA driver (`nvidia-smi`, on Jetson `tegrastats`) and the '
            f'device parameter.') from None
    name = properties.name
    if isinstance(name, bytes):
        name = name.split(b'\0', 1)[0].decode('utf-8', 'replace')
    return GpuIdentity(name.strip(), f'{properties.major}.{properties.minor}')


def cache_file_name(onnx_path: pathlib.Path, onnx_sha256: str, tensorrt_version: str,
                    gpu: GpuIdentity, precision: str, max_batch: int = 1) -> str:
    """`<stem>.<sha256[:16]>.trt<version>.<gpu>.sm<cc>.<precision>.b<max_batch>.engine`:
    every part of the key readable in the name."""
    gpu_slug = _SLUG.sub('-', gpu.name).strip('-').lower() or 'gpu'
    stem = _SLUG.sub('-', onnx_path.stem).strip('-') or 'model'
    return (f'{stem}.{onnx_sha256[:16]}.trt{tensorrt_version}.{gpu_slug}'
            f'.sm{gpu.compute_capability.replace(".", "")}.{precision}.b{max_batch}.engine')


def _network_flags(trt: Any, builder: Any) -> int:
    # TensorRT 8.x defaults to implicit batch, which the ONNX parser refuses; 10 and 11 have
    # only explicit batch (the flag is deprecated in 10 and gone later).
    flag = getattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH', None)
    if flag is None or not hasattr(builder, 'max_batch_size'):
        return 0
    return 1 << int(flag)


def _limit_workspace(trt: Any, config: Any) -> None:
    if hasattr(config, 'set_memory_pool_limit'):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    else:
        config.max_workspace_size = WORKSPACE_BYTES


def _effective_precision(trt: Any, builder: Any, precision: str, gpu: GpuIdentity) -> str:
    """What the build does for `precision`: 'fp16', 'fp32', or 'typed' (strong typing)."""
    if not hasattr(trt.BuilderFlag, 'FP16'):
        if precision == 'fp16':
            LOG.warning(
                'TensorRT %s has no FP16 builder flag: it builds strongly typed networks, so the '
                'engine computes in the types of the ONNX model itself. For FP16, export the '
                'ONNX model in half precision.', trt.__version__)
        return 'typed'
    if precision == 'fp16' and not getattr(builder, 'platform_has_fast_fp16', True):
        LOG.warning('%s (compute capability %s) has no fast FP16: building the engine in FP32.',
                    gpu.name, gpu.compute_capability)
        return 'fp32'
    return precision


def _add_profile_for_dynamic_inputs(builder: Any, network: Any, config: Any,
                                    imgsz: Optional[tuple], max_batch: int = 1) -> None:
    # A network with dynamic input dimensions does not build without an optimization profile.
    # The detector runs one image size, so H and W are fixed; a dynamic batch runs 1 to
    # max_batch images, tuned for max_batch (opt = max).
    profile = None
    height, width = imgsz or DEFAULT_INPUT_HW
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        shape = tuple(int(dim) for dim in tensor.shape)
        if all(dim >= 0 for dim in shape):
            continue
        wanted = (max_batch, 3, height, width) if len(shape) == 4 else (1,) * len(shape)
        largest = tuple(dim if dim >= 0 else wanted[i] for i, dim in enumerate(shape))
        smallest = (min(largest[0], 1),) + largest[1:] if shape[0] < 0 else largest
        profile = profile or builder.create_optimization_profile()
        profile.set_shape(tensor.name, smallest, largest, largest)
        LOG.info('ONNX input %s %s is dynamic: building the engine for %s to %s.',
                 tensor.name, list(shape), list(smallest), list(largest))
    if profile is not None:
        config.add_optimization_profile(profile)


def _parser_error(error: Any) -> str:
    """One OnnxParser error: node index, name and operator where TensorRT gives them."""
    where = []
    node = error.node() if hasattr(error, 'node') else -1
    if node >= 0:
        where.append(f'node {node}')
    for attribute in ('node_name', 'node_operator'):
        value = getattr(error, attribute, None)
        value = value() if callable(value) else value
        if value:
            where.append(str(value))
    prefix = f'[{" ".join(where)}] ' if where else ''
    return f'{prefix}{error.desc()}'


def _progress_monitor(trt: Any) -> Any:
    """A trt.IProgressMonitor (TensorRT 10+) logging the top-level build phases, or None."""
    if not hasattr(trt, 'IProgressMonitor'):
        return None

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._started: Dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str],
                        num_steps: int) -> None:
            if parent_phase is None:
                self._started[phase_name] = time.monotonic()
                LOG.info('TensorRT build: %s (%d steps)...', phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            started = self._started.pop(phase_name, None)
            if started is not None:
                LOG.info('TensorRT build: %s done in %.1f s.', phase_name,
                         time.monotonic() - started)

    return _Monitor()


def build_serialized_engine(trt: Any, onnx_bytes: bytes, onnx_path: pathlib.Path,
                            precision: str, gpu: GpuIdentity,
                            imgsz: Optional[tuple] = None, max_batch: int = 1) -> bytes:
    """The serialized TensorRT plan of an ONNX model, built for the current CUDA device.

    precision: 'fp16' or 'fp32' (see `_effective_precision`). max_batch: a dynamic batch axis
    gets the profile min 1, opt = max = max_batch. Raises ModelLoadError with the
    OnnxParser's error descriptions, or with TensorRT's log when the build returns None.
    """
    from human_detector_ros.engines.tensorrt_engine import _make_logger
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, builder))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes, str(onnx_path)):
        problems = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelLoadError(
            f'TensorRT {trt.__version__} cannot build an engine from {onnx_path}: its ONNX '
            f'parser rejected the model ({"; ".join(problems) or "no reason given"}). Check '
            f'that the file is a complete ONNX export (re-export it: `yolo export '
            f'model=best.pt format=onnx`, an older opset helps with an older TensorRT), or use '
            f'backend onnxruntime for this file.')
    config = builder.create_builder_config()
    _limit_workspace(trt, config)
    effective = _effective_precision(trt, builder, precision, gpu)
    if effective == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    _add_profile_for_dynamic_inputs(builder, network, config, imgsz, max_batch)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        said = ' '.join(logger.errors) or 'no reason given'
        raise ModelLoadError(
            f'TensorRT {trt.__version__} could not build an engine from {onnx_path} on '
            f'{gpu.name} ({effective}) (TensorRT said: {said}). The GPU may have run out of '
            f'memory during the build (stop other GPU programs; on a Jetson add swap), or the '
            f'model has layers this TensorRT cannot build; try tensorrt_precision fp32, or '
            f'build with `trtexec --onnx={onnx_path} --saveEngine=model.engine` for the full '
            f'log and pass that engine as engine_path.')
    return bytes(memoryview(serialized))


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + '.',
                                             suffix='.partial')
    try:
        with os.fdopen(descriptor, 'wb') as stream:
            os.fchmod(stream.fileno(), 0o644)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _prepare_cache_dir(cache_dir: pathlib.Path, onnx_path: pathlib.Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelLoadError(
            f'Cannot create the TensorRT engine cache {cache_dir} for {onnx_path}: {error}. '
            f'Set the tensorrt_cache_dir parameter (or $HUMAN_DETECTOR_ROS_CACHE) to a '
            f'writable folder.') from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise ModelLoadError(
            f'The TensorRT engine cache {cache_dir} is not writable by this user, so the engine '
            f'built from {onnx_path} could not be kept. Fix its permissions, or set the '
            f'tensorrt_cache_dir parameter (or $HUMAN_DETECTOR_ROS_CACHE) to a writable '
            f'folder.')


def engine_for_onnx(onnx_path: pathlib.Path, device: str = 'auto',
                    precision: str = DEFAULT_PRECISION,
                    cache_dir: Union[str, os.PathLike, None] = None,
                    max_batch: int = 1) -> pathlib.Path:
    """The cached TensorRT engine for `onnx_path` on this machine; built first if missing.

    device: 'auto' | 'cuda' | 'cuda:N' (the engine is built for that GPU). precision: 'fp16'
    or 'fp32'. cache_dir: None or '' for `default_cache_dir()`. max_batch: the largest batch
    of a dynamic batch axis (part of the cache key; a fixed batch stays the model's own).
    Building takes seconds on a desktop GPU and minutes on a Jetson. Raises ModelLoadError
    with the cause and the fix.
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(
            f'Unknown TensorRT precision {precision!r} for {onnx_path}. Use one of: '
            f'{", ".join(PRECISIONS)}.')
    request = parse_device(device, onnx_path)
    if request.kind == 'cpu':
        raise ModelLoadError(
            f'TensorRT builds and runs engines on an NVIDIA GPU only, and device "cpu" was '
            f'asked for with {onnx_path}. Use device "cuda" (or "auto"), or backend '
            f'onnxruntime to run this ONNX model on the CPU.')
    try:
        import tensorrt as trt
    except ImportError:
        raise ModelLoadError(
            f'Cannot build a TensorRT engine from {onnx_path}: the tensorrt Python package is '
            f'not installed. On Jetson it comes with JetPack (`sudo apt install '
            f'python3-libnvinfer`); on x86 `pip install tensorrt`. Or use backend '
            f'onnxruntime for this file.') from None
    onnx_bytes = onnx_path.read_bytes()
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    raw_metadata = {key: value for key, value in onnx_metadata(onnx_bytes).items()
                    if key in _COPIED_METADATA}
    imgsz = metadata_from_mapping(raw_metadata, onnx_path).imgsz
    gpu = gpu_identity(request.index, onnx_path)
    key_precision = precision if hasattr(trt.BuilderFlag, 'FP16') else 'typed'
    folder = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / cache_file_name(onnx_path, onnx_sha256, trt.__version__, gpu,
                                    key_precision, max_batch)
    if path.is_file():
        LOG.info('Using the cached TensorRT engine %s (built from %s).', path, onnx_path)
        return path
    _prepare_cache_dir(folder, onnx_path)
    LOG.info('Building a TensorRT engine from %s with TensorRT %s for %s (compute capability '
             '%s), precision %s. This takes a minute on a desktop GPU and can take 10 minutes '
             'or more on a Jetson; it happens once, the engine is cached as %s.', onnx_path,
             trt.__version__, gpu.name, gpu.compute_capability, key_precision, path)
    started = time.monotonic()
    plan = build_serialized_engine(trt, onnx_bytes, onnx_path, precision, gpu, imgsz,
                                   max_batch)
    del onnx_bytes
    header = dict(raw_metadata, built_from=str(onnx_path), onnx_sha256=onnx_sha256,
                  tensorrt_version=trt.__version__, gpu=gpu.name,
                  compute_capability=gpu.compute_capability, precision=key_precision,
                  max_batch=max_batch)
    encoded = json.dumps(header).encode('utf-8')
    try:
        _write_atomically(path, len(encoded).to_bytes(ENGINE_HEADER_LENGTH_BYTES, 'little')
                          + encoded + plan)
    except OSError as error:
        raise ModelLoadError(
            f'The TensorRT engine built from {onnx_path} could not be written to {path}: '
            f'{error}. Free disk space, or set the tensorrt_cache_dir parameter (or '
            f'$HUMAN_DETECTOR_ROS_CACHE) to another folder.') from None
    LOG.info('Built the TensorRT engine in %.1f s: %s', time.monotonic() - started, path)
    return path
