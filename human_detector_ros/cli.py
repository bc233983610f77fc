"""`human_detector_cli`: detect people in images, folders of images and video files.

Writes one annotated image per image (per frame for videos) and a detections.json into the
output folder, and prints one line per image.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from human_detector_ros.annotate import draw_detections
from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import REGISTRY
from human_detector_ros.engines.tensorrt_build import DEFAULT_PRECISION, PRECISIONS
from human_detector_ros.errors import HumanDetectorError, InvalidImageError, ModelLoadError
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.postprocess import Detections

IMAGE_SUFFIXES = frozenset({'.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp'})
VIDEO_SUFFIXES = frozenset({'.avi', '.m4v', '.mkv', '.mov', '.mp4', '.mpeg', '.mpg', '.webm'})
EXIT_OK = 0
EXIT_FAILED_INPUT = 1
EXIT_USAGE = 2


class InputError(Exception):
    """An input path that cannot be processed at all."""


def collect_inputs(paths: Sequence[str]) -> List[Path]:
    """Image and video files named, or found directly inside the folders named, in order.

    Raises InputError for a missing path, a file of unknown type or a folder without any.
    """
    files: List[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                raise InputError(f'folder {path} holds no image or video files '
                                 f'({", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})')
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
                raise InputError(f'{path} is neither an image nor a video file (by its suffix)')
            files.append(path)
        else:
            raise InputError(f'input not found: {path}')
    return files


def read_frames(path: Path) -> Iterator[Tuple[Optional[int], np.ndarray]]:
    """(frame index or None for an image, HxWx3 uint8 BGR) for every picture in `path`."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            image = read_bgr(str(path))
        except InvalidImageError as error:
            raise InputError(str(error)) from None
        yield None, image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f'cannot open video {path}')
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, frame
            index += 1
        if index == 0:
            raise InputError(f'video {path} has no readable frames')
    finally:
        capture.release()


def detection_records(detections: Detections, names: Dict[int, str]) -> List[Dict[str, Any]]:
    """Detections -> JSON-ready dicts: box_xyxy (source px), score, class_id, class_name."""
    return [{'box_xyxy': [round(float(v), 2) for v in box],
             'score': round(float(score), 5),
             'class_id': int(class_id),
             'class_name': names.get(int(class_id), str(int(class_id)))}
            for box, score, class_id in zip(detections.boxes, detections.scores,
                                            detections.class_ids)]


def _unique_path(directory: Path, stem: str, suffix: str, used: Set[Path]) -> Path:
    """A new file name in `directory`: never one written this run, never an existing file."""
    candidate = directory / f'{stem}{suffix}'
    counter = 2
    while candidate in used or candidate.exists():
        candidate = directory / f'{stem}_{counter}{suffix}'
        counter += 1
    used.add(candidate)
    return candidate


def _summary(label: str, image: np.ndarray, records: List[Dict[str, Any]],
             timings: Dict[str, float]) -> str:
    found = ', '.join(f'{r["class_name"]} {r["score"]:.2f}' for r in records)
    return (f'{label}: {image.shape[1]}x{image.shape[0]}, {len(records)} detection(s)'
            f'{" [" + found + "]" if found else ""}, pre {timings["preprocess_ms"]:.1f} ms, '
            f'infer {timings["infer_ms"]:.1f} ms, post {timings["postprocess_ms"]:.1f} ms')


def process_file(detector: HumanDetector, path: Path, output_dir: Path,
                 used: Set[Path]) -> Iterator[Dict[str, Any]]:
    """Detect in every picture of `path`, write each annotated, print and yield its record."""
    for frame_index, image in read_frames(path):
        detections = detector(image)
        timings = asdict(detector.last_timings)
        if frame_index is None:
            annotated = _unique_path(output_dir, path.stem, path.suffix, used)
            label = str(path)
        else:
            annotated = _unique_path(output_dir, f'{path.stem}_{frame_index:06d}', '.jpg', used)
            label = f'{path}#{frame_index}'
        cv2.imwrite(str(annotated), draw_detections(image, detections, detector.names))
        record: Dict[str, Any] = {
            'file': str(path), 'width': int(image.shape[1]), 'height': int(image.shape[0]),
            'detections': detection_records(detections, detector.names),
            'timings': {key: round(value, 3) for key, value in timings.items()},
            'annotated': str(annotated)}
        if frame_index is not None:
            record['frame'] = frame_index
        print(_summary(label, image, record['detections'], timings), flush=True)
        yield record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='human_detector_cli',
        description='Detect people in images, folders of images and videos; write annotated '
                    'images and detections.json.')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image file, folder of images, or video file')
    parser.add_argument('--model', default=None,
                        help='model file (.onnx, .engine, .torchscript); default: the '
                             'fetched default model')
    parser.add_argument('--backend', default='auto', choices=('auto',) + tuple(REGISTRY))
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--tensorrt-precision', default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help='precision of the TensorRT engine built from an .onnx --model with '
                             '--backend tensorrt (cached for later runs; default: %(default)s)')
    parser.add_argument('--conf', type=float, default=0.5, help='confidence threshold')
    parser.add_argument('--iou', type=float, default=0.45, help='NMS IoU threshold')
    parser.add_argument('--max-det', type=int, default=300, help='most detections per image')
    parser.add_argument('--classes', type=int, nargs='+', default=None,
                        help='keep only these class ids')
    parser.add_argument('--agnostic-nms', action='store_true',
                        help='suppress overlapping boxes across classes')
    parser.add_argument('--output-dir', type=Path, default=Path('human_detector_output'),
                        help='where annotated images and detections.json go '
                             '(default: %(default)s)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; 0 on success, 1 if some input could not be read, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    # Progress of a TensorRT engine build from ONNX (minutes on a Jetson) goes to stderr.
    core_log = logging.getLogger('human_detector_ros')
    handler, level = logging.StreamHandler(), core_log.level
    core_log.addHandler(handler)
    core_log.setLevel(logging.INFO)
    try:
        return _run(args)
    finally:
        core_log.removeHandler(handler)
        core_log.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    try:
        files = collect_inputs(args.inputs)
        detector = HumanDetector(args.model, backend=args.backend, device=args.device,
                                 tensorrt_precision=args.tensorrt_precision,
                                 conf_threshold=args.conf, iou_threshold=args.iou,
                                 max_det=args.max_det, classes=args.classes,
                                 agnostic_nms=args.agnostic_nms)
    except (InputError, ModelLoadError, ValueError) as error:
        print(f'human_detector_cli: error: {error}', file=sys.stderr)
        return EXIT_USAGE
    args.output_dir.mkdir(parents=True, exist_ok=True)
    records: List[Dict[str, Any]] = []
    used: Set[Path] = set()
    status = EXIT_OK
    with detector:
        for path in files:
            try:
                records.extend(process_file(detector, path, args.output_dir, used))
            except (InputError, HumanDetectorError) as error:
                print(f'human_detector_cli: {path}: {error}', file=sys.stderr)
                status = EXIT_FAILED_INPUT
        summary = {'model': str(detector.engine.model_path), 'backend': detector.engine.backend,
                   'device': detector.engine.device, 'names': detector.names,
                   'config': asdict(detector.config), 'images': records}
    (args.output_dir / 'detections.json').write_text(json.dumps(summary, indent=1) + '\n')
    print(f'wrote {len(records)} result(s) to {args.output_dir / "detections.json"}')
    return status


if __name__ == '__main__':
    sys.exit(main())
