"""Network inputs made from the sample images, for tests that drive engines directly."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from human_detector_ros.assets import sample_image_path
from human_detector_ros.engines.base import Engine
from human_detector_ros.letterbox import letterbox, letterbox_transform, to_network_input
from human_detector_ros.image_conversion import read_bgr


def sample_network_input(name: str, hw: tuple = (640, 640)) -> np.ndarray:
    """Sample image `name` letterboxed to `hw`: [1, 3, H, W] float32 RGB in [0, 1]."""
    bgr = read_bgr(str(sample_image_path(name)))
    return to_network_input(letterbox(bgr, letterbox_transform(bgr.shape[:2], hw)), np.float32)


class OnnxThroughTorch(Engine):
    """A real (ONNX Runtime) engine behind `infer_torch`, so the torch pipeline can run it on
    the CPU. `infer` replaces the engine's own numpy inference (e.g. a caching one)."""

    backend = 'onnxruntime'
    runs_torch = True

    def __init__(self, engine: Engine,
                 infer: Optional[Callable[[np.ndarray], Dict[str, np.ndarray]]] = None) -> None:
        super().__init__(engine.model_path, 'cpu', engine.inputs, engine.outputs,
                         engine.metadata, engine.max_batch)
        self.inner = engine
        self._infer = infer or engine.infer

    def infer(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        return self._infer(images)

    def infer_torch(self, images):
        import torch

        return {name: torch.from_numpy(array)
                for name, array in self.infer(images.numpy()).items()}
