"""The seed's pipeline, re-implemented as the baseline of bench_detect.py.

A frame goes through it the way a typical TensorRT-8-era YOLO wrapper runs one: CPU letterbox
with fresh arrays every frame (cv2.resize, cv2.copyMakeBorder, BGR->RGB, HWC->CHW, float32
/ 255), a blocking upload of the float32 blob, an eager forward, a download of the whole raw
output [1, 4+nc, N], then decode and NMS on the CPU (cv2.dnn.NMSBoxesBatched) and the boxes
scaled back to the frame. `forward` stands for the engine: blob in, raw output out.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

import cv2
import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def torch_forward(module: Any, device: str, half: bool) -> Forward:
    """[1, 3, H, W] float32 blob -> raw output, through a TorchScript module on `device`."""
    import torch

    def forward(blob: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            images = torch.from_numpy(blob).to(device)
            output = module(images.half() if half else images)
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.float().cpu().numpy()

    return forward


class SeedPipeline:
    """bgr (H, W, 3) uint8 -> (boxes (N, 4) xyxy frame px, scores (N,), class ids (N,))."""

    def __init__(self, forward: Forward, input_hw: Tuple[int, int] = (640, 640),
                 conf_threshold: float = 0.5, iou_threshold: float = 0.45) -> None:
        self.forward = forward
        self.input_hw = input_hw
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold

    def __call__(self, bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = bgr.shape[:2]
        ratio = min(self.input_hw[0] / height, self.input_hw[1] / width)
        new_w, new_h = round(width * ratio), round(height * ratio)
        pad_w, pad_h = (self.input_hw[1] - new_w) / 2, (self.input_hw[0] - new_h) / 2
        top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
        left, right = round(pad_w - 0.1), round(pad_w + 0.1)
        resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                    value=(114, 114, 114))
        blob = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))[None]
        blob = blob.astype(np.float32) / 255.0
        prediction = self.forward(blob)[0].T
        scores = prediction[:, 4:].max(1)
        class_ids = prediction[:, 4:].argmax(1)
        keep = scores > self.conf_threshold
        xywh, scores, class_ids = prediction[keep, :4], scores[keep], class_ids[keep]
        corner = xywh.copy()
        corner[:, :2] -= xywh[:, 2:] / 2
        indices = np.asarray(cv2.dnn.NMSBoxesBatched(
            corner.tolist(), scores.tolist(), class_ids.tolist(), self.conf_threshold,
            self.iou_threshold), dtype=np.int64).reshape(-1)
        boxes = np.concatenate([corner[indices, :2], corner[indices, :2] + xywh[indices, 2:]], 1)
        boxes = (boxes - np.array([left, top, left, top])) / ratio
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return boxes.astype(np.float32), scores[indices], class_ids[indices]
