"""STAND-IN for the CUDA runtime bindings of cuda-python (`cuda.bindings.runtime`).

Not NVIDIA code. It follows the cuda-python calling convention (every function returns a
tuple whose first item is a `cudaError_t`) and models the GPU with real host memory:
`cudaMalloc` and `cudaMallocHost` return addresses of ctypes buffers, memcpy moves real bytes
between addresses, and async work is queued per stream and runs only when the stream is
synchronized (or a synchronous copy or stream destruction drains it), the worst case a real
GPU allows. Device memory is not host-accessible here either: a copy whose host side points
into a device allocation, or whose device side is not one, fails with cudaErrorInvalidValue.
"""
from __future__ import annotations

import ctypes
import enum
import types
from typing import Any, Callable, Dict, List, Tuple


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """A stream handle; `int(stream)` is the value TensorRT's `stream_handle` takes."""

    def __init__(self, handle: int = 0) -> None:
        self._handle = handle

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:
        return self._handle

    def __repr__(self) -> str:
        return f'<cudaStream_t {self._handle:#x}>'


class StandinGpu:
    """The state behind the module: allocations, streams, call counters."""

    def __init__(self, device_count: int = 1, name: str = 'Stand-in GPU',
                 compute_capability: str = '8.7') -> None:
        self.device_count = device_count
        self.name = name
        self.compute_capability = compute_capability
        self.current_device = 0
        self.allocations: Dict[int, Tuple[Any, int, str]] = {}
        self.streams: Dict[int, List[Callable[[], cudaError_t]]] = {}
        self.counts: Dict[str, int] = {}
        self.next_stream = 0x5000

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def live(self, kind: str) -> int:
        """Number of allocations of `kind` ('device' or 'pinned') not yet freed."""
        return sum(1 for _, _, k in self.allocations.values() if k == kind)

    def find(self, address: int, nbytes: int, kind: str) -> bool:
        """True if [address, address + nbytes) lies inside one allocation of `kind`."""
        for start, (_, size, k) in self.allocations.items():
            if k == kind and start <= address and address + nbytes <= start + size:
                return True
        return False

    def inside_device(self, address: int) -> bool:
        return any(start <= address < start + size
                   for start, (_, size, k) in self.allocations.items() if k == 'device')

    def drain(self, handle: int) -> cudaError_t:
        pending, self.streams[handle] = self.streams[handle], []
        for operation in pending:
            status = operation()
            if status != cudaError_t.cudaSuccess:
                return status
        return cudaError_t.cudaSuccess


def _handle(stream: Any) -> int:
    return int(stream) if stream is not None else 0


def build_module(gpu: StandinGpu) -> types.ModuleType:
    """A module object with the cuda-python runtime functions the backend calls."""
    module = types.ModuleType('cuda.bindings.runtime', __doc__)
    module.cudaError_t = cudaError_t
    module.cudaMemcpyKind = cudaMemcpyKind
    module.cudaStream_t = cudaStream_t
    module.gpu = gpu
    ok = cudaError_t.cudaSuccess

    def allocate(nbytes: int, kind: str) -> Tuple[cudaError_t, int]:
        if gpu.device_count == 0:
            return cudaError_t.cudaErrorNoDevice, 0
        if not isinstance(nbytes, int) or nbytes <= 0:
            return cudaError_t.cudaErrorInvalidValue, 0
        buffer = ctypes.create_string_buffer(nbytes)
        address = ctypes.addressof(buffer)
        gpu.allocations[address] = (buffer, nbytes, kind)
        return ok, address

    def release(address: int, kind: str) -> Tuple[cudaError_t]:
        entry = gpu.allocations.get(address)
        if entry is None or entry[2] != kind:
            return (cudaError_t.cudaErrorInvalidValue,)
        del gpu.allocations[address]
        return (ok,)

    def copy_now(dst: int, src: int, count: int, kind: cudaMemcpyKind) -> cudaError_t:
        if not isinstance(dst, int) or not isinstance(src, int):
            raise TypeError('stand-in cudart takes integer addresses')
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            valid = gpu.find(dst, count, 'device') and not gpu.inside_device(src)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            valid = gpu.find(src, count, 'device') and not gpu.inside_device(dst)
        else:
            valid = False
        if not valid:
            return cudaError_t.cudaErrorInvalidValue
        ctypes.memmove(dst, src, count)
        return ok

    def cudaGetDeviceCount() -> Tuple[cudaError_t, int]:
        if gpu.device_count == 0:
            return cudaError_t.cudaErrorNoDevice, 0
        return ok, gpu.device_count

    def cudaSetDevice(device: int) -> Tuple[cudaError_t]:
        gpu.count('cudaSetDevice')
        if not 0 <= device < gpu.device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        gpu.current_device = device
        return (ok,)

    def cudaMalloc(nbytes: int) -> Tuple[cudaError_t, int]:
        gpu.count('cudaMalloc')
        return allocate(nbytes, 'device')

    def cudaMallocHost(nbytes: int) -> Tuple[cudaError_t, int]:
        gpu.count('cudaMallocHost')
        return allocate(nbytes, 'pinned')

    def cudaFree(address: int) -> Tuple[cudaError_t]:
        gpu.count('cudaFree')
        return release(address, 'device')

    def cudaFreeHost(address: int) -> Tuple[cudaError_t]:
        gpu.count('cudaFreeHost')
        return release(address, 'pinned')

    def cudaStreamCreate() -> Tuple[cudaError_t, cudaStream_t]:
        gpu.count('cudaStreamCreate')
        gpu.next_stream += 0x10
        gpu.streams[gpu.next_stream] = []
        return ok, cudaStream_t(gpu.next_stream)

    def cudaStreamDestroy(stream: Any) -> Tuple[cudaError_t]:
        handle = _handle(stream)
        if handle not in gpu.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        status = gpu.drain(handle)
        del gpu.streams[handle]
        return (status,)

    def cudaStreamSynchronize(stream: Any) -> Tuple[cudaError_t]:
        gpu.count('cudaStreamSynchronize')
        handle = _handle(stream)
        if handle not in gpu.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (gpu.drain(handle),)

    def cudaMemcpyAsync(dst: int, src: int, count: int, kind: cudaMemcpyKind,
                        stream: Any) -> Tuple[cudaError_t]:
        gpu.count('cudaMemcpyAsync')
        handle = _handle(stream)
        if handle not in gpu.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        gpu.streams[handle].append(lambda: copy_now(dst, src, count, kind))
        return (ok,)

    def cudaMemcpy(dst: int, src: int, count: int, kind: cudaMemcpyKind) -> Tuple[cudaError_t]:
        gpu.count('cudaMemcpy')
        for handle in list(gpu.streams):
            status = gpu.drain(handle)
            if status != ok:
                return (status,)
        return (copy_now(dst, src, count, kind),)

    def cudaGetDeviceProperties(device: int) -> Tuple[cudaError_t, Any]:
        if not 0 <= device < gpu.device_count:
            return cudaError_t.cudaErrorInvalidDevice, None
        major, minor = (int(part) for part in gpu.compute_capability.split('.'))
        # cuda-python gives the name as the raw, NUL-padded char[256].
        name = gpu.name.encode().ljust(256, b'\0')
        return ok, types.SimpleNamespace(name=name, major=major, minor=minor)

    def cudaGetErrorString(error: cudaError_t) -> Tuple[cudaError_t, bytes]:
        return ok, f'stand-in error {cudaError_t(error).name}'.encode()

    def cudaGetErrorName(error: cudaError_t) -> Tuple[cudaError_t, bytes]:
        return ok, cudaError_t(error).name.encode()

    for function in (cudaGetDeviceCount, cudaSetDevice, cudaMalloc, cudaMallocHost, cudaFree,
                     cudaFreeHost, cudaStreamCreate, cudaStreamDestroy, cudaStreamSynchronize,
                     cudaMemcpyAsync, cudaMemcpy, cudaGetDeviceProperties,
                     cudaGetErrorString, cudaGetErrorName):
        setattr(module, function.__name__, function)
    return module
