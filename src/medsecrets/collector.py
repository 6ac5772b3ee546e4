"""``paused()``: the cyclic garbage collector off for a block of work.

Work that builds millions of small objects, none of them part of a cycle
(parsed events, rows, the detectors' per-key state, a saved state's JSON
values), pays for the collector's passes over them and frees nothing:
measured on ``audit analyze``, a fifth of the time.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (back on after it, if it was on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
