"""Ultralytics' `non_max_suppression` for one image with static shapes: no host round trip.

Two implementations with one result, chosen by `fixed_size_nms`:

- Triton (`device_nms_triton`, on CUDA where Triton imports): two kernels, the exact greedy NMS
  over the candidates sorted by score; nothing is ever left unsettled.
- torch (everywhere else, e.g. Jetson torch builds without Triton, and the CPU): the best
  `capacity` candidates by score (a stable sort, as the numpy NMS), their IoU matrix, and the
  greedy suppression solved as a fixed point (a box is kept when no kept, better box
  suppresses it; each of `rounds` rounds settles at least one more box).

Both report the candidate count and how many boxes the rounds left unsettled; when the count
exceeds the capacity or something is unsettled, the caller must take the exact NMS
(`postprocess_torch`). Every shape is static, so the NMS can be captured in a CUDA graph.
"""
from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any, Dict, List, Optional, TYPE_CHECKING

import numpy as np

from human_detector_ros.postprocess import MAX_WH, NmsConfig

if TYPE_CHECKING:
    import torch

LOG = logging.getLogger(__name__)
# The default model has at most ~60 candidates per frame even at conf 0.05; more than this
# many takes the exact fallback.
NMS_CAPACITY = 512
NMS_ROUNDS = 8
# Row 0 of the fixed-size NMS result: kept count, candidate count, unsettled boxes.
KEPT, CANDIDATES, UNSETTLED = 0, 1, 2


class NmsLimits:
    """An NmsConfig as device tensors, so a captured NMS follows config changes.

    conf: float32 scalar (candidates score > conf, compared in float32 as numpy does);
    iou: float64 scalar (IoU > iou compared in float64, as torchvision's CPU kernel does);
    iou_floor: float32 scalar, the largest float32 <= iou (for a float32 IoU x, x > iou exactly
    when x > iou_floor); class_offset: float32 scalar, 0 when agnostic else MAX_WH;
    class_mask: (nc,) bool. scratch: work buffers of the Triton NMS, kept between frames.
    """

    def __init__(self, num_classes: int, device: torch.device) -> None:
        import torch

        self.conf = torch.zeros((), dtype=torch.float32, device=device)
        self.iou = torch.zeros((), dtype=torch.float64, device=device)
        self.iou_floor = torch.zeros((), dtype=torch.float32, device=device)
        self.class_offset = torch.zeros((), dtype=torch.float32, device=device)
        self.class_mask = torch.ones((num_classes,), dtype=torch.bool, device=device)
        self.applied: Optional[NmsConfig] = None
        self.scratch: Dict[str, Any] = {}

    def apply(self, config: NmsConfig) -> None:
        """Write `config` into the tensors (fill kernels on the current stream, no sync)."""
        if config == self.applied:
            return
        self.conf.fill_(config.conf_threshold)
        self.iou.fill_(config.iou_threshold)
        floor = np.float32(config.iou_threshold)
        if float(floor) > config.iou_threshold:
            floor = np.nextafter(floor, np.float32(-np.inf))
        self.iou_floor.fill_(float(floor))
        self.class_offset.fill_(0 if config.agnostic else MAX_WH)
        self.class_mask.fill_(config.classes is None)
        for class_id in config.classes or ():
            if 0 <= class_id < self.class_mask.shape[0]:
                self.class_mask[class_id].fill_(True)
        self.applied = config


# Holds the error once the Triton NMS has failed in this process.
_TRITON_FAILED: List[Exception] = []


@functools.lru_cache(maxsize=1)
def triton_nms() -> Optional[ModuleType]:
    """The Triton NMS module, or None when Triton does not import."""
    try:
        from human_detector_ros import device_nms_triton
    except ImportError:
        return None
    return device_nms_triton


def fixed_size_nms(prediction: torch.Tensor, limits: NmsLimits, capacity: int,
                   rounds: int) -> torch.Tensor:
    """One image's raw head output (4+nc, N) -> (k + 2, 6) float32, k = min(N, capacity); a
    batch [B, 4+nc, N] -> [B, k + 2, 6], each image on its own.

    Row 0: kept count, candidate count, number of boxes the rounds left unsettled. Rows 1 to
    kept: x1, y1, x2, y2, score, class of the kept boxes, best first, in letterbox pixels; the
    rows after them are unspecified. Valid only when candidates <= k and nothing is unsettled.
    Every shape is static: no sync. The Triton kernels on CUDA when Triton imports (a batch in
    one launch of each), else `torch_nms` image by image.
    """
    kernels = triton_nms() if prediction.is_cuda and not _TRITON_FAILED else None
    if kernels is not None:
        try:
            return kernels.fixed_size_nms(prediction, limits.conf, limits.iou,
                                          limits.class_offset, limits.class_mask,
                                          min(capacity, prediction.shape[-1]), limits.scratch)
        except Exception as error:  # Triton imports but cannot compile or launch here
            LOG.warning('The Triton NMS failed, the torch NMS runs instead from now on: %s',
                        error)
            _TRITON_FAILED.append(error)
    if prediction.dim() == 2:
        return torch_nms(prediction, limits, capacity, rounds)
    import torch

    return torch.stack([torch_nms(image, limits, capacity, rounds) for image in prediction])


def torch_nms(prediction: torch.Tensor, limits: NmsLimits, capacity: int,
              rounds: int) -> torch.Tensor:
    """`fixed_size_nms` in plain torch ops (any device), the fixed point in `rounds` rounds."""
    import torch

    prediction = prediction.float()
    scores, class_ids = prediction[4:].max(0)
    candidate = (scores > limits.conf) & limits.class_mask[class_ids]
    order = torch.sort(torch.where(candidate, scores, -1.0), descending=True,
                       stable=True).indices[:capacity]
    count = order.shape[0]
    picked = torch.cat((prediction[:4], scores[None], class_ids[None].float()))[:, order].T
    half_wh = picked[:, 2:4] / 2
    rows = torch.cat((picked[:, :2] - half_wh, picked[:, :2] + half_wh, picked[:, 4:]), 1)
    shifted = rows[:, :4] + rows[:, 5:] * limits.class_offset
    corners = shifted.view(count, 2, 2)
    sides = (torch.minimum(corners[:, None, 1], corners[:, 1])
             - torch.maximum(corners[:, None, 0], corners[:, 0])).clamp_(min=0)
    inter = sides[..., 0] * sides[..., 1]
    extent = corners[:, 1] - corners[:, 0]
    areas = extent[:, 0] * extent[:, 1]
    iou = inter / (areas[:, None] + areas - inter)
    # suppressed_by[j, i] = 1 when the better box i (i < j) suppresses box j.
    suppressed_by = (iou > limits.iou_floor).tril_(-1).float()
    candidates = candidate.sum()
    allowed = (torch.arange(count, device=prediction.device) < candidates).float()
    keep = allowed
    for _ in range(rounds + 1):
        keep, previous = torch.addmv(allowed, suppressed_by, keep, alpha=-1).clamp_(min=0), keep
    kept = previous > 0
    slot = torch.where(kept, kept.cumsum(0), count + 1)
    packed = torch.zeros((count + 2, 6), dtype=torch.float32, device=prediction.device)
    packed[slot] = rows
    packed[0, :3] = torch.stack((kept.sum(), candidates, (keep != previous).sum())).float()
    return packed
