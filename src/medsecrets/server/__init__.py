"""The medsecrets server runtime: settings, TLS, bootstrap, logging, process lifecycle.

- ``config``: ``Settings`` from a TOML file, ``MEDSECRETS_*`` variables and flags;
- ``tls``: the TLS 1.3-only server context;
- ``bootstrap``: storage + store + seal start state + dev mode -> ``Core``;
- ``sweeper``: periodic purge of expired soft-deleted secrets;
- ``logsetup``: JSON-lines logging without values;
- ``runner``: ``main(argv)`` / ``serve(settings)``, signals and graceful shutdown.

Nothing is imported here eagerly: ``import medsecrets.server`` stays cheap.
"""
