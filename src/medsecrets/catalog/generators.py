"""Secret value generators: the strategy's ``generate-secrets.sh``, done right.

Every generator draws from a ``RandomSource`` — by default ``SystemRandomSource``,
the OS CSPRNG through the ``secrets`` module — and returns ``Sensitive[str]``.
Characters are chosen with ``randbelow`` (rejection sampling inside
``secrets``), never ``byte % n``, so there is no modulo bias.

==============  ===============================================  ============================
kind            parameters (default)                             output
==============  ===============================================  ============================
``aes-256-key`` —                                                32 random bytes, 64 lower-case
                                                                 hex chars (``openssl rand -hex
                                                                 32``)
``aes-iv``      —                                                16 random bytes, 32 hex chars
                                                                 (``openssl rand -hex 16``)
``hex``         ``bytes`` (32; 16-1024)                          ``bytes`` random bytes as hex
``jwt-secret``  ``bytes`` (48; 32-1024)                          standard base64 with padding
                                                                 (``openssl rand -base64 48``)
``password``    ``length`` (25; 8-1024), ``lower``, ``upper``,   ``length`` characters, each
                ``digits``, ``symbols`` (true),                  uniform over the enabled
                ``symbol_chars`` (``!#%*+,-./:=?@^_~``)          classes, at least one of each
``token``       ``bytes`` (32; 16-1024)                          URL-safe base64, no padding
                                                                 (``secrets.token_urlsafe``)
``uuid``        —                                                a random (version 4) UUID
==============  ===============================================  ============================

``password`` is the strategy's ``openssl rand -base64 32 | tr -d "=+/" | cut -c1-25``
without its flaw (deleting characters can leave fewer than 25): every character
is drawn uniformly from the union of the enabled classes and a draw missing a
class is rejected and redrawn, so the result is uniform over all passwords of
that length containing every enabled class, and never comes out short.

``aes-iv`` exists because the strategy stores a ``phi_encryption_iv``. An IV
kept as a long-lived secret must never be reused as an AES-GCM nonce for more
than one message; consumers should derive per-message nonces.
"""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from medsecrets.catalog.validators import Parameter, ParamValue, resolve_params
from medsecrets.errors import InvalidRequest
from medsecrets.sensitive import Sensitive

__all__ = [
    "DEFAULT_SYMBOLS",
    "GENERATORS",
    "GeneratorKind",
    "RandomSource",
    "SystemRandomSource",
    "generate",
]

DEFAULT_SYMBOLS = "!#%*+,-./:=?@^_~"
"""Symbols of generated passwords: no quotes, backslash, ``$``, backtick, space, ``&;|<>()``."""

_MAX_REDRAWS = 10_000


class RandomSource(Protocol):
    """Where generators get randomness. Production: ``SystemRandomSource``."""

    def token_bytes(self, n: int) -> bytes:
        """``n`` uniformly random bytes."""
        ...

    def randbelow(self, n: int) -> int:
        """A uniformly random int in ``[0, n)``, without modulo bias."""
        ...


class SystemRandomSource:
    """The OS CSPRNG (``secrets``)."""

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


_SYSTEM = SystemRandomSource()

Producer = Callable[[Mapping[str, ParamValue], RandomSource], str]


@dataclass(frozen=True, slots=True)
class GeneratorKind:
    """A generator kind: its parameters and how it produces a value.

    ``cross_check`` returns a problem (or None) for rules involving several parameters.
    """

    kind: str
    description: str
    params: tuple[Parameter, ...]
    produce: Producer = field(repr=False)
    cross_check: Callable[[Mapping[str, ParamValue]], str | None] | None = field(
        default=None, repr=False
    )

    def resolve(self, params: Mapping[str, object]) -> dict[str, ParamValue]:
        """Checked parameters with defaults; ``InvalidRequest`` names the bad one."""
        resolved = resolve_params(f"generator {self.kind!r}", self.params, params)
        if self.cross_check is not None:
            problem = self.cross_check(resolved)
            if problem is not None:
                raise InvalidRequest(f"generator {self.kind!r}: {problem}")
        return resolved

    def generate(
        self, params: Mapping[str, object] | None = None, *, source: RandomSource | None = None
    ) -> Sensitive[str]:
        """A fresh value; ``InvalidRequest`` names a bad parameter."""
        resolved = self.resolve(params or {})
        return Sensitive(self.produce(resolved, source or _SYSTEM))


def _bytes_param(default: int, minimum: int) -> Parameter:
    return Parameter("bytes", int, default=default, minimum=minimum, maximum=1024)


def _n(params: Mapping[str, ParamValue], name: str) -> int:
    value = params[name]
    assert isinstance(value, int)
    return value


def _hex_of(n: int) -> Producer:
    return lambda _, src: src.token_bytes(n).hex()


def _hex(params: Mapping[str, ParamValue], src: RandomSource) -> str:
    return src.token_bytes(_n(params, "bytes")).hex()


def _jwt(params: Mapping[str, ParamValue], src: RandomSource) -> str:
    return base64.b64encode(src.token_bytes(_n(params, "bytes"))).decode("ascii")


def _token(params: Mapping[str, ParamValue], src: RandomSource) -> str:
    raw = base64.urlsafe_b64encode(src.token_bytes(_n(params, "bytes")))
    return raw.rstrip(b"=").decode("ascii")


def _uuid(_: Mapping[str, ParamValue], src: RandomSource) -> str:
    return str(uuid.UUID(bytes=src.token_bytes(16), version=4))


_CLASS_ALPHABETS: tuple[tuple[str, str], ...] = (
    ("lower", string.ascii_lowercase),
    ("upper", string.ascii_uppercase),
    ("digits", string.digits),
)


def _password_classes(params: Mapping[str, ParamValue]) -> list[str]:
    classes = [alphabet for name, alphabet in _CLASS_ALPHABETS if params[name]]
    if params["symbols"]:
        chars = params["symbol_chars"]
        assert isinstance(chars, str)
        classes.append(chars)
    return classes


def _password_cross(params: Mapping[str, ParamValue]) -> str | None:
    classes = _password_classes(params)
    if not classes:
        return "at least one of lower, upper, digits, symbols must be true"
    if _n(params, "length") < len(classes):
        return "parameter 'length' is shorter than the number of enabled classes"
    return None


def _check_symbols(value: ParamValue) -> str | None:
    assert isinstance(value, str)
    if not value:
        return "must not be empty"
    if len(set(value)) != len(value):
        return "must not repeat a character"
    if not all(c.isascii() and c.isprintable() and not c.isalnum() and c != " " for c in value):
        return "must hold printable ASCII symbols only (no letters, digits or spaces)"
    return None


def _password(params: Mapping[str, ParamValue], src: RandomSource) -> str:
    classes = _password_classes(params)
    alphabet = "".join(classes)
    length = _n(params, "length")
    for _ in range(_MAX_REDRAWS):
        chars = [alphabet[src.randbelow(len(alphabet))] for _ in range(length)]
        if all(any(c in cls for c in chars) for cls in classes):
            return "".join(chars)
    raise RuntimeError("the random source keeps missing a character class; is it broken?")


GENERATORS: Mapping[str, GeneratorKind] = {
    g.kind: g
    for g in (
        GeneratorKind("aes-256-key", "32 random bytes as hex (AES-256 key)", (), _hex_of(32)),
        GeneratorKind("aes-iv", "16 random bytes as hex (AES IV)", (), _hex_of(16)),
        GeneratorKind("hex", "random bytes as hex", (_bytes_param(32, 16),), _hex),
        GeneratorKind(
            "jwt-secret", "random bytes as padded standard base64", (_bytes_param(48, 32),), _jwt
        ),
        GeneratorKind(
            "password",
            "uniform random password with every enabled character class",
            (
                Parameter("length", int, default=25, minimum=8, maximum=1024),
                Parameter("lower", bool, default=True),
                Parameter("upper", bool, default=True),
                Parameter("digits", bool, default=True),
                Parameter("symbols", bool, default=True),
                Parameter("symbol_chars", str, default=DEFAULT_SYMBOLS, check=_check_symbols),
            ),
            _password,
            _password_cross,
        ),
        GeneratorKind(
            "token", "random bytes as unpadded URL-safe base64", (_bytes_param(32, 16),), _token
        ),
        GeneratorKind("uuid", "a random version-4 UUID", (), _uuid),
    )
}
"""Generator kind name → ``GeneratorKind``."""


def generate(kind: str, /, **params: ParamValue) -> Sensitive[str]:
    """A fresh value of generator ``kind`` from the OS CSPRNG.

    ``InvalidRequest`` for an unknown kind or a bad parameter (naming it).
    Use ``GENERATORS[kind].generate(params, source=...)`` to inject randomness.
    """
    generator = GENERATORS.get(kind)
    if generator is None:
        known = ", ".join(sorted(GENERATORS))
        raise InvalidRequest(f"unknown generator kind {kind!r} (known: {known})")
    return generator.generate(params)
