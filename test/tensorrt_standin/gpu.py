"""STAND-IN TensorRT execution on a real NVIDIA GPU, for the GPU machine. Not NVIDIA code.

A plan made by `gpu_plan_bytes` names a TorchScript export of the model instead of an ONNX
file. The stand-in's `execute_async_v2/v3` then runs that module with PyTorch on the GPU the
way TensorRT runs an engine: it reads the inputs from, and writes the outputs to, the device
addresses the caller bound (wrapped as torch tensors through `__cuda_array_interface__`), on
the caller's stream (`torch.cuda.ExternalStream`), and waits for nothing, so no data passes
through the host. As with TensorRT:

* the enqueue can be captured in a CUDA graph (the module's kernels go to the capturing
  stream). A capture is refused unless the context ran once outside a capture with its
  current input shapes ("call enqueue once before capturing", TensorRT's CUDA-graph
  guidance), and a plan made with `capturable=False` refuses every capture, as an engine
  with loops or data-dependent shapes does;
* an enqueue on the legacy default stream (handle 0) logs TensorRT's warning and synchronizes
  the device around the work;
* an address that is not device memory fails the enqueue with an illegal-address error.

Precision is the module's own (an fp16 export computes in fp16); inputs and outputs are
converted from and to the plan's I/O dtypes, as TensorRT's reformatting layers do.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

DEFAULT_STREAM_WARNING = (
    'Using default stream in enqueueV3() may lead to performance issues due to additional '
    'calls to cudaStreamSynchronize() by TensorRT to ensure correct synchronization. Please '
    'use non-default stream instead.')
_MODULES: Dict[Tuple[str, str], Any] = {}


def load_module(path: str, device: Any) -> Any:
    """One TorchScript module per (file, device), in eval mode."""
    import torch

    key = (path, str(device))
    if key not in _MODULES:
        _MODULES[key] = torch.jit.load(path, map_location=device).eval()
    return _MODULES[key]


def _flatten(result: Any) -> List[Any]:
    if isinstance(result, (tuple, list)):
        return [tensor for item in result for tensor in _flatten(item)]
    return [result]


def gpu_plan_bytes(torchscript_path: str, version: str, dtype: str = 'float32',
                   dynamic: bool = False, capturable: bool = True,
                   imgsz: Sequence[int] = (640, 640), device: str = 'cuda',
                   batch: int = 1) -> bytes:
    """A stand-in plan that runs `torchscript_path` on the GPU, all I/O in `dtype`.

    Input `images` [batch, 3, *imgsz]; outputs `output0`, ... shaped as one forward on
    `device` gives them. dynamic: the input is declared [-1, 3, -1, -1] (profile min
    [1, 3, 32, 32], opt = max = [batch, 3, *imgsz]), outputs [-1, C, -1] until the input shape
    is set; the batch of each call is the input's. Not dynamic: a fixed batch `batch`.
    """
    import torch

    from tensorrt_standin.trt import DEFAULT_COMPUTE_CAPABILITY, PLAN_MAGIC

    module = load_module(torchscript_path, torch.device(device))
    parameter_dtype = next(iter(module.parameters())).dtype
    shape = [batch, 3, int(imgsz[0]), int(imgsz[1])]
    with torch.inference_mode():
        results = _flatten(module(torch.zeros(shape, dtype=parameter_dtype, device=device)))
    entries: List[Tuple[str, str, List[int]]] = [('images', 'input', shape)]
    entries += [(f'output{i}', 'output', list(result.shape)) for i, result in enumerate(results)]
    tensors = []
    for name, mode, runtime_shape in entries:
        declared = list(runtime_shape)
        entry: Dict[str, Any] = {'name': name, 'mode': mode, 'dtype': dtype,
                                 'runtime_shape': runtime_shape}
        if dynamic:
            for dim in ((0, 2, 3) if mode == 'input' else (0, len(declared) - 1)):
                declared[dim] = -1
            if mode == 'input':
                entry['profile'] = [[1, 3, 32, 32], runtime_shape, runtime_shape]
        entry['shape'] = declared
        tensors.append(entry)
    header = {'tensorrt_version': version, 'compute_capability': DEFAULT_COMPUTE_CAPABILITY,
              'torchscript': str(torchscript_path), 'capturable': capturable,
              'tensors': tensors}
    return PLAN_MAGIC + json.dumps(header).encode('utf-8')


class _DeviceMemory:
    """A raw device address with a shape and dtype, as `__cuda_array_interface__` v3."""

    def __init__(self, address: int, shape: Sequence[int], dtype: np.dtype) -> None:
        self.__cuda_array_interface__ = {
            'shape': tuple(shape), 'typestr': np.dtype(dtype).str, 'data': (address, False),
            'strides': None, 'version': 3, 'stream': None}


class GpuExecution:
    """The GPU work of one execution context.

    plan: the deserialized plan; error, warn: log through the context's ILogger.
    """

    def __init__(self, plan: Dict[str, Any], error: Callable[[str], None],
                 warn: Callable[[str], None]) -> None:
        self.path = plan['torchscript']
        self.capturable = bool(plan.get('capturable', True))
        self.error, self.warn = error, warn
        self.views: Dict[str, Tuple[Any, Any]] = {}
        self.flushed_shapes: Optional[Dict[str, Tuple[int, ...]]] = None

    def _view(self, name: str, address: int, shape: Tuple[int, ...], dtype: np.dtype) -> Any:
        """The bound memory as a torch tensor of `shape`, made again only when the address or
        the shape changes."""
        import torch

        known = self.views.get(name)
        if known is not None and known[0] == (address, shape):
            return known[1]
        tensor = torch.as_tensor(_DeviceMemory(address, shape, dtype))
        if tensor.device.type != 'cuda':
            raise ValueError(f'address {address:#x} is not device memory')
        self.views[name] = ((address, shape), tensor)
        return tensor

    def __call__(self, tensors: Sequence[Any], addresses: Dict[str, int],
                 shapes: Dict[str, Tuple[int, ...]], stream_handle: int) -> bool:
        """Enqueue the module on `stream_handle` at the run `shapes` of every tensor; False
        (and an error logged) on failure."""
        import torch

        try:
            views = {tensor.name: self._view(tensor.name, addresses[tensor.name],
                                             shapes[tensor.name], tensor.numpy_dtype)
                     for tensor in tensors}
        except (RuntimeError, TypeError, ValueError) as failure:
            self.error(f'Error Code 1: Cuda Runtime (an illegal memory access was encountered: '
                       f'{failure})')
            return False
        device = next(iter(views.values())).device
        if stream_handle == 0:
            self.warn(DEFAULT_STREAM_WARNING)
            stream = torch.cuda.default_stream(device)
        else:
            stream = torch.cuda.ExternalStream(stream_handle, device=device)
        with torch.cuda.stream(stream), torch.inference_mode():
            capturing = torch.cuda.is_current_stream_capturing()
            if capturing and not self.capturable:
                self.error('IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (operation '
                           'not permitted when stream is capturing: this engine cannot be '
                           'captured in a CUDA graph)')
                return False
            if capturing and self.flushed_shapes != shapes:
                self.error('stand-in: enqueue once outside a capture after setting the input '
                           'shapes, then capture (TensorRT\'s CUDA graph guidance)')
                return False
            if stream_handle == 0:
                torch.cuda.synchronize(device)
            module = load_module(self.path, device)
            dtype = next(iter(module.parameters())).dtype
            inputs = [views[tensor.name].to(dtype) for tensor in tensors if tensor.is_input]
            results = _flatten(module(*inputs))
            outputs = [tensor for tensor in tensors if not tensor.is_input]
            if len(results) != len(outputs):
                self.error(f'stand-in: the module returned {len(results)} outputs, the plan '
                           f'declares {len(outputs)}')
                return False
            for tensor, result in zip(outputs, results):
                views[tensor.name].copy_(result.reshape(shapes[tensor.name]))
            if stream_handle == 0:
                torch.cuda.synchronize(device)
        if not capturing:
            self.flushed_shapes = dict(shapes)
        return True
