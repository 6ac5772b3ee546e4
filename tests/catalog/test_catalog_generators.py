"""Generators: formats, parameters, and (coarse, never-flaking) distribution checks."""

from __future__ import annotations

import base64
import math
import re
import string
import uuid
from collections import Counter
from collections.abc import Iterable

import pytest

from medsecrets.catalog import GENERATORS, Catalog, RandomSource, SystemRandomSource, generate
from medsecrets.catalog.generators import DEFAULT_SYMBOLS
from medsecrets.errors import InvalidRequest
from medsecrets.sensitive import MASK, Sensitive

from .conftest import ModuloBiasedSource, SeededRandomSource

SAMPLES = 1000

PASSWORD_ALPHABET = (
    string.ascii_lowercase + string.ascii_uppercase + string.digits + DEFAULT_SYMBOLS
)


def chi_square(chars: Iterable[str], alphabet: str) -> float:
    """Pearson's chi-square statistic of ``chars`` against the uniform distribution."""
    counts = Counter(chars)
    assert set(counts) <= set(alphabet), set(counts) - set(alphabet)
    total = sum(counts.values())
    expected = total / len(alphabet)
    return sum((counts.get(c, 0) - expected) ** 2 / expected for c in alphabet)


# For k-1 degrees of freedom the statistic has mean k-1 and sd sqrt(2(k-1)). The bounds
# below sit more than 10 sd above the mean (p < 1e-15): a real bias (modulo 256) lands far
# above them, chance never does.
def chi_bound(alphabet_size: int) -> float:
    df = alphabet_size - 1
    return df + 12 * math.sqrt(2 * df)


def test_registry_has_the_documented_kinds() -> None:
    assert set(GENERATORS) == {
        "aes-256-key",
        "aes-iv",
        "hex",
        "jwt-secret",
        "password",
        "token",
        "uuid",
    }


def test_values_are_sensitive_and_masked() -> None:
    value = generate("aes-256-key")
    assert isinstance(value, Sensitive)
    assert repr(value) == f"Sensitive({MASK!r})"
    assert value.reveal() not in repr(value)
    assert str(value) == MASK


def test_aes_256_key_is_64_lower_hex_chars() -> None:
    for _ in range(100):
        key = generate("aes-256-key").reveal()
        assert re.fullmatch(r"[0-9a-f]{64}", key)
        assert len(bytes.fromhex(key)) == 32


def test_aes_iv_is_32_hex_chars() -> None:
    iv = generate("aes-iv").reveal()
    assert re.fullmatch(r"[0-9a-f]{32}", iv)


def test_hex_generator_takes_a_byte_count() -> None:
    assert len(generate("hex").reveal()) == 64
    assert len(generate("hex", bytes=20).reveal()) == 40


def test_jwt_secret_is_openssl_style_base64_of_48_bytes() -> None:
    for _ in range(100):
        secret = generate("jwt-secret").reveal()
        assert len(secret) == 64  # 48 bytes: no padding needed
        assert re.fullmatch(r"[A-Za-z0-9+/]{64}", secret)
        assert len(base64.b64decode(secret, validate=True)) == 48


def test_jwt_secret_pads_like_openssl() -> None:
    secret = generate("jwt-secret", bytes=32).reveal()
    assert len(secret) == 44
    assert secret.endswith("=")
    assert len(base64.b64decode(secret, validate=True)) == 32


def test_token_is_url_safe_without_padding() -> None:
    for _ in range(100):
        token = generate("token").reveal()
        assert len(token) == 43
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert len(generate("token", bytes=64).reveal()) == 86


def test_uuid_is_version_4() -> None:
    value = generate("uuid").reveal()
    parsed = uuid.UUID(value)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value


def test_password_defaults_to_25_chars_with_every_class() -> None:
    for _ in range(SAMPLES):
        password = generate("password").reveal()
        assert len(password) == 25
        assert set(password) <= set(PASSWORD_ALPHABET)
        assert any(c in string.ascii_lowercase for c in password)
        assert any(c in string.ascii_uppercase for c in password)
        assert any(c in string.digits for c in password)
        assert any(c in DEFAULT_SYMBOLS for c in password)


def test_password_never_comes_out_short_even_at_the_minimum_length() -> None:
    for _ in range(200):
        password = generate("password", length=8).reveal()
        assert len(password) == 8
        classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, DEFAULT_SYMBOLS)
        assert all(any(c in cls for c in password) for cls in classes)


def test_password_classes_can_be_disabled() -> None:
    for _ in range(100):
        password = generate("password", symbols=False, length=30).reveal()
        assert re.fullmatch(r"[A-Za-z0-9]{30}", password)
        digits_only = generate("password", lower=False, upper=False, symbols=False).reveal()
        assert re.fullmatch(r"[0-9]{25}", digits_only)


def test_password_custom_symbols() -> None:
    for _ in range(100):
        password = generate("password", symbol_chars="-_", lower=False, upper=False).reveal()
        assert set(password) <= set(string.digits + "-_")
        assert set(password) & set("-_")


def test_generated_values_are_unique() -> None:
    for kind in GENERATORS:
        values = {generate(kind).reveal() for _ in range(SAMPLES)}
        assert len(values) == SAMPLES, kind


@pytest.mark.parametrize(
    ("category", "field"),
    [
        ("database", "password"),
        ("database", "encryption_key"),
        ("medical-encryption", "phi_encryption_key"),
        ("medical-encryption", "phi_encryption_iv"),
        ("auth", "jwt_secret"),
        ("auth", "session_secret"),
    ],
)
def test_thousand_samples_pass_the_catalog_validators(
    catalog: Catalog, category: str, field: str
) -> None:
    spec = catalog.category(category).field(field)
    assert spec.generator is not None
    assert spec.validators
    kind = GENERATORS[spec.generator.kind]
    for _ in range(SAMPLES):
        value = kind.generate(spec.generator.params).reveal()
        assert spec.check(value) is None


def test_injected_source_is_used_and_reproducible() -> None:
    kind = GENERATORS["password"]
    a = kind.generate(source=SeededRandomSource(7)).reveal()
    b = kind.generate(source=SeededRandomSource(7)).reveal()
    c = kind.generate(source=SeededRandomSource(8)).reveal()
    assert a == b
    assert a != c


class _ConstantSource:
    def token_bytes(self, n: int) -> bytes:
        return bytes(n)

    def randbelow(self, n: int) -> int:
        return 0


def test_a_broken_source_is_detected_not_looped_on_forever() -> None:
    source: RandomSource = _ConstantSource()
    with pytest.raises(RuntimeError):
        GENERATORS["password"].generate(source=source)


# --- distribution ------------------------------------------------------------------------


def _password_chars(source: RandomSource, n_chars: int = 20_000) -> list[str]:
    kind = GENERATORS["password"]
    chars: list[str] = []
    while len(chars) < n_chars:
        chars.extend(kind.generate(source=source).reveal())
    return chars


def test_password_characters_are_uniform_seeded() -> None:
    """Deterministic: the same seed gives the same statistic on every run."""
    stat = chi_square(_password_chars(SeededRandomSource(1)), PASSWORD_ALPHABET)
    assert stat < chi_bound(len(PASSWORD_ALPHABET))


def test_password_characters_are_uniform_system_source() -> None:
    stat = chi_square(_password_chars(SystemRandomSource()), PASSWORD_ALPHABET)
    assert stat < chi_bound(len(PASSWORD_ALPHABET))


def test_the_distribution_check_catches_modulo_bias() -> None:
    """The same check fails for ``byte % n``: the tests above can fail."""
    stat = chi_square(_password_chars(ModuloBiasedSource(1)), PASSWORD_ALPHABET)
    assert stat > chi_bound(len(PASSWORD_ALPHABET))


def test_hex_key_digits_are_uniform() -> None:
    chars = "".join(generate("aes-256-key").reveal() for _ in range(400))
    assert chi_square(chars, "0123456789abcdef") < chi_bound(16)


# --- parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "params", "named"),
    [
        ("password", {"length": 7}, "length"),
        ("password", {"length": 5000}, "length"),
        ("password", {"length": True}, "length"),
        ("password", {"length": "25"}, "length"),
        ("password", {"lenght": 25}, "lenght"),
        ("password", {"symbols": "yes"}, "symbols"),
        ("password", {"symbol_chars": ""}, "symbol_chars"),
        ("password", {"symbol_chars": "a!"}, "symbol_chars"),
        ("password", {"symbol_chars": "!!"}, "symbol_chars"),
        ("password", {"lower": False, "upper": False, "digits": False, "symbols": False}, "lower"),
        ("jwt-secret", {"bytes": 16}, "bytes"),
        ("token", {"bytes": 8}, "bytes"),
        ("hex", {"bytes": 1.5}, "bytes"),
        ("aes-256-key", {"bytes": 16}, "bytes"),
        ("uuid", {"version": 1}, "version"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    kind: str, params: dict[str, int | str | bool | float], named: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        generate(kind, **params)
    assert named in str(info.value)
    assert kind in str(info.value)


def test_unknown_kind_is_refused_naming_known_kinds() -> None:
    with pytest.raises(InvalidRequest) as info:
        generate("aes-512-key")
    message = str(info.value)
    assert "aes-512-key" in message
    assert "aes-256-key" in message
