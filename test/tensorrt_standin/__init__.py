"""STAND-IN TensorRT and CUDA runtime for tests on machines without an NVIDIA GPU.

`install(monkeypatch, version)` puts a stand-in `tensorrt` module of that TensorRT generation
(see `trt.py`) into `sys.modules`, and, unless `real_cudart` is set, a stand-in CUDA runtime
(see `cudart.py`) as `cuda.bindings.runtime` (cuda-python 12.6+) or, with
`cudart_layout='legacy'`, as `cuda.cudart` (older cuda-python). monkeypatch undoes it all.
A child process (a node under test) gets the same stand-ins with CHILD_PATH first on its
PYTHONPATH (see child/tensorrt.py).
"""
from __future__ import annotations

import pathlib
import sys
import types
from dataclasses import dataclass
from typing import Any, Optional

from tensorrt_standin import cudart as cudart_standin
from tensorrt_standin import trt as trt_standin
from tensorrt_standin.trt import plan_bytes, ultralytics_engine_bytes

__all__ = ['StandIn', 'install', 'install_into_process', 'plan_bytes',
           'ultralytics_engine_bytes']
CHILD_PATH = str(pathlib.Path(__file__).resolve().parent / 'child')
"""Put first on a child process's PYTHONPATH: its `import tensorrt` gets the stand-in."""


@dataclass
class StandIn:
    """What `install` put in place: the modules and the stand-in GPU state (None if real)."""

    trt: types.ModuleType
    cudart: Optional[types.ModuleType]
    gpu: Optional[cudart_standin.StandinGpu]


def _package(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name, 'stand-in package')
    module.__path__ = []
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def install(monkeypatch: Any, version: str = '10.3.0', device_count: int = 1,
            cudart_layout: str = 'bindings', real_cudart: bool = False,
            compute_capability: str = trt_standin.DEFAULT_COMPUTE_CAPABILITY) -> StandIn:
    """Install the stand-ins into sys.modules for the duration of one test."""
    trt = trt_standin.build_module(version, compute_capability)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    if real_cudart:
        return StandIn(trt, None, None)
    gpu = cudart_standin.StandinGpu(device_count, compute_capability=compute_capability)
    runtime = cudart_standin.build_module(gpu)
    if cudart_layout == 'bindings':
        monkeypatch.setitem(sys.modules, 'cuda', _package('cuda'))
        monkeypatch.setitem(sys.modules, 'cuda.bindings', _package('cuda.bindings',
                                                                   runtime=runtime))
        monkeypatch.setitem(sys.modules, 'cuda.bindings.runtime', runtime)
    elif cudart_layout == 'legacy':
        monkeypatch.setitem(sys.modules, 'cuda', _package('cuda', cudart=runtime))
        monkeypatch.setitem(sys.modules, 'cuda.bindings', None)
        monkeypatch.setitem(sys.modules, 'cuda.cudart', runtime)
    else:
        raise ValueError(f'unknown cudart_layout {cudart_layout!r}')
    return StandIn(trt, runtime, gpu)


def install_into_process(version: str = '10.3.0') -> types.ModuleType:
    """Install the stand-ins into this process's sys.modules for good (for a child process,
    see child/tensorrt.py); return the stand-in `tensorrt` module."""
    installed = sys.modules.get('tensorrt')
    if getattr(installed, 'calls', None) is not None:
        return installed
    trt = trt_standin.build_module(version)
    runtime = cudart_standin.build_module(cudart_standin.StandinGpu())
    sys.modules.update({'tensorrt': trt, 'cuda': _package('cuda'),
                        'cuda.bindings': _package('cuda.bindings', runtime=runtime),
                        'cuda.bindings.runtime': runtime})
    return trt
