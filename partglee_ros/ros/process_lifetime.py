"""Start and end of a node process: what `main` does before the node exists and after it is done.

Ctrl-C is held as a flag from the executable's first lines (`hold_interrupts`), never raised as
KeyboardInterrupt: raised inside an extension's call into Python (importing torch, creating an rclpy node) it
aborted the process (pybind11, SIGABRT) or ended it in a traceback, and a second Ctrl-C during the clean-up
killed it by signal. rclpy.init installs its own handler, which shuts the ROS context down and then calls
this one, so after init a Ctrl-C ends `spin` (ExternalShutdownException) and `rclpy.ok()` tells a start-up
in progress that it was stopped. rclpy is imported inside the functions: this module is imported first.
"""

from __future__ import annotations

import signal
import sys

_held: list[int] = []


def hold_interrupts() -> None:
    """From now on Ctrl-C (SIGINT) is recorded, not raised."""
    signal.signal(signal.SIGINT, lambda number, frame: _held.append(number))


def ignore_interrupts() -> None:
    """For the exit, once `main` has returned: Python's finalization (a few hundred ms) resets a handler set
    from Python to the default action, so a second Ctrl-C then killed the process by signal; SIG_IGN stays."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted() -> bool:
    """Whether Ctrl-C came since `hold_interrupts` (checked before rclpy.init, which takes over from there)."""
    return bool(_held)


def own_flags(argv: list[str], executable: str, known: tuple[str, ...] = ()) -> set[str] | None:
    """The executable's own flags (those outside --ros-args), or None after one line on stderr for one it
    does not know: a misspelt `--lifecycle` used to start an unmanaged node that processed frames at once."""
    from rclpy.utilities import remove_ros_args

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
    import rclpy

    try:
        rclpy.init(args=argv)
    except Exception as err:  # rclpy's RCLError, raised from rcl's argument parser
        _fatal(executable, str(err))
        return False
    return True
