"""Conversions between the detector core's results and ROS messages."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray, Detection3D, Detection3DArray,
    LabelInfo, ObjectHypothesis, ObjectHypothesisWithPose, VisionClass)

from human_detector_ros.depth import PersonPosition
from human_detector_ros.image_conversion import bgr_to_image_fields
from human_detector_ros.postprocess import Detections


def detections_to_msg(detections: Detections, header: Header,
                      ids: Optional[Sequence[str]] = None) -> Detection2DArray:
    """Boxes in source-image pixels -> Detection2DArray; `header` is copied unchanged.

    Each Detection2D holds one hypothesis: class_id is the class index as a string, score the
    confidence; the box is its centre and size in pixels; `id` the track id from `ids` (one
    string per detection; empty without tracking).
    """
    array = Detection2DArray(header=header)
    ids = ids if ids is not None else [''] * len(detections)
    for (x1, y1, x2, y2), score, class_id, track_id in zip(
            detections.boxes.tolist(), detections.scores.tolist(),
            detections.class_ids.tolist(), ids):
        box = BoundingBox2D(size_x=x2 - x1, size_y=y2 - y1)
        box.center.position.x = (x1 + x2) / 2.0
        box.center.position.y = (y1 + y2) / 2.0
        array.detections.append(Detection2D(header=header, results=[_hypothesis(score, class_id)],
                                            bbox=box, id=track_id))
    return array


def detections_3d_msg(flat: Detection2DArray,
                      positions: Sequence[Optional[PersonPosition]]) -> Detection3DArray:
    """One Detection3D per Detection2D of `flat` that has a position, with the same header,
    hypotheses (shared, not copied) and id; box centre and size in metres in the camera's
    optical frame (the colour image's frame), orientation identity."""
    array = Detection3DArray(header=flat.header)
    for detection, position in zip(flat.detections, positions):
        if position is None:
            continue
        box = BoundingBox3D()
        box.center.position.x = position.x
        box.center.position.y = position.y
        box.center.position.z = position.z
        box.center.orientation.w = 1.0
        box.size.x, box.size.y, box.size.z = (position.width, position.height,
                                              position.depth_extent)
        array.detections.append(Detection3D(header=flat.header, results=detection.results,
                                            bbox=box, id=detection.id))
    return array


def _hypothesis(score: float, class_id: int) -> ObjectHypothesisWithPose:
    return ObjectHypothesisWithPose(
        hypothesis=ObjectHypothesis(class_id=str(class_id), score=score))


def label_info_msg(names: Mapping[int, str], threshold: float, header: Header) -> LabelInfo:
    """The class map (index -> name) and the confidence threshold in force."""
    class_map = [VisionClass(class_id=index, class_name=name)
                 for index, name in sorted(names.items())]
    return LabelInfo(header=header, class_map=class_map, threshold=threshold)


def bgr_to_image_msg(bgr: np.ndarray, header: Header) -> Image:
    """HxWx3 uint8 BGR array -> sensor_msgs/Image bgr8 with the given header."""
    fields = bgr_to_image_fields(bgr)
    return Image(header=header, height=fields.height, width=fields.width,
                 encoding=fields.encoding, is_bigendian=False, step=fields.step,
                 data=fields.data)
