"""TorchScript backend: Ultralytics `format=torchscript` exports on the CPU or a CUDA device.

Besides the numpy `infer`, `infer_torch` keeps tensors on the device for a GPU-resident
pipeline (GPU letterbox -> forward -> GPU NMS).
"""
from __future__ import annotations

import pathlib
from typing import Any, Dict, List, Tuple, TYPE_CHECKING

import numpy as np

from human_detector_ros.engines.base import DEFAULT_INPUT_HW, Engine, parse_device, TensorSpec
from human_detector_ros.errors import InferenceError, ModelLoadError
from human_detector_ros.model_metadata import metadata_from_torchscript_config

if TYPE_CHECKING:
    import torch

INPUT_NAME = 'images'


def _flatten(result: Any) -> List[Any]:
    """Tensors of a forward result in order (a tensor, or nested tuples/lists of tensors)."""
    if isinstance(result, (tuple, list)):
        return [tensor for item in result for tensor in _flatten(item)]
    return [result]


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a numpy float dtype (float16 or float32)."""
    import torch

    return torch.float16 if np.dtype(dtype) == np.float16 else torch.float32


class TorchScriptEngine(Engine):
    """A TorchScript module (float32 or float16 parameters) loaded with torch.jit.load.

    TorchScript declares no shapes: with max_batch > 1 one forward of two images at load
    tells whether the module takes a batch (input [-1, 3, H, W], `max_batch` as asked) or
    only one image (input [1, 3, H, W], `max_batch` 1).
    """

    backend = 'torchscript'
    runs_torch = True

    def __init__(self, model_path: pathlib.Path, device: str = 'auto',
                 max_batch: int = 1) -> None:
        request = parse_device(device, model_path)
        try:
            import torch
        except ImportError:
            raise ModelLoadError(
                f'Cannot load TorchScript model {model_path}: PyTorch is not installed. Install '
                f'it (`pip install torch`; on Jetson the JetPack PyTorch wheel) or use the ONNX '
                f'model.') from None
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if request.kind == 'cuda' and request.index >= cuda_count:
            raise ModelLoadError(
                f'Device {request.cuda_name} was asked for {model_path}, but this PyTorch '
                f'{torch.__version__} sees {cuda_count} CUDA device(s). Install a CUDA build of '
                f'PyTorch, check the NVIDIA driver, or use device "cpu".')
        on_cuda = request.kind == 'cuda' or (request.kind == 'auto' and cuda_count > 0)
        self._torch = torch
        self._device = torch.device(request.cuda_name if on_cuda else 'cpu')
        extra_files = {'config.txt': ''}
        try:
            module = torch.jit.load(str(model_path), map_location=self._device,
                                    _extra_files=extra_files)
        except Exception as error:  # torch raises RuntimeError, ValueError, pickle errors...
            raise ModelLoadError(
                f'PyTorch {torch.__version__} cannot load TorchScript model {model_path}: '
                f'{error}. The file may be truncated or not TorchScript; re-export it '
                f'(`yolo export model=best.pt format=torchscript`).') from None
        self._module = module.eval()
        metadata = metadata_from_torchscript_config(extra_files['config.txt'], model_path)
        parameter = next(iter(module.parameters()), None)
        dtype = np.dtype(np.float16) if parameter is not None and \
            parameter.dtype == torch.float16 else np.dtype(np.float32)
        self._torch_dtype = torch_dtype(dtype)
        height, width = metadata.imgsz or DEFAULT_INPUT_HW
        inputs = (TensorSpec(INPUT_NAME, (1, 3, height, width), dtype),)
        outputs = self._probe_outputs(model_path, inputs[0])
        if max_batch > 1 and self._takes_batches(inputs[0]):
            inputs = (TensorSpec(INPUT_NAME, (-1, 3, height, width), dtype),)
            outputs = tuple(TensorSpec(spec.name, (-1,) + spec.shape[1:], spec.dtype)
                            for spec in outputs)
        super().__init__(model_path, str(self._device), inputs, outputs, metadata, max_batch)

    def _takes_batches(self, spec: TensorSpec) -> bool:
        """Whether a forward of two images gives outputs of two (a traced batch-1 module
        fails or keeps batch 1)."""
        torch = self._torch
        zeros = torch.zeros((2,) + spec.shape[1:], dtype=self._torch_dtype, device=self._device)
        try:
            results = self._forward(zeros)
        except Exception:  # a module traced for batch 1 may raise anything on batch 2
            return False
        return all(tensor.shape[0] == 2 for tensor in results.values())

    def _probe_outputs(self, model_path: pathlib.Path, spec: TensorSpec
                       ) -> Tuple[TensorSpec, ...]:
        """Output specs from one forward pass on zeros (TorchScript declares no shapes)."""
        torch = self._torch
        zeros = torch.zeros(spec.shape, dtype=self._torch_dtype, device=self._device)
        try:
            results = self._forward(zeros)
        except Exception as error:  # a TorchScript forward can raise any exception type
            raise ModelLoadError(
                f'TorchScript model {model_path} fails on a {list(spec.shape)} '
                f'{spec.dtype.name} input: {error}. The detector needs a YOLO detection export '
                f'(`yolo export model=best.pt format=torchscript`).') from None
        specs = []
        for name, tensor in results.items():
            dtype = np.dtype(str(tensor.dtype).replace('torch.', ''))
            specs.append(TensorSpec(name, tuple(tensor.shape), dtype))
        return tuple(specs)

    def _forward(self, images: Any) -> Dict[str, Any]:
        with self._torch.inference_mode():
            results = _flatten(self._module(images))
        if not all(isinstance(tensor, self._torch.Tensor) for tensor in results):
            raise TypeError('the module returned something other than tensors')
        return {f'output{i}': tensor for i, tensor in enumerate(results)}

    def infer_torch(self, images: Any) -> Dict[str, Any]:
        """[b, 3, H, W] torch tensor, 1 <= b <= max_batch -> {output name: tensor on this
        engine's device, leading dimension b}.

        The input is moved to the device and converted to the parameters' dtype if needed.
        """
        self.check_shape(tuple(images.shape))
        images = images.to(device=self._device, dtype=self._torch_dtype, non_blocking=True)
        try:
            return self._forward(images)
        except Exception as error:  # a TorchScript forward can raise any exception type
            raise InferenceError(f'TorchScript forward of {self.model_path.name} failed: '
                                 f'{error}') from None

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """[b, 3, H, W] numpy array -> {output name: numpy array, leading dimension b}."""
        tensor = self._torch.from_numpy(self.check_images(images))
        results = self.infer_torch(tensor)
        return {name: value.cpu().numpy() for name, value in results.items()}

    def close(self) -> None:
        self._module = None
