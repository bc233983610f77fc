"""Decode detector outputs and run NMS exactly as Ultralytics `non_max_suppression` does.

The output layout is recognised from the engine's output specs (names, shapes, dtypes), never
from configuration:

- RAW: one output [B, 4+nc, N]: cx, cy, w, h in letterbox pixels, then nc class scores
  (already sigmoided, no objectness). Needs NMS.
- END_TO_END: one output [B, K, 6]: x1, y1, x2, y2, score, class (Ultralytics nms=True,
  YOLOv10, YOLO26).
- EFFICIENT_NMS: four outputs of TensorRT's EfficientNMS plugin: num_dets [B, 1] int32,
  boxes [B, K, 4] xyxy, scores [B, K], classes [B, K].

Each image of a batch is decoded on its own: `decode_rows` and `postprocess` take its index.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from human_detector_ros.engines.base import TensorSpec
from human_detector_ros.errors import ModelLoadError
from human_detector_ros.letterbox import LetterboxTransform

MAX_WH = 7680
MAX_NMS = 30000
EFFICIENT_NMS_ROLES = ('num_dets', 'boxes', 'scores', 'classes')
_ROLE_NAME_HINTS = {
    'num_dets': ('num',),
    'boxes': ('box',),
    'scores': ('score',),
    'classes': ('class',),
}


@dataclass(frozen=True)
class NmsConfig:
    """Thresholds of `non_max_suppression`.

    conf_threshold: keep scores strictly above it. iou_threshold: suppress IoU strictly above
    it. max_det: most detections kept. classes: keep only these class ids (None: all).
    agnostic: suppress across classes.
    """

    conf_threshold: float = 0.5
    iou_threshold: float = 0.45
    max_det: int = 300
    classes: Optional[Tuple[int, ...]] = None
    agnostic: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise ValueError(f'conf_threshold must be in [0, 1], got {self.conf_threshold}')
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f'iou_threshold must be in [0, 1], got {self.iou_threshold}')
        if self.max_det < 1:
            raise ValueError(f'max_det must be >= 1, got {self.max_det}')
        if self.classes is not None:
            object.__setattr__(self, 'classes', tuple(int(c) for c in self.classes))


@dataclass(frozen=True)
class Detections:
    """Detections in source-image pixels.

    boxes: (N, 4) float32 x1, y1, x2, y2. scores: (N,) float32. class_ids: (N,) int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0,), np.int64))

    def as_array(self) -> np.ndarray:
        """(N, 6) float32 rows x1, y1, x2, y2, conf, cls in source pixels: the array that
        Ultralytics' `Results.boxes.data` holds and YOLOv8 TensorRT scripts return."""
        return np.concatenate([self.boxes, self.scores[:, None],
                               self.class_ids[:, None]], axis=1).astype(np.float32)


class OutputLayout(enum.Enum):
    """How the engine's outputs encode detections."""

    RAW = '[B,4+nc,N]'
    END_TO_END = '[B,K,6]'
    EFFICIENT_NMS = 'num_dets,boxes,scores,classes'


def _describe(outputs: Sequence[TensorSpec]) -> str:
    return ', '.join(f'{spec.name} {list(spec.shape)} {np.dtype(spec.dtype).name}'
                     for spec in outputs) or 'no outputs'


def _unsupported(outputs: Sequence[TensorSpec], problem: str) -> ModelLoadError:
    return ModelLoadError(
        f'Unsupported model outputs ({_describe(outputs)}): {problem}. Supported: one output '
        '[B, 4+nc, N] (raw YOLOv8/YOLO11 detect head), one output [B, K, 6] (end-to-end: '
        'Ultralytics nms=True, YOLOv10, YOLO26), or the four EfficientNMS_TRT outputs '
        'num_dets [B, 1], boxes [B, K, 4], scores [B, K], classes [B, K]. Export a detection '
        'model with Ultralytics (`yolo export model=best.pt format=onnx`).')


def efficient_nms_roles(outputs: Sequence[TensorSpec]) -> Dict[str, str]:
    """Map each EfficientNMS role ('num_dets', 'boxes', 'scores', 'classes') to an output name.

    Matches by name first (num_dets/det_boxes/det_scores/det_classes and similar), then by
    shape and dtype. Raises ModelLoadError when the four outputs cannot be told apart.
    """
    if len(outputs) != 4:
        raise _unsupported(outputs, f'{len(outputs)} outputs, EfficientNMS has 4')
    roles: Dict[str, str] = {}
    for role, hints in _ROLE_NAME_HINTS.items():
        named = [spec.name for spec in outputs
                 if any(hint in spec.name.lower() for hint in hints)]
        if len(named) == 1:
            roles[role] = named[0]
    unnamed = [spec for spec in outputs if spec.name not in roles.values()]
    for spec in unnamed:
        role = _role_from_shape(spec, [r for r in EFFICIENT_NMS_ROLES if r not in roles])
        if role is not None:
            roles[role] = spec.name
    if sorted(roles) != sorted(EFFICIENT_NMS_ROLES) or len(set(roles.values())) != 4:
        raise _unsupported(outputs, 'cannot tell the four EfficientNMS outputs apart')
    by_name = {spec.name: spec for spec in outputs}
    _check_efficient_nms_shapes(outputs, {role: by_name[name] for role, name in roles.items()})
    return roles


def _role_from_shape(spec: TensorSpec, open_roles: Sequence[str]) -> Optional[str]:
    shape = tuple(spec.shape)
    is_float = np.dtype(spec.dtype).kind == 'f'
    candidates = []
    if 'num_dets' in open_roles and len(shape) == 2 and shape[1] == 1 and not is_float:
        candidates.append('num_dets')
    if 'boxes' in open_roles and len(shape) == 3 and shape[2] == 4:
        candidates.append('boxes')
    if 'scores' in open_roles and len(shape) == 2 and shape[1] != 1 and is_float:
        candidates.append('scores')
    if 'classes' in open_roles and len(shape) == 2 and shape[1] != 1 and not is_float:
        candidates.append('classes')
    return candidates[0] if len(candidates) == 1 else None


def _check_efficient_nms_shapes(outputs: Sequence[TensorSpec],
                                specs: Mapping[str, TensorSpec]) -> None:
    ranks = {'num_dets': 2, 'boxes': 3, 'scores': 2, 'classes': 2}
    for role, spec in specs.items():
        if len(spec.shape) != ranks[role]:
            raise _unsupported(outputs, f'EfficientNMS {role} output {spec.name} has rank '
                                        f'{len(spec.shape)}, expected {ranks[role]}')
    if specs['boxes'].shape[2] not in (4, -1):
        raise _unsupported(outputs, 'EfficientNMS boxes must be [B, K, 4]')
    if np.dtype(specs['num_dets'].dtype).kind not in 'iu':
        raise _unsupported(outputs, 'EfficientNMS num_dets must be an integer tensor')


def resolve_layout(outputs: Sequence[TensorSpec]) -> OutputLayout:
    """The layout of an engine's outputs; ModelLoadError (saying what is wrong) otherwise.

    A single output whose last dimension is 6 is end-to-end, as Ultralytics decides it.
    """
    if len(outputs) == 4:
        efficient_nms_roles(outputs)
        return OutputLayout.EFFICIENT_NMS
    if len(outputs) != 1:
        raise _unsupported(outputs, f'{len(outputs)} outputs')
    spec = outputs[0]
    shape = tuple(spec.shape)
    if np.dtype(spec.dtype).kind != 'f':
        raise _unsupported(outputs, f'output dtype {np.dtype(spec.dtype).name} is not float')
    if len(shape) != 3:
        raise _unsupported(outputs, f'output rank {len(shape)}, expected 3')
    if shape[0] == 0 or shape[0] < -1:
        raise _unsupported(outputs, f'batch {shape[0]}')
    if shape[2] == 6:
        return OutputLayout.END_TO_END
    if shape[1] >= 5:
        return OutputLayout.RAW
    if shape[1] == -1:
        raise _unsupported(outputs, 'the channel dimension is dynamic, so neither the number '
                                    'of classes nor the layout is known')
    raise _unsupported(outputs, f'{shape[1]} channels cannot hold a box and class scores')


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h -> new (N, 4) x1, y1, x2, y2 (Ultralytics arithmetic)."""
    out = np.empty_like(xywh)
    half_wh = xywh[:, 2:] / 2
    out[:, :2] = xywh[:, :2] - half_wh
    out[:, 2:] = xywh[:, :2] + half_wh
    return out


def nms_indices(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS like torchvision.ops.nms: indices (int64) of kept boxes, by score descending.

    boxes (N, 4) xyxy float32, scores (N,). A box is suppressed when its IoU with a kept,
    higher-scoring box is strictly greater than `iou_threshold` (compared in float64, as
    torchvision's CPU kernel does). Ties in score keep input order.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind='stable')
    threshold = np.float64(iou_threshold)
    keep = []
    with np.errstate(divide='ignore', invalid='ignore'):
        while order.size:
            i = order[0]
            keep.append(i)
            rest = order[1:]
            width = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
            height = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
            inter = width * height
            iou = inter / (areas[i] + areas[rest] - inter)
            order = rest[~(iou > threshold)]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(prediction: np.ndarray, config: NmsConfig) -> np.ndarray:
    """One image's raw head output (4+nc, N) -> (M, 6) float32 rows x1, y1, x2, y2, score, cls.

    Ultralytics `non_max_suppression` with multi_label=False: candidates whose best class
    score is > conf, best class only, class filter, the max_nms best if more, class-aware
    NMS by offsetting boxes by cls * 7680 (none when agnostic), the first max_det kept.
    Boxes stay in letterbox pixels. `prediction` is not modified.
    """
    prediction = np.asarray(prediction, dtype=np.float32)
    class_scores = prediction[4:]
    candidates = np.flatnonzero(class_scores.max(axis=0) > config.conf_threshold)
    candidate_scores = class_scores[:, candidates]
    scores = candidate_scores.max(axis=0)
    class_ids = candidate_scores.argmax(axis=0)
    boxes = xywh_to_xyxy(prediction[:4, candidates].T)
    if config.classes is not None:
        wanted = np.isin(class_ids, np.asarray(config.classes))
        boxes, scores, class_ids = boxes[wanted], scores[wanted], class_ids[wanted]
    if scores.shape[0] > MAX_NMS:
        best = np.argsort(-scores, kind='stable')[:MAX_NMS]
        boxes, scores, class_ids = boxes[best], scores[best], class_ids[best]
    class_float = class_ids.astype(np.float32)
    offsets = class_float[:, None] * np.float32(0 if config.agnostic else MAX_WH)
    keep = nms_indices(boxes + offsets, scores, config.iou_threshold)[:config.max_det]
    return np.concatenate(
        [boxes[keep], scores[keep, None], class_float[keep, None]], axis=1)


def filter_detections(rows: np.ndarray, config: NmsConfig) -> np.ndarray:
    """(K, 6) rows already suppressed by the model -> rows with score > conf, class filter,
    the first max_det (Ultralytics' end-to-end branch). Returns a new float32 array.
    """
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    wanted = rows[:, 4] > config.conf_threshold
    if config.classes is not None:
        wanted &= np.isin(rows[:, 5], np.asarray(config.classes, dtype=np.float32))
    return rows[np.flatnonzero(wanted)[:config.max_det]]


def efficient_nms_rows(outputs: Mapping[str, np.ndarray], index: int = 0) -> np.ndarray:
    """EfficientNMS outputs of image `index` of the batch -> (num_dets, 6) float32 rows."""
    specs = [TensorSpec(name, tuple(array.shape), array.dtype) for name, array in outputs.items()]
    roles = efficient_nms_roles(specs)
    count = int(np.asarray(outputs[roles['num_dets']])[index].reshape(-1)[0])
    boxes = np.asarray(outputs[roles['boxes']])[index, :count]
    scores = np.asarray(outputs[roles['scores']])[index, :count]
    classes = np.asarray(outputs[roles['classes']])[index, :count]
    return np.concatenate([boxes.astype(np.float32), scores.astype(np.float32)[:, None],
                           classes.astype(np.float32)[:, None]], axis=1)


def rows_to_detections(rows: np.ndarray, transform: LetterboxTransform) -> Detections:
    """(M, 6) float32 rows in letterbox pixels -> Detections in source pixels."""
    if rows.shape[0] == 0:
        return Detections.empty()
    return Detections(boxes=transform.boxes_to_source(rows[:, :4]),
                      scores=np.ascontiguousarray(rows[:, 4], dtype=np.float32),
                      class_ids=np.rint(rows[:, 5]).astype(np.int64))


def decode_rows(outputs: Mapping[str, np.ndarray], layout: OutputLayout, config: NmsConfig,
                index: int = 0) -> np.ndarray:
    """Image `index` of a batch of named engine outputs -> (M, 6) float32 rows x1, y1, x2,
    y2, score, class in letterbox pixels. The outputs are not modified."""
    if layout is OutputLayout.EFFICIENT_NMS:
        return filter_detections(efficient_nms_rows(outputs, index), config)
    (output,) = outputs.values()
    if layout is OutputLayout.RAW:
        return non_max_suppression(output[index], config)
    return filter_detections(output[index], config)


def postprocess(outputs: Mapping[str, np.ndarray], layout: OutputLayout, config: NmsConfig,
                transform: LetterboxTransform, index: int = 0) -> Detections:
    """Image `index` of the named engine outputs -> Detections in its source pixels."""
    return rows_to_detections(decode_rows(outputs, layout, config, index), transform)
