"""How old a frame is when its result is published: now on the node's clock minus the frame's stamp.

This is what a planner waits for (capture to result), unlike receive-to-publish latency, which misses the
time the frame spent in the driver and in transport. It only means something when the stamp comes from the
node's clock: a bag replayed without `--clock`/`use_sim_time`, a camera on an unsynchronised machine, or a
synthetic stamp gives ages that are negative or absurdly large. Those frames are counted, not averaged in.
"""

from __future__ import annotations

from typing import Any

from partglee_ros.ros.depth_sync import stamp_ns

MAX_FRAME_AGE_S = 10.0


def frame_age_ms(now_ns: int, header: Any) -> float | None:
    """The frame's age in ms, or None when its stamp is not plausibly on the node's clock."""
    age_ns = now_ns - stamp_ns(header)
    if not 0 <= age_ns <= MAX_FRAME_AGE_S * 1e9:
        return None
    return age_ns / 1e6
