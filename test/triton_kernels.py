"""The package's Triton kernel modules for tests: compiled on CUDA, else interpreted.

Without a GPU, Triton's interpreter runs the same kernel code with numpy on CPU tensors; it has
to be asked for (TRITON_INTERPRET=1) before Triton is first imported in the process.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Optional

import torch


def kernel_module(name: str) -> Optional[ModuleType]:
    """human_detector_ros.`name` (a module of Triton kernels), compiled where CUDA is, else in
    Triton's interpreter; None when Triton is not installed or does not import, or was imported
    for compiling before the interpreter was asked for."""
    module = f'human_detector_ros.{name}'
    if torch.cuda.is_available():
        try:
            return importlib.import_module(module)
        except ImportError:
            return None
    if importlib.util.find_spec('triton') is None:
        return None
    if module not in sys.modules:
        if 'triton' in sys.modules and os.environ.get('TRITON_INTERPRET') != '1':
            return None
        # For the rest of this GPU-less process: Triton reads it again when it compiles.
        os.environ['TRITON_INTERPRET'] = '1'
        importlib.import_module(module)
    return sys.modules[module]
