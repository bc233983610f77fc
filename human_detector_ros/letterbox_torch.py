"""Letterbox on torch tensors (CPU or CUDA), same geometry as `letterbox.letterbox`.

Resizing uses `F.interpolate(mode='bilinear', align_corners=False, antialias=False)`, the same
sampling grid and weights as cv2.INTER_LINEAR (OpenCV also does not antialias when shrinking).
OpenCV rounds its weights to 11-bit fixed point for uint8 images; interpolating in float32 and
rounding to whole grey levels therefore differs from OpenCV by at most 1 grey level (1/255 in
the network input) on some resized pixels. Padding, and images that need no resize, are
identical to the numpy path on CPU and CUDA alike.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from human_detector_ros.letterbox import LetterboxTransform, PAD_VALUE

if TYPE_CHECKING:
    import torch

OPENCV_TOLERANCE_GREY_LEVELS = 1


def letterbox_to_input(bgr: torch.Tensor, transform: LetterboxTransform,
                       out: torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 BGR tensor -> `out`, the [1, 3, H, W] RGB network input, values / 255.

    `out` is float32 or float16 on any device; `bgr` is copied to its device if needed.
    Returns `out`.
    """
    import torch
    import torch.nn.functional as F

    dst_h, dst_w = transform.dst_hw
    if tuple(bgr.shape) != transform.src_hw + (3,):
        raise ValueError(f'image of shape {tuple(bgr.shape)} does not match the letterbox '
                         f'source {transform.src_hw} x 3')
    if tuple(out.shape) != (1, 3, dst_h, dst_w):
        raise ValueError(f'out must be [1, 3, {dst_h}, {dst_w}], got {list(out.shape)}')
    top, left = transform.pad_top, transform.pad_left
    resized_h, resized_w = transform.resized_hw
    rgb = bgr.to(out.device, non_blocking=True).permute(2, 0, 1).flip(0)
    out.fill_(PAD_VALUE)
    interior = out[0, :, top:top + resized_h, left:left + resized_w]
    if transform.resized_hw == transform.src_hw:
        interior.copy_(rgb)
    else:
        resized = F.interpolate(rgb.unsqueeze(0).float(), size=(resized_h, resized_w),
                                mode='bilinear', align_corners=False, antialias=False)
        interior.copy_(resized[0].round_().clamp_(0, 255))
    # A 0-dim tensor, not the number 255: CUDA multiplies by the reciprocal of a Python scalar
    # divisor, which is 1 ulp off true division (what numpy and Ultralytics on the CPU do).
    return out.div_(torch.full((), 255, dtype=out.dtype, device=out.device))
