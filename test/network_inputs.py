"""Network inputs made from the sample images, for tests that drive engines directly."""
from __future__ import annotations

import numpy as np

from human_detector_ros.assets import sample_image_path
from human_detector_ros.letterbox import letterbox, letterbox_transform, to_network_input
from human_detector_ros.image_conversion import read_bgr


def sample_network_input(name: str, hw: tuple = (640, 640)) -> np.ndarray:
    """Sample image `name` letterboxed to `hw`: [1, 3, H, W] float32 RGB in [0, 1]."""
    bgr = read_bgr(str(sample_image_path(name)))
    return to_network_input(letterbox(bgr, letterbox_transform(bgr.shape[:2], hw)), np.float32)
