"""``python -m medsecrets.server``: run the server (same flags as ``medsecrets server``)."""

from __future__ import annotations

from medsecrets.server.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
