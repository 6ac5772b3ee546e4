"""Facts about other processes of this host."""

from __future__ import annotations

import os

__all__ = ["alive"]

_PID_LIMIT = 1 << 22  # Linux's pid_max ceiling: larger numbers are no pid


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's too; ``False`` for a
    number that is no pid). A pid may have been reused since it meant something."""
    if not 0 < pid < _PID_LIMIT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
