"""`human_detector_cli`: detect people in images, folders of images and video files.

Writes one annotated image per image (per frame for videos) and a detections.json into the
output folder, and prints one line per image. With --tracking, people keep track ids across the
frames of a video and across the images in the order given; with --depth, depth images aligned
to the inputs give each person's 3D position.
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
import yaml

from human_detector_ros.depth import DepthFrame, DepthImage, Intrinsics, PersonPosition
from human_detector_ros.detector import HumanDetector
from human_detector_ros.engines import BACKENDS
from human_detector_ros.engines.tensorrt_build import DEFAULT_PRECISION, PRECISIONS
from human_detector_ros.errors import HumanDetectorError, InvalidImageError, ModelLoadError
from human_detector_ros.frame_pipeline import CameraFrame, FramePipeline, FrameResult
from human_detector_ros.image_conversion import read_bgr
from human_detector_ros.tracking import NO_ID

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


def read_frames(path: Path) -> Iterator[Tuple[Optional[int], Optional[float], np.ndarray]]:
    """(frame index or None for an image, the frame's time in seconds or None, HxWx3 uint8
    BGR) for every picture in `path`."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            image = read_bgr(str(path))
        except InvalidImageError as error:
            raise InputError(str(error)) from None
        yield None, None, image
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f'cannot open video {path}')
        fps = capture.get(cv2.CAP_PROP_FPS)
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, index / fps if fps > 0.0 else None, frame
            index += 1
        if index == 0:
            raise InputError(f'video {path} has no readable frames')
    finally:
        capture.release()


def read_camera_info(path: Path) -> Tuple[Intrinsics, Tuple[int, int]]:
    """(intrinsics, (width, height)) from a camera_info YAML file as camera_calibration and
    camera_info_manager write it. Raises InputError when it holds no calibration."""
    try:
        info = yaml.safe_load(path.read_text())
        k = info['camera_matrix']['data']
        size = (int(info.get('image_width', 0)), int(info.get('image_height', 0)))
        return Intrinsics.from_k(k), size
    except (OSError, yaml.YAMLError, TypeError, KeyError, ValueError) as error:
        raise InputError(f'--camera-info {path}: not a calibrated camera_info YAML '
                         f'(camera_matrix.data, image_width, image_height): {error}') from None


def parse_intrinsics(text: str) -> Intrinsics:
    """'fx,fy,cx,cy' in pixels -> Intrinsics; argparse type."""
    try:
        fx, fy, cx, cy = (float(value) for value in text.split(','))
        return Intrinsics.from_k([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f'expected fx,fy,cx,cy in pixels with fx, fy > 0, got {text!r} ({error})') from None


def class_index(text: str) -> int:
    """A class index >= 0; argparse type."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f'expected a class index >= 0, got {text!r}')
    return int(text)


def read_depth(path: Path) -> DepthImage:
    """A depth image file: single-channel 16-bit millimetres (PNG, as 16UC1) or 32-bit float
    metres (TIFF, as 32FC1). Raises InputError when it is neither."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise InputError(f'cannot read depth image {path}')
    try:
        return DepthImage.from_array(pixels)
    except InvalidImageError as error:
        raise InputError(f'{path}: {error}') from None


class DepthFiles:
    """Depth images from a folder, matched to the inputs by file name: an image's depth has
    its stem (`frame01.png` for `frame01.jpg`), a video frame's the stem of its annotated file
    (`clip_000003.png` for frame 3 of `clip.mp4`)."""

    def __init__(self, folder: Path, intrinsics: Intrinsics, info_size: Tuple[int, int]) -> None:
        if not folder.is_dir():
            raise InputError(f'--depth {folder} is not a folder')
        self._files: Dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                self._files.setdefault(path.stem, path)
        self.intrinsics = intrinsics
        self.info_size = info_size

    def frame(self, stem: str) -> Optional[DepthFrame]:
        """The depth of the input named `stem`; None when the folder has none."""
        path = self._files.get(stem)
        if path is None:
            return None
        return DepthFrame(read_depth(path), self.intrinsics, self.info_size)


def _position_record(position: Optional[PersonPosition]) -> Optional[Dict[str, float]]:
    return None if position is None else {
        key: round(value, 4) for key, value in asdict(position).items()}


def detection_records(result: FrameResult, names: Dict[int, str],
                      with_depth: bool = False) -> List[Dict[str, Any]]:
    """A frame's detections -> JSON-ready dicts: box_xyxy (source px), score, class_id,
    class_name; with tracking track_id (int, null until confirmed); `with_depth` position_m
    (x, y, z, width, height, depth_extent in metres, optical frame; null without depth)."""
    detections = result.detections
    records = [{'box_xyxy': [round(float(v), 2) for v in box],
                'score': round(float(score), 5),
                'class_id': int(class_id),
                'class_name': names.get(int(class_id), str(int(class_id)))}
               for box, score, class_id in zip(detections.boxes, detections.scores,
                                               detections.class_ids)]
    if result.track_ids is not None:
        for record, track_id in zip(records, result.track_ids.tolist()):
            record['track_id'] = track_id if track_id != NO_ID else None
    if with_depth:
        for record, position in zip(records, result.positions or [None] * len(records)):
            record['position_m'] = _position_record(position)
    return records


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


def process_file(pipeline: FramePipeline, path: Path, output_dir: Path, used: Set[Path],
                 depth: Optional[DepthFiles] = None) -> Iterator[Dict[str, Any]]:
    """Detect (track, locate) in every picture of `path`, write each annotated, print and
    yield its record. Images share one tracker; each video has its own."""
    is_video = path.suffix.lower() in VIDEO_SUFFIXES
    for frame_index, stamp_s, image in read_frames(path):
        stem = path.stem if frame_index is None else f'{path.stem}_{frame_index:06d}'
        depth_frame = None if depth is None else depth.frame(stem)
        result = pipeline.process(CameraFrame(str(path) if is_video else '', image, stamp_s,
                                              depth_frame))
        if result.depth_problem is not None:
            raise InputError(f'depth image of {stem}: {result.depth_problem}')
        timings = {f'{stage}_ms': result.timings_ms[stage]
                   for stage in ('preprocess', 'infer', 'postprocess')}
        if frame_index is None:
            annotated = _unique_path(output_dir, path.stem, path.suffix, used)
            label = str(path)
        else:
            annotated = _unique_path(output_dir, f'{stem}', '.jpg', used)
            label = f'{path}#{frame_index}'
        cv2.imwrite(str(annotated), result.annotated)
        record: Dict[str, Any] = {
            'file': str(path), 'width': int(image.shape[1]), 'height': int(image.shape[0]),
            'detections': detection_records(result, pipeline.detector.names, depth is not None),
            'timings': {key: round(value, 3) for key, value in timings.items()},
            'annotated': str(annotated)}
        if frame_index is not None:
            record['frame'] = frame_index
        if depth is not None and depth_frame is None:
            print(f'human_detector_cli: no depth image for {stem} in the --depth folder',
                  file=sys.stderr)
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
    parser.add_argument('--backend', default='auto', choices=('auto',) + BACKENDS)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--tensorrt-precision', default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help='precision of the TensorRT engine built from an .onnx --model with '
                             '--backend tensorrt (cached for later runs; default: %(default)s)')
    parser.add_argument('--conf', type=float, default=0.5, help='confidence threshold')
    parser.add_argument('--iou', type=float, default=0.45, help='NMS IoU threshold')
    parser.add_argument('--max-det', type=int, default=300, help='most detections per image')
    parser.add_argument('--classes', type=class_index, nargs='+', default=None,
                        help='keep only these class ids')
    parser.add_argument('--agnostic-nms', action='store_true',
                        help='suppress overlapping boxes across classes')
    parser.add_argument('--tracking', action='store_true',
                        help='give people track ids across the frames of a video and across '
                             'the images in the order given (ByteTrack)')
    parser.add_argument('--depth', type=Path, default=None, metavar='DIR',
                        help='folder of depth images aligned to the inputs, matched by file '
                             'name (16-bit PNG in millimetres or 32-bit float TIFF in metres); '
                             'adds 3D positions; needs --camera-info or --intrinsics')
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument('--camera-info', type=Path, default=None, metavar='YAML',
                             help='calibration of the colour camera: a camera_info YAML file '
                                  'as camera_calibration writes it')
    calibration.add_argument('--intrinsics', type=parse_intrinsics, default=None,
                             metavar='FX,FY,CX,CY',
                             help='calibration of the colour camera in pixels')
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


def _depth_files(args: argparse.Namespace) -> Optional[DepthFiles]:
    """The --depth folder with its calibration; raises InputError when one is missing."""
    if args.depth is None:
        if args.camera_info or args.intrinsics:
            raise InputError('--camera-info and --intrinsics need --depth DIR')
        return None
    if args.camera_info is not None:
        intrinsics, size = read_camera_info(args.camera_info)
    elif args.intrinsics is not None:
        intrinsics, size = args.intrinsics, (0, 0)
    else:
        raise InputError('--depth needs the colour camera\'s calibration: --camera-info YAML '
                         'or --intrinsics FX,FY,CX,CY')
    return DepthFiles(args.depth, intrinsics, size)


def _writable(output_dir: Path) -> None:
    """Make `output_dir`; raises InputError when it cannot be made."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f'cannot create --output-dir {output_dir}: '
                         f'{error.strerror or error}') from None


def _run(args: argparse.Namespace) -> int:
    try:
        files = collect_inputs(args.inputs)
        depth = _depth_files(args)
        _writable(args.output_dir)
        detector = HumanDetector(args.model, backend=args.backend, device=args.device,
                                 tensorrt_precision=args.tensorrt_precision,
                                 conf_threshold=args.conf, iou_threshold=args.iou,
                                 max_det=args.max_det, classes=args.classes,
                                 agnostic_nms=args.agnostic_nms)
    except (InputError, ModelLoadError, ValueError) as error:
        print(f'human_detector_cli: error: {error}', file=sys.stderr)
        return EXIT_USAGE
    records: List[Dict[str, Any]] = []
    used: Set[Path] = set()
    status = EXIT_OK
    with detector:
        try:
            pipeline = FramePipeline(detector, tracking=args.tracking)
        except HumanDetectorError as error:
            print(f'human_detector_cli: error: {error}', file=sys.stderr)
            return EXIT_USAGE
        for path in files:
            try:
                records.extend(process_file(pipeline, path, args.output_dir, used, depth))
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
