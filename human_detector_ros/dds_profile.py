"""The shipped FastDDS profile that lets camera-sized images reach best-effort readers."""
from __future__ import annotations

import os
from typing import Dict, Mapping

from ament_index_python.packages import get_package_share_directory

PROFILE_VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def large_image_profile() -> str:
    """Path of the installed config/fastdds_large_images.xml."""
    return os.path.join(get_package_share_directory('human_detector_ros'), 'config',
                        'fastdds_large_images.xml')


def large_image_environment(environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """Variables selecting the profile (Jazzy+ and Humble names), unless one is set already."""
    if any(environ.get(name) for name in PROFILE_VARIABLES):
        return {}
    profile = large_image_profile()
    return {name: profile for name in PROFILE_VARIABLES}
