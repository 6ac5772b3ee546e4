"""The value types of the HTTP API v1, shared by the server and the SDK.

Every type that crosses the wire as a response (and the seal configurations
the SDK sends to ``POST /v1/sys/init``) is defined here once, as a frozen,
slotted dataclass; ``medsecrets.wire`` turns them into JSON and back. The
JSON shapes are those of ``docs/api.md``.

- ``secrets``: versions, metadata, pages, writes and validation reports;
- ``seal``: seal configurations, seal status, init and rekey results;
- ``system``: health and keyring facts;
- ``keys``: key-encryption-key versions, KEK rotation, rewrap reports;
- ``catalog``: the catalog as the API shows it, generated values;
- ``provision``: provisioning reports;
- ``tokens``: token facts, created tokens, revocations.

Contract: this package is a leaf. It imports only the standard library,
``medsecrets.errors`` and ``medsecrets.sensitive`` (an import-linter contract
and a test hold it to that), so importing it is cheap and any layer, the SDK
included, may use it. Nothing here reads files, the clock or secrets at import
time. Secret material (tokens, shares, values) is held in ``Sensitive`` or
``SecretFields``, masked in every ``repr``.

Import from the module that defines a name; the package re-exports nothing.
"""
