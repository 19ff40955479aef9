"""What lint reports: a level, a line and a message."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    line: int
    message: str
