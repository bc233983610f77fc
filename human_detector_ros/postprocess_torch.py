"""`postprocess` on torch tensors (CPU or CUDA), same semantics as `postprocess.py`.

The raw head's NMS runs on the tensors' device, with torchvision.ops.nms when torchvision
imports and an equivalent greedy NMS in plain torch otherwise. End-to-end and EfficientNMS
outputs hold at most a few hundred rows: they are copied to the CPU and filtered there by the
numpy code.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional, TYPE_CHECKING

from human_detector_ros.letterbox import LetterboxTransform
from human_detector_ros.postprocess import (
    decode_rows, Detections, MAX_NMS, MAX_WH, NmsConfig, OutputLayout, rows_to_detections)

if TYPE_CHECKING:
    import torch

NmsFunction = Callable[['torch.Tensor', 'torch.Tensor', float], 'torch.Tensor']


@functools.lru_cache(maxsize=1)
def torchvision_nms() -> Optional[NmsFunction]:
    """torchvision.ops.nms, or None when torchvision does not import."""
    try:
        import torchvision
    except ImportError:
        return None
    return torchvision.ops.nms


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
               max_kept: Optional[int] = None) -> torch.Tensor:
    """Greedy NMS in plain torch, as torchvision.ops.nms: kept indices (int64), best first.

    boxes (N, 4) xyxy float32, scores (N,), on any device; the indices come back on it.
    Suppresses IoU strictly above the threshold (compared in float64, like torchvision's CPU
    kernel); ties in score keep input order. max_kept: stop after this many (the first
    max_kept of the full result: a kept box depends only on higher-scoring ones).
    """
    import torch

    device = boxes.device
    # The loop syncs once per kept box on a GPU; on the CPU it runs without stalls.
    x1, y1, x2, y2 = boxes.cpu().unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores.cpu(), descending=True, stable=True).indices
    keep = []
    while order.numel() and len(keep) != max_kept:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        width = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp_(min=0)
        height = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp_(min=0)
        inter = width * height
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou.double() > iou_threshold)]
    kept = torch.stack(keep) if keep else torch.zeros((0,), dtype=torch.int64)
    return kept.to(device)


def nms_indices(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                max_kept: Optional[int] = None) -> torch.Tensor:
    """torchvision.ops.nms when available, else `greedy_nms`; the first max_kept kept."""
    nms = torchvision_nms()
    if nms is None:
        return greedy_nms(boxes, scores, iou_threshold, max_kept)
    return nms(boxes, scores, iou_threshold)[:max_kept]


def non_max_suppression(prediction: torch.Tensor, config: NmsConfig) -> torch.Tensor:
    """One image's raw head output (4+nc, N) -> (M, 6) float32 rows on the same device.

    Same steps as `postprocess.non_max_suppression`; `prediction` is not modified.
    """
    import torch

    prediction = prediction.float()
    class_scores = prediction[4:]
    candidates = torch.nonzero(class_scores.amax(0) > config.conf_threshold).view(-1)
    scores, class_ids = class_scores[:, candidates].max(0)
    xywh = prediction[:4, candidates].T
    half_wh = xywh[:, 2:] / 2
    boxes = torch.cat((xywh[:, :2] - half_wh, xywh[:, :2] + half_wh), 1)
    if config.classes is not None:
        wanted = torch.isin(class_ids, torch.tensor(config.classes, device=class_ids.device))
        boxes, scores, class_ids = boxes[wanted], scores[wanted], class_ids[wanted]
    if scores.shape[0] > MAX_NMS:
        best = torch.sort(scores, descending=True, stable=True).indices[:MAX_NMS]
        boxes, scores, class_ids = boxes[best], scores[best], class_ids[best]
    class_float = class_ids.float()
    offsets = class_float[:, None] * (0 if config.agnostic else MAX_WH)
    keep = nms_indices(boxes + offsets, scores, config.iou_threshold, config.max_det)
    return torch.cat((boxes[keep], scores[keep, None], class_float[keep, None]), 1)


def postprocess(outputs: Mapping[str, torch.Tensor], layout: OutputLayout, config: NmsConfig,
                transform: LetterboxTransform, index: int = 0) -> Detections:
    """Image `index` of the named output tensors -> Detections in its source pixels (numpy,
    on the CPU)."""
    if layout is OutputLayout.RAW:
        (output,) = outputs.values()
        rows = non_max_suppression(output[index], config).cpu().numpy()
    else:
        arrays = {name: tensor.detach().cpu().numpy() for name, tensor in outputs.items()}
        rows = decode_rows(arrays, layout, config, index)
    return rows_to_detections(rows, transform)
