"""The README's first command, `make demo`, end to end.

`make test` walks the demo's setup path first (tools/setup_standalone.sh installs everything the
demo needs before it adds the test requirements), so a broken demo setup fails the suite; this
test runs the demo step itself, the command `make -n demo` prints, in this run's DDS domain.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import List

import cv2

from human_detector_ros.assets import SAMPLE_IMAGES, sample_image_path
from human_detector_ros.synthetic import walking_sequence

ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT_S = 900.0


def demo_step(output_dir: Path) -> List[str]:
    """The last command of `make demo` (the one after the setup), as make would run it."""
    printed = subprocess.run(
        ['make', '--no-print-directory', '-n', 'demo', f'DEMO_OUTPUT={output_dir}'],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout.splitlines()
    assert printed[0] == 'bash tools/setup_standalone.sh', printed
    return shlex.split(printed[-1])


def test_make_demo_detects_the_samples_and_tracks_the_walk_in_3d(tmp_path):
    output_dir = tmp_path / 'demo'
    demo = subprocess.run(demo_step(output_dir), cwd=ROOT, capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    lines = demo.stdout.splitlines()

    for name in SAMPLE_IMAGES:
        picture = output_dir / (Path(name).stem + '.png')
        assert any(line.startswith(f'{name}: ') and line.endswith(f'-> {picture}')
                   for line in lines), demo.stdout
        annotated = cv2.imread(str(picture))
        assert annotated is not None
        assert annotated.shape == cv2.imread(str(sample_image_path(name))).shape
    assert any(line.startswith('camera.png: Normal') for line in lines), demo.stdout
    assert 'coffee.png: nobody -> ' in demo.stdout

    walk = [line for line in lines if line.startswith('frame ')]
    assert len(walk) == len(walking_sequence()), demo.stdout
    assert all((output_dir / f'walk_{frame.index:02d}.png').is_file()
               for frame in walking_sequence())
    # Each person at the depth the synthetic image gives them, under a confirmed track id.
    for depth in ('2.50) m', '4.00) m'):
        assert sum(depth in line for line in walk) >= len(walk) // 2, demo.stdout
    assert len(set(re.findall(r'#(\d+)', demo.stdout))) >= 2, demo.stdout
