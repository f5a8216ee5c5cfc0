"""The bundled Fast DDS profile (config/fastdds_large_data.xml) and how processes get it.

Fast DDS reads its default XML profile from ``FASTDDS_DEFAULT_PROFILES_FILE`` when a process creates its first
participant. The bundled one gives raw camera images a shared-memory segment large enough for them
(README, "Raw camera images over Fast DDS"); a profile the user already names always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_large_data.xml"
# What partglee_node and grasp_node say when depth does not come: the usual cause with RGB-D cameras
LOST_DEPTH = (
    "depth frames may be lost in transport: with Fast DDS, colour and depth published by one camera process "
    "overflow its default 0.5 MB shared-memory segment, even at 320x240; give the camera driver and the "
    f'receiving nodes the profile config/{PROFILE_NAME} (README: "Raw camera images over Fast DDS")'
)


def bundled_dds_profile() -> Path | None:
    """The installed package's copy (share/partglee_ros/config), else this source tree's; None if neither."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("partglee_ros")) / "config" / PROFILE_NAME)
    except (ImportError, KeyError):  # no ament index (plain pip install), or the package not installed
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME)
    return next((path for path in candidates if path.is_file()), None)


def default_dds_profile() -> str:
    """The user's own profile when the environment names one, else the bundled one ('' if there is none)."""
    return os.environ.get(DDS_PROFILE_ENV) or str(bundled_dds_profile() or "")


def dds_environment(profile: str) -> dict[str, str]:
    """Environment for a process: ``profile`` as Fast DDS's default profile ('' adds none: the process keeps
    what it inherits). A missing file is an error here: Fast DDS would only log it and run with its defaults."""
    if not profile:
        return {}
    if not Path(profile).is_file():
        raise FileNotFoundError(f"dds_profile {profile!r} not found (dds_profile:='' adds none)")
    return {DDS_PROFILE_ENV: profile}


def use_bundled_dds_profile() -> None:
    """For a process of ours that publishes raw images (bag replay), before its first participant: the bundled
    profile, unless the environment names one."""
    if DDS_PROFILE_ENV not in os.environ and (profile := bundled_dds_profile()):
        os.environ[DDS_PROFILE_ENV] = str(profile)
