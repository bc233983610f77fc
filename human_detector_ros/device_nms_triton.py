"""The fixed-size NMS as two Triton kernels: the same result as `device_nms`'s torch path.

Imported only where Triton imports (desktop CUDA; Jetson torch builds often lack it).

1. `_candidates` (one program per BLOCK anchors): best class score and its class (the first
   maximum, as numpy's argmax), candidate = score > conf, no NaN score, class allowed. The
   candidates of a block get consecutive slots from one atomic counter; each slot holds the
   sort key (score bits << 32) | (anchor XOR 0x7fffffff), so sorting keys in descending order is
   numpy's stable sort by descending score whatever order the blocks wrote them in (a
   positive float32's bits order like the float).
2. `_suppress` (one program): sorts the keys, gathers the boxes (xywh -> xyxy, class offset,
   areas, in numpy's float32 operations), and runs the greedy NMS exactly: from the best box,
   each kept box suppresses the later boxes with IoU > iou (float32 IoU compared in float64),
   and the next kept box is the first later box not suppressed. Only kept boxes cost a round,
   so there is nothing to leave unsettled. It writes the packed rows and resets the counter.

Launched with fp contraction off, so a * b + c stays two roundings as in numpy; the IoU divides
with IEEE rounding (div_rn).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import triton
import triton.language as tl

if TYPE_CHECKING:
    import torch

_BLOCK = 1024
# Globals a kernel reads must be constexpr.
_ANCHOR_BITS = tl.constexpr(0x7FFFFFFF)
_MINUS_INF = tl.constexpr(float('-inf'))
# Warps of the greedy kernel: 4 measured fastest on an H200 at every candidate count, against
# 1 and 2 (bench/results/kernels_h200.json).
SUPPRESS_WARPS = 4


@triton.jit
def _candidates(prediction, row_stride, anchors, conf, class_mask, counter, keys,
                class_of_anchor, capacity, CLASSES: tl.constexpr, BLOCK: tl.constexpr,
                SLOTS: tl.constexpr):
    # Image program_id(1) of the batch: its prediction, counter, keys and classes.
    image = tl.program_id(1)
    prediction += image * (4 + CLASSES) * row_stride
    counter += image
    keys += image * SLOTS
    class_of_anchor += image * anchors
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < anchors
    best = tl.full([BLOCK], _MINUS_INF, tl.float32)
    best_class = tl.zeros([BLOCK], tl.int32)
    has_nan = tl.zeros([BLOCK], tl.int1)
    for class_id in range(CLASSES):
        score = tl.load(prediction + (4 + class_id) * row_stride + offsets, mask=inside,
                        other=0.0).to(tl.float32)
        better = score > best
        best = tl.where(better, score, best)
        best_class = tl.where(better, class_id, best_class)
        has_nan = has_nan | (score != score)
    allowed = tl.load(class_mask + best_class, mask=inside, other=0)
    candidate = inside & (best > tl.load(conf)) & (allowed != 0) & (has_nan == 0)
    flags = candidate.to(tl.int32)
    first = tl.atomic_add(counter, tl.sum(flags, 0))
    slot = first + tl.cumsum(flags, 0) - 1
    key = ((best.to(tl.int32, bitcast=True).to(tl.int64) << 32)
           | (offsets ^ _ANCHOR_BITS).to(tl.int64))
    tl.store(keys + slot, key, mask=candidate & (slot < capacity))
    tl.store(class_of_anchor + offsets, best_class, mask=candidate)


@triton.jit
def _suppress(prediction, row_stride, counter, keys, class_of_anchor, class_offset, iou_limit,
              corners, packed, capacity, CLASSES: tl.constexpr, SLOTS: tl.constexpr):
    # Image program_id(0) of the batch, each image's greedy NMS in its own program.
    image = tl.program_id(0)
    prediction += image * (4 + CLASSES) * row_stride
    counter += image
    keys += image * SLOTS
    class_of_anchor += image * row_stride
    corners += image * 5 * SLOTS
    packed += image * (capacity + 2) * 6
    slots = tl.arange(0, SLOTS)
    count = tl.load(counter)
    used = slots < tl.minimum(count, capacity)
    order = tl.sort(tl.load(keys + slots, mask=used, other=-1), 0, descending=True)
    anchor = (order & _ANCHOR_BITS).to(tl.int32) ^ _ANCHOR_BITS
    score = (order >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    class_id = tl.load(class_of_anchor + anchor, mask=used, other=0).to(tl.float32)
    centre_x = tl.load(prediction + anchor, mask=used, other=0.0).to(tl.float32)
    centre_y = tl.load(prediction + row_stride + anchor, mask=used, other=0.0).to(tl.float32)
    half_w = tl.load(prediction + 2 * row_stride + anchor, mask=used,
                     other=0.0).to(tl.float32) * 0.5
    half_h = tl.load(prediction + 3 * row_stride + anchor, mask=used,
                     other=0.0).to(tl.float32) * 0.5
    x1 = centre_x - half_w
    y1 = centre_y - half_h
    x2 = centre_x + half_w
    y2 = centre_y + half_h
    offset = class_id * tl.load(class_offset)
    shifted_x1 = x1 + offset
    shifted_y1 = y1 + offset
    shifted_x2 = x2 + offset
    shifted_y2 = y2 + offset
    area = (shifted_x2 - shifted_x1) * (shifted_y2 - shifted_y1)
    tl.store(corners + slots, shifted_x1)
    tl.store(corners + SLOTS + slots, shifted_y1)
    tl.store(corners + 2 * SLOTS + slots, shifted_x2)
    tl.store(corners + 3 * SLOTS + slots, shifted_y2)
    tl.store(corners + 4 * SLOTS + slots, area)
    tl.debug_barrier()
    limit = tl.load(iou_limit)
    active = used
    kept = tl.zeros([SLOTS], tl.int1)
    current = tl.min(tl.where(used, slots, SLOTS), 0)
    while current < SLOTS:
        box_x1 = tl.load(corners + current)
        box_y1 = tl.load(corners + SLOTS + current)
        box_x2 = tl.load(corners + 2 * SLOTS + current)
        box_y2 = tl.load(corners + 3 * SLOTS + current)
        box_area = tl.load(corners + 4 * SLOTS + current)
        width = tl.maximum(tl.minimum(box_x2, shifted_x2) - tl.maximum(box_x1, shifted_x1), 0.0)
        height = tl.maximum(tl.minimum(box_y2, shifted_y2) - tl.maximum(box_y1, shifted_y1),
                            0.0)
        inter = width * height
        iou = tl.math.div_rn(inter, box_area + area - inter)
        later = slots > current
        active = active & ~(later & (iou.to(tl.float64) > limit))
        kept = kept | (slots == current)
        current = tl.min(tl.where(active & later, slots, SLOTS), 0)
    flags = kept.to(tl.int32)
    row = tl.where(kept, tl.cumsum(flags, 0), tl.sum(flags, 0) + 1 + slots)
    row_mask = row <= capacity
    tl.store(packed + row * 6, tl.where(kept, x1, 0.0), mask=row_mask)
    tl.store(packed + row * 6 + 1, tl.where(kept, y1, 0.0), mask=row_mask)
    tl.store(packed + row * 6 + 2, tl.where(kept, x2, 0.0), mask=row_mask)
    tl.store(packed + row * 6 + 3, tl.where(kept, y2, 0.0), mask=row_mask)
    tl.store(packed + row * 6 + 4, tl.where(kept, score, 0.0), mask=row_mask)
    tl.store(packed + row * 6 + 5, tl.where(kept, class_id, 0.0), mask=row_mask)
    header = tl.where(slots == 0, tl.sum(flags, 0).to(tl.float32),
                      tl.where(slots == 1, count.to(tl.float32), 0.0))
    tl.store(packed + slots, header, mask=slots < 6)
    tl.store(packed + (capacity + 1) * 6 + slots, 0.0, mask=slots < 6)
    tl.store(counter, 0)


def fixed_size_nms(prediction: torch.Tensor, conf: torch.Tensor, iou: torch.Tensor,
                   class_offset: torch.Tensor, class_mask: torch.Tensor, capacity: int,
                   scratch: dict) -> torch.Tensor:
    """`device_nms.fixed_size_nms` in two kernels; the tensors are NmsLimits' fields.

    prediction: one image's (4+nc, N), or a batch [B, 4+nc, N] whose images run side by side
    (one program per image in each kernel); the result is (k + 2, 6), or [B, k + 2, 6].
    scratch: a dict kept by the caller between calls, for the counters and work buffers of
    each batch shape (a counter starts at 0 and the second kernel leaves it at 0, so no memset
    runs per frame).
    """
    import torch

    batched = prediction.dim() == 3
    prediction = (prediction if batched else prediction[None]).contiguous()
    images, classes, anchors = prediction.shape[0], prediction.shape[1] - 4, prediction.shape[2]
    slots = triton.next_power_of_2(max(capacity, 2))
    device = prediction.device
    key = (device, images, anchors, slots)
    # One set per shape, never freed: a CUDA graph captured with a set keeps reading it.
    buffers = scratch.get(key)
    if buffers is None:
        buffers = scratch[key] = dict(
            counter=torch.zeros((images,), dtype=torch.int32, device=device),
            keys=torch.empty((images, slots), dtype=torch.int64, device=device),
            class_of_anchor=torch.empty((images, anchors), dtype=torch.int32, device=device),
            corners=torch.empty((images, 5, slots), dtype=torch.float32, device=device))
    packed = torch.empty((images, capacity + 2, 6), dtype=torch.float32, device=device)
    _candidates[(triton.cdiv(anchors, _BLOCK), images)](
        prediction, anchors, anchors, conf, class_mask.view(torch.uint8), buffers['counter'],
        buffers['keys'], buffers['class_of_anchor'], capacity, CLASSES=classes, BLOCK=_BLOCK,
        SLOTS=slots, enable_fp_fusion=False)
    _suppress[(images,)](
        prediction, anchors, buffers['counter'], buffers['keys'], buffers['class_of_anchor'],
        class_offset, iou, buffers['corners'], packed, capacity, CLASSES=classes, SLOTS=slots,
        enable_fp_fusion=False, num_warps=SUPPRESS_WARPS)
    return packed if batched else packed[0]
