"""The shipped FastDDS profile that lets camera-sized images reach best-effort readers."""
from __future__ import annotations

import os
from typing import Dict, Mapping

from human_detector_ros.ros.paths import installed_config

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
# Fast DDS 2.x (Humble, Jazzy) reads the older name; Fast DDS 3 warns that it is deprecated.
LEGACY_PROFILE_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
LEGACY_DISTROS = ('humble', 'iron', 'jazzy')


def large_image_profile() -> str:
    """Path of the installed config/fastdds_large_images.xml."""
    return installed_config('fastdds_large_images.xml')


def large_image_environment(environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """Variables that select the profile, unless the user has chosen a profile already."""
    if environ.get(PROFILE_VARIABLE) or environ.get(LEGACY_PROFILE_VARIABLE):
        return {}
    profile = large_image_profile()
    variables = {PROFILE_VARIABLE: profile}
    if environ.get('ROS_DISTRO') in LEGACY_DISTROS:
        variables[LEGACY_PROFILE_VARIABLE] = profile
    return variables
