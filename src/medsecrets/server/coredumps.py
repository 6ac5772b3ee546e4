"""No core dumps from a server process: a dump would write its key material to disk.

``disable_core_dumps`` sets ``RLIMIT_CORE`` to ``(0, 0)``: soft and hard, so
neither this process nor anything it starts (the worker processes) can raise
it again. ``bootstrap.build_core`` calls it before the store is opened, so no
process that ever holds a key can dump one. It does not cover swap (keys in
memory may be paged out: use encrypted or no swap) or a debugger attached by
root, which can read the process's memory.
"""

from __future__ import annotations

import logging

__all__ = ["disable_core_dumps"]

log = logging.getLogger(__name__)


def disable_core_dumps() -> bool:
    """Set ``RLIMIT_CORE`` to 0 (soft and hard); whether it now is 0 (``False`` where the
    platform has no such limit or refuses, which is logged)."""
    try:
        import resource
    except ImportError:  # not a Unix
        log.warning("core dumps cannot be disabled on this platform")
        return False
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        log.warning("core dumps could not be disabled (%s)", type(exc).__name__)
        return False
    return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
