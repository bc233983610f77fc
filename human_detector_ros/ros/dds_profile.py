"""The shipped FastDDS profile that lets camera-sized images reach best-effort readers.

Fast DDS 2 (Humble, Jazzy) reads its profile file from FASTRTPS_DEFAULT_PROFILES_FILE only;
Fast DDS 3 (Kilted and newer) reads FASTDDS_DEFAULT_PROFILES_FILE and takes the old name with a
deprecation warning. Which one applies is decided by the Fast DDS library installed beside
rmw_fastrtps_cpp (`<prefix>/lib`, as in /opt/ros/<distro>/lib or a standalone venv), not by
ROS_DISTRO, which a standalone environment does not set.
"""
from __future__ import annotations

import glob
import os
from typing import Dict, List, Mapping, Optional, Tuple

from human_detector_ros.ros.paths import installed_config

PROFILE_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
LEGACY_PROFILE_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
# The library each generation installs, and the variable it reads.
_GENERATIONS = (('libfastdds.so.3*', 3, PROFILE_VARIABLE),
                ('libfastrtps.so.2*', 2, LEGACY_PROFILE_VARIABLE))
_RMW_MARKER = os.path.join('share', 'ament_index', 'resource_index', 'packages',
                           'rmw_fastrtps_cpp')


def large_image_profile() -> str:
    """Path of the installed config/fastdds_large_images.xml."""
    return installed_config('fastdds_large_images.xml')


def fast_dds_generation(environ: Mapping[str, str] = os.environ) -> Optional[int]:
    """The major version (2 or 3) of the Fast DDS library that rmw_fastrtps_cpp loads, or None
    when none is found. Searched in `lib/` of rmw_fastrtps_cpp's prefix first, then of every
    AMENT_PREFIX_PATH entry, then the LD_LIBRARY_PATH directories, all read from `environ`."""
    for directory in _library_directories(environ):
        for pattern, generation, _ in _GENERATIONS:
            if glob.glob(os.path.join(directory, pattern)):
                return generation
    return None


def profile_variables(environ: Mapping[str, str] = os.environ) -> Tuple[str, ...]:
    """The variable(s) that make the Fast DDS found by `fast_dds_generation` read a profile.

    One name when the generation is known, so that Fast DDS 3 gives no deprecation warning;
    both when it is not, so that the profile applies whichever generation is loaded.
    """
    generation = fast_dds_generation(environ)
    names = tuple(name for _, known, name in _GENERATIONS if known == generation)
    return names or (PROFILE_VARIABLE, LEGACY_PROFILE_VARIABLE)


def profile_environment(profile: str, environ: Mapping[str, str] = os.environ
                        ) -> Dict[str, str]:
    """Variables that make the Fast DDS of `environ` read `profile`."""
    return {name: profile for name in profile_variables(environ)}


def large_image_environment(environ: Mapping[str, str] = os.environ) -> Dict[str, str]:
    """Variables that select the large-image profile, unless the user has chosen one already."""
    if environ.get(PROFILE_VARIABLE) or environ.get(LEGACY_PROFILE_VARIABLE):
        return {}
    return profile_environment(large_image_profile(), environ)


def _library_directories(environ: Mapping[str, str]) -> List[str]:
    prefixes = [path for path in environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if path]
    with_rmw = [path for path in prefixes if os.path.exists(os.path.join(path, _RMW_MARKER))]
    directories = [os.path.join(path, 'lib') for path in with_rmw + prefixes]
    directories += [path for path in environ.get('LD_LIBRARY_PATH', '').split(os.pathsep)
                    if path]
    return list(dict.fromkeys(directories))
