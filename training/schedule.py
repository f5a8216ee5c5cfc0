"""Learning-rate schedule as a pure function of the step, so resuming needs no scheduler state."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ScheduleConfig:
    kind: str = "cosine"  # "cosine" | "step" | "constant"
    warmup_steps: int = 0  # linear ramp from warmup_factor to 1
    warmup_factor: float = 0.01
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the base LR
    milestones: list[int] = field(default_factory=list)  # "step": multiply by gamma at each
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule kind must be cosine, step or constant, got {self.kind!r}")
        # the LR must never exceed the base LR: each factor is a fraction of it
        if self.warmup_steps < 0:
            raise ValueError(f"schedule warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("warmup_factor", "min_lr_ratio", "gamma"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"schedule {name} must be in [0, 1], got {getattr(self, name)}")


def lr_factor(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base LR at ``step`` (0-based): linear warmup, then cosine decay or step drops."""
    if step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * alpha
    if cfg.kind == "cosine":
        span = max(total_steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.kind == "step":
        return cfg.gamma ** sum(step >= m for m in cfg.milestones)
    return 1.0
