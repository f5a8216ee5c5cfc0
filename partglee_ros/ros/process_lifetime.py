"""Start and end of a node process: what `main` does before the node exists and after it is done."""

from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.utilities import remove_ros_args


def own_flags(argv: list[str], executable: str, known: tuple[str, ...] = ()) -> set[str] | None:
    """The executable's own flags (those outside --ros-args), or None after one line on stderr for one it
    does not know: a misspelt `--lifecycle` used to start an unmanaged node that processed frames at once."""
    try:
        own = remove_ros_args(argv)[1:]
    except Exception as err:  # rclpy's RCLInvalidROSArgsError (a malformed remap) or UnknownROSArgsError
        unknown = type(err).__name__ == "UnknownROSArgsError"  # its message is the bare list of them
        _fatal(
            executable,
            f"unknown ROS arguments {err} (its own flags go before --ros-args)" if unknown else str(err),
        )
        return None
    unknown = [a for a in own if a not in known]
    if unknown:
        takes = (
            f"it takes {', '.join(known)} before --ros-args" if known else "its arguments go after --ros-args"
        )
        _fatal(executable, f"unknown argument {unknown[0]!r} ({takes})")
        return None
    return set(own)


def _fatal(executable: str, text: str) -> None:
    print(f"[FATAL] [{executable}]: cannot start: {text}", file=sys.stderr, flush=True)


def init_or_report(argv: list[str], executable: str) -> bool:
    """rclpy.init, or one line on stderr and False: rcl refuses malformed --ros-args (an empty remap, a
    params file that does not parse) with an exception that would end the process in a traceback."""
    try:
        rclpy.init(args=argv)
    except Exception as err:  # rclpy's RCLError, raised from rcl's argument parser
        _fatal(executable, str(err))
        return False
    return True


def ignore_interrupts() -> None:
    """For the clean-up after the first Ctrl-C: a terminal delivers a second one to launch and the node alike,
    and it would kill the node by signal halfway through releasing the model and the ROS interfaces."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
