"""Engines: the logical features mounted above the barrier."""
