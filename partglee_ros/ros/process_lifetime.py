"""Start and end of a node process: what `main` does before the node exists and after it is done."""

from __future__ import annotations

import signal
import sys

import rclpy


def init_or_report(argv: list[str], executable: str) -> bool:
    """rclpy.init, or one line on stderr and False: rcl refuses malformed --ros-args (an empty remap, a
    params file that does not parse) with an exception that would end the process in a traceback."""
    try:
        rclpy.init(args=argv)
    except Exception as err:  # rclpy's RCLError, raised from rcl's argument parser
        print(f"[FATAL] [{executable}]: cannot start: {err}", file=sys.stderr, flush=True)
        return False
    return True


def ignore_interrupts() -> None:
    """For the clean-up after the first Ctrl-C: a terminal delivers a second one to launch and the node alike,
    and it would kill the node by signal halfway through releasing the model and the ROS interfaces."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
