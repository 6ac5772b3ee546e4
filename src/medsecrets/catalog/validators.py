"""Validators for catalog field values, and the typed-parameter machinery.

A validator *kind* (``VALIDATORS[kind]``) declares its parameters; binding it
to parameters (``build_validator(kind, params)``) gives a ``Validator`` whose
``check(value)`` returns ``None`` when the value is acceptable and otherwise
the rule it breaks, as text that never contains the value (it may contain the
validator's own parameters, such as a prefix or a length, which are not
secret). Callers raise ``ValidationError(field, rule)`` with that text.

Kinds and parameters (``*`` = required):

==================  ==========================================  ===============================
kind                parameters                                  accepts
==================  ==========================================  ===============================
``min-length``      ``length*`` (int ≥ 0)                       at least ``length`` characters
``max-length``      ``length*`` (int ≥ 1)                       at most ``length`` characters
``hex``             ``length`` (int, chars), ``case``           only hex digits; exact length if
                    (``any``/``lower``/``upper``)               given
``base64``          ``min_bytes`` (int), ``urlsafe`` (bool),    standard (or URL-safe) base64
                    ``padding`` (bool, default true)            that decodes to ≥ ``min_bytes``
``entropy``         ``bits_per_char`` (float),                  empirical Shannon entropy floor
                    ``total_bits`` (int); at least one          (see below)
``prefix``          ``prefix*`` (str)                           starts with ``prefix``
``openai-key``      —                                           ``sk-`` + ≥ 32 of [A-Za-z0-9_-],
                                                                not an Anthropic ``sk-ant-`` key
``anthropic-key``   —                                           ``sk-ant-`` + ≥ 32 of
                                                                [A-Za-z0-9_-]
``google-api-key``  —                                           ``AIza`` + exactly 35 of
                                                                [0-9A-Za-z_-]
``url``             ``schemes`` (comma-separated, default       absolute URL, scheme allowed,
                    ``https``)                                  a ``host`` (below), port 1-65535
                                                                if given, no whitespace or
                                                                control characters
``regex``           ``pattern*`` (str), ``description`` (str)   ``re.fullmatch(pattern, value)``,
                                                                at most ``MAX_REGEX_VALUE``
                                                                characters (see below)
``port``            —                                           decimal 1-65535, no sign, no
                                                                leading zero
``host``            —                                           an ASCII DNS name (IDNs in their
                                                                ``xn--`` form), an IPv4 address
                                                                or a bracketed IPv6 address
``text``            —                                           non-blank, ``str.isprintable``:
                                                                no control, format or line-break
                                                                characters
``password-classes`` ``lower``, ``upper``, ``digits``,          at least one character of each
                    ``symbols`` (bool, default true each)       class set to true
==================  ==========================================  ===============================

``entropy``: the *empirical* Shannon entropy of the value's characters,
``H = -Σ p(c)·log2 p(c)`` over the character frequencies of the value itself.
``bits_per_char`` is a floor on ``H``; ``total_bits`` a floor on ``H·len(value)``.
It measures character diversity, not true randomness (a long English sentence
scores well): it catches ``0000…``, ``abab…`` and short keys, the mistakes a
person pasting a value makes. A uniformly random 64-hex-char key scores about
3.8 bits per char; a random 25-char password about 4.4.

``regex`` patterns come from catalog files, and Python's ``re`` backtracks: a pattern is
refused when a repeat that may match more than once (``*``, ``+``, ``{m,n}`` with n > 1)
contains a variable repeat (``?``, ``*``, ``+``, ``{m,n}`` with m < n) or an alternation
(``(a+)+``, ``(a|ab)*``, ``([a-z]+\\.)+``: exponential time); possessive repeats and atomic
groups are allowed. Values over ``MAX_REGEX_VALUE`` characters are refused unmatched, which
bounds the polynomial backtracking the rule lets through (``a*a*b``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import string
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # typeshed describes the parser under its deprecated public names
    import sre_constants as _constants
    import sre_parse as _parser
else:  # the same modules, without the sre_* deprecation warning
    from re import _constants, _parser

from medsecrets.errors import InvalidRequest
from medsecrets.schema.catalog import ParamValue

__all__ = [
    "MAX_REGEX_VALUE",
    "VALIDATORS",
    "ParamValue",
    "Parameter",
    "Validator",
    "ValidatorKind",
    "build_validator",
    "check_param",
    "resolve_params",
    "shannon_entropy",
]

_TYPE_NAMES: Mapping[type, str] = {
    int: "an integer",
    float: "a finite number",
    str: "a string",
    bool: "a boolean",
}


@dataclass(frozen=True, slots=True)
class Parameter:
    """One declared parameter of a generator or validator kind.

    ``check`` is an extra rule on the value: it returns the problem text or None.
    """

    name: str
    type: type[int] | type[float] | type[str] | type[bool]
    _: KW_ONLY
    default: ParamValue | None = None
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[ParamValue], str | None] | None = field(default=None, compare=False)
    description: str = ""


def _coerce(spec: Parameter, value: object) -> ParamValue | None:
    """The value as ``spec.type``, or None when it has the wrong type."""
    if spec.type is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):  # bool is an int subclass: never accept it as a number
        return None
    if spec.type is int:
        return value if isinstance(value, int) else None
    if spec.type is float:  # a finite number: NaN compares false with every bound
        if not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)
    return value if isinstance(value, str) else None


def check_param(owner: str, specs: tuple[Parameter, ...], name: str, value: object) -> ParamValue:
    """Check one parameter; return it coerced, or raise ``InvalidRequest`` naming it."""
    by_name = {s.name: s for s in specs}
    spec = by_name.get(name)
    if spec is None:
        known = ", ".join(sorted(by_name)) or "none"
        raise InvalidRequest(f"{owner}: unknown parameter {name!r} (known: {known})")
    coerced = _coerce(spec, value)
    if coerced is None:
        raise InvalidRequest(f"{owner}: parameter {name!r} must be {_TYPE_NAMES[spec.type]}")
    if isinstance(coerced, int | float) and not isinstance(coerced, bool):
        if spec.minimum is not None and coerced < spec.minimum:
            raise InvalidRequest(f"{owner}: parameter {name!r} must be at least {spec.minimum}")
        if spec.maximum is not None and coerced > spec.maximum:
            raise InvalidRequest(f"{owner}: parameter {name!r} must be at most {spec.maximum}")
    if spec.check is not None:
        problem = spec.check(coerced)
        if problem is not None:
            raise InvalidRequest(f"{owner}: parameter {name!r} {problem}")
    return coerced


def resolve_params(
    owner: str, specs: tuple[Parameter, ...], params: Mapping[str, object]
) -> dict[str, ParamValue]:
    """Check every parameter, fill defaults; ``InvalidRequest`` names the first bad one."""
    resolved: dict[str, ParamValue] = {}
    for name, value in params.items():
        resolved[name] = check_param(owner, specs, name, value)
    for spec in specs:
        if spec.name in resolved:
            continue
        if spec.required:
            raise InvalidRequest(f"{owner}: parameter {spec.name!r} is required")
        if spec.default is not None:
            resolved[spec.name] = spec.default
    return resolved


class Validator(Protocol):
    """A bound validator: ``check`` returns None (ok) or the rule broken, never the value."""

    @property
    def kind(self) -> str: ...

    def check(self, value: str) -> str | None:
        """None when ``value`` is acceptable, else the rule text (without the value)."""
        ...


@dataclass(frozen=True, slots=True)
class _BoundValidator:
    kind: str
    rule: Callable[[str], str | None] = field(repr=False)

    def check(self, value: str) -> str | None:
        return self.rule(value)


Factory = Callable[[Mapping[str, ParamValue]], Callable[[str], str | None]]


@dataclass(frozen=True, slots=True)
class ValidatorKind:
    """A validator kind: its parameters and how to bind them.

    ``cross_check`` sees the resolved parameters and returns a problem (or None)
    for rules that involve several parameters.
    """

    kind: str
    description: str
    params: tuple[Parameter, ...]
    factory: Factory = field(repr=False)
    cross_check: Callable[[Mapping[str, ParamValue]], str | None] | None = field(
        default=None, repr=False
    )

    def resolve(self, params: Mapping[str, object]) -> dict[str, ParamValue]:
        """Checked parameters with defaults; ``InvalidRequest`` names the bad one."""
        resolved = resolve_params(f"validator {self.kind!r}", self.params, params)
        if self.cross_check is not None:
            problem = self.cross_check(resolved)
            if problem is not None:
                raise InvalidRequest(f"validator {self.kind!r}: {problem}")
        return resolved

    def build(self, params: Mapping[str, object] | None = None) -> Validator:
        """Bind to ``params`` (checked): a ready ``Validator``."""
        return _BoundValidator(self.kind, self.factory(self.resolve(params or {})))


_C_LOG2_C = [0.0] + [c * math.log2(c) for c in range(1, 4097)]
_TABULATED = len(_C_LOG2_C) - 1  # the largest count the table covers
_tabulated_c_log2_c = _C_LOG2_C.__getitem__


def _c_log2_c(c: int) -> float:
    return _C_LOG2_C[c] if c <= _TABULATED else c * math.log2(c)


def shannon_entropy(value: str) -> float:
    """Empirical Shannon entropy of ``value`` in bits per character (0.0 for '').

    Computed as ``log2(n) - sum(c * log2(c)) / n`` over the character counts ``c``.
    Every value is checked on every write: when no count can exceed the table
    (``n`` within it), the terms are looked up without a Python call per character.
    """
    if not value:
        return 0.0
    n = len(value)
    counts = Counter(value).values()
    terms = map(_tabulated_c_log2_c if n <= _TABULATED else _c_log2_c, counts)
    return max(0.0, math.log2(n) - sum(terms) / n)


# --- the kinds -------------------------------------------------------------------------------


def _int(params: Mapping[str, ParamValue], name: str) -> int:
    value = params[name]
    assert isinstance(value, int)
    return value


def _opt_int(params: Mapping[str, ParamValue], name: str) -> int | None:
    value = params.get(name)
    assert value is None or isinstance(value, int)
    return value


def _str(params: Mapping[str, ParamValue], name: str) -> str:
    value = params[name]
    assert isinstance(value, str)
    return value


def _bool(params: Mapping[str, ParamValue], name: str) -> bool:
    value = params[name]
    assert isinstance(value, bool)
    return value


def _min_length(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    length = _int(params, "length")
    rule = f"must be at least {length} characters long"
    return lambda v: None if len(v) >= length else rule


def _max_length(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    length = _int(params, "length")
    rule = f"must be at most {length} characters long"
    return lambda v: None if len(v) <= length else rule


_HEX_ALPHABETS: Mapping[str, str] = {
    "any": string.hexdigits,
    "lower": "0123456789abcdef",
    "upper": "0123456789ABCDEF",
}


def _hex(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    length = _opt_int(params, "length")
    case = _str(params, "case")
    alphabet = frozenset(_HEX_ALPHABETS[case])
    what = "hexadecimal" if case == "any" else f"{case}-case hexadecimal"
    rule = (
        f"must be exactly {length} {what} characters"
        if length is not None
        else f"must be {what} characters only"
    )

    def check(v: str) -> str | None:
        if not v or (length is not None and len(v) != length):
            return rule
        return None if alphabet.issuperset(v) else rule

    return check


def _base64(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    min_bytes = _opt_int(params, "min_bytes")
    urlsafe = _bool(params, "urlsafe")
    padding = _bool(params, "padding")
    variant = "URL-safe base64" if urlsafe else "base64"
    alphabet = (string.ascii_letters + string.digits + ("-_" if urlsafe else "+/")).encode()
    bad = f"must be valid {variant}" + (" with padding" if padding else "")
    short = f"must decode to at least {min_bytes} bytes"

    def check(v: str) -> str | None:
        try:
            raw = v.encode("ascii")
        except UnicodeEncodeError:
            return bad
        body = raw.rstrip(b"=")
        if not body or body.translate(None, alphabet) or len(raw) - len(body) > 2:
            return bad
        if padding and len(raw) % 4:
            return bad
        if not padding and len(raw) != len(body):
            return bad
        padded = body + b"=" * (-len(body) % 4)
        try:
            decoded = (
                base64.urlsafe_b64decode(padded)
                if urlsafe
                else base64.b64decode(padded, validate=True)
            )
        except (binascii.Error, ValueError):
            return bad
        if min_bytes is not None and len(decoded) < min_bytes:
            return short
        return None

    return check


def _entropy_cross(params: Mapping[str, ParamValue]) -> str | None:
    if "bits_per_char" not in params and "total_bits" not in params:
        return "give 'bits_per_char' or 'total_bits' (or both)"
    return None


def _entropy(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    per_char = params.get("bits_per_char")
    total = _opt_int(params, "total_bits")
    assert per_char is None or isinstance(per_char, float)

    def check(v: str) -> str | None:
        h = shannon_entropy(v)
        if per_char is not None and h < per_char:
            return f"character entropy must be at least {per_char:g} bits per character"
        if total is not None and h * len(v) < total:
            return f"character entropy must total at least {total} bits"
        return None

    return check


def _prefix(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    prefix = _str(params, "prefix")
    rule = f"must start with {prefix!r}"
    return lambda v: None if v.startswith(prefix) else rule


def _regex_rule(pattern: str, rule: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)
    return lambda v: None if compiled.fullmatch(v) else rule


def _openai(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    rule = "must look like an OpenAI API key ('sk-' and at least 32 of [A-Za-z0-9_-])"
    body = _regex_rule(r"sk-[A-Za-z0-9_-]{32,}", rule)

    def check(v: str) -> str | None:
        if v.startswith("sk-ant-"):
            return "must be an OpenAI API key, not an Anthropic one ('sk-ant-')"
        return body(v)

    return check


def _anthropic(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    return _regex_rule(
        r"sk-ant-[A-Za-z0-9_-]{32,}",
        "must look like an Anthropic API key ('sk-ant-' and at least 32 of [A-Za-z0-9_-])",
    )


def _google(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    return _regex_rule(
        r"AIza[0-9A-Za-z_-]{35}",
        "must look like a Google API key ('AIza' and exactly 35 of [0-9A-Za-z_-])",
    )


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")


def _check_schemes(value: ParamValue) -> str | None:
    assert isinstance(value, str)
    schemes = [s.strip() for s in value.split(",")]
    if not all(_SCHEME.match(s) for s in schemes):
        return "must be a comma-separated list of lower-case URL schemes"
    return None


_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"  # explicit ASCII classes, no IGNORECASE
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")
_MAX_HOST_NAME = 253


def _host_problem(host: str) -> str | None:
    """Why ``host`` is not a host (None: it is).

    A host is a DNS name of ASCII letters, digits and hyphens (labels of 1-63 characters,
    no hyphen at either end, at most 253 characters, an optional final dot; an
    internationalised name must be in its IDNA ``xn--`` form, so look-alike letters and
    full-width dots are refused), an IPv4 address (a name of digits and dots must be one), or
    an IPv6 address in brackets (``[::1]``; no zone index).
    """
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        try:
            if "%" not in inner and ipaddress.IPv6Address(inner):
                return None
        except ValueError:
            pass
        return "a bracketed host must be an IPv6 address"
    if not host.isascii():
        return "the host must be ASCII (an internationalised name in its IDNA xn-- form)"
    if len(host.rstrip(".")) > _MAX_HOST_NAME:
        return f"the host must be at most {_MAX_HOST_NAME} characters long"
    if not _HOST_NAME.fullmatch(host):
        return "the host must be labels of letters, digits and hyphens separated by dots"
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "a host of digits and dots must be an IPv4 address"
    return None


def _host(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    rule = "must be a host name, an IPv4 address or a bracketed IPv6 address"

    def check(v: str) -> str | None:
        problem = _host_problem(v)
        return None if problem is None else f"{rule} ({problem})"

    return check


def _url(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    schemes = tuple(s.strip() for s in _str(params, "schemes").split(","))
    listed = ", ".join(schemes)
    bad = f"must be a URL with scheme {listed} and a host"

    def check(v: str) -> str | None:
        if not v or any(c.isspace() or not c.isprintable() for c in v):
            return bad
        try:
            parts = urllib.parse.urlsplit(v)
            port = parts.port  # raises ValueError on a bad port
        except ValueError:
            return bad
        if parts.scheme not in schemes or not parts.hostname:
            return bad
        if port == 0:
            return f"{bad} (port 0 is not a port)"
        host = parts.hostname  # a bracketed IPv6 address loses its brackets
        problem = _host_problem(f"[{host}]" if ":" in host else host)
        return None if problem is None else f"{bad} ({problem})"

    return check


MAX_REGEX_VALUE = 1024
"""A ``regex`` validator refuses longer values without matching them: it bounds the time a
pattern that backtracks polynomially (``a*a*a*b``) can take."""

_REPEATS = (_constants.MAX_REPEAT, _constants.MIN_REPEAT)


def _backtracks(pattern: _parser.SubPattern, repeated: bool = False) -> bool:
    """Whether ``pattern`` has a variable repeat (``?``, ``*``, ``+``, ``{m,n}`` with m < n)
    or an alternation inside a repeat that may match more than once (``repeated``): the
    shapes that backtrack exponentially (``(a+)+``, ``(a|a)*``). Possessive repeats and
    atomic groups never backtrack into themselves and are not inspected."""
    for op, av in pattern.data:
        if op in (_constants.POSSESSIVE_REPEAT, _constants.ATOMIC_GROUP):
            continue
        inner = repeated
        if op in _REPEATS:
            assert isinstance(av, tuple)
            low, high = av[0], av[1]
            assert isinstance(low, int) and isinstance(high, int)
            if repeated and low != high:
                return True
            inner = repeated or high > 1
        elif op is _constants.BRANCH and repeated:
            return True
        if any(_backtracks(sub, inner) for sub in _subpatterns(av)):
            return True
    return False


def _subpatterns(av: object) -> Iterator[_parser.SubPattern]:
    """The sub-patterns in a parsed operation's argument (nested in tuples and lists)."""
    if isinstance(av, _parser.SubPattern):
        yield av
    elif isinstance(av, tuple | list):
        for item in av:
            yield from _subpatterns(item)


def _check_pattern(value: ParamValue) -> str | None:
    assert isinstance(value, str)
    try:
        parsed = _parser.parse(value)
    except re.error as exc:
        return f"is not a valid regular expression ({exc.msg})"
    if _backtracks(parsed):
        return (
            "could backtrack catastrophically: a repeated group may not contain a variable "
            "repeat or an alternation (use a possessive repeat or an atomic group)"
        )
    return None


def _regex(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    pattern = _str(params, "pattern")
    description = params.get("description")
    rule = f"must be {description}" if isinstance(description, str) else f"must match /{pattern}/"
    matches = _regex_rule(pattern, rule)
    too_long = f"{rule} (at most {MAX_REGEX_VALUE} characters)"
    return lambda v: too_long if len(v) > MAX_REGEX_VALUE else matches(v)


def _text(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    rule = (
        "must be non-blank printable text (no control characters, line breaks or "
        "invisible format characters)"
    )
    return lambda v: None if v.isprintable() and v.strip() else rule


def _port(_: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    rule = "must be a TCP port number (1-65535)"
    pattern = re.compile(r"[1-9][0-9]{0,4}")

    def check(v: str) -> str | None:
        if not pattern.fullmatch(v) or int(v) > 65535:
            return rule
        return None

    return check


_CLASSES: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
    ("lower", "a lower-case letter", lambda c: c in string.ascii_lowercase),
    ("upper", "an upper-case letter", lambda c: c in string.ascii_uppercase),
    ("digits", "a digit", lambda c: c in string.digits),
    ("symbols", "a symbol", lambda c: c.isprintable() and not c.isspace() and not c.isalnum()),
)


def _classes_cross(params: Mapping[str, ParamValue]) -> str | None:
    if not any(params[name] for name, _, _ in _CLASSES):
        return "at least one character class must be true"
    return None


def _password_classes(params: Mapping[str, ParamValue]) -> Callable[[str], str | None]:
    wanted = [(what, test) for name, what, test in _CLASSES if _bool(params, name)]

    def check(v: str) -> str | None:
        for what, test in wanted:
            if not any(test(c) for c in v):
                return f"must contain at least {what}"
        return None

    return check


def _nonempty(value: ParamValue) -> str | None:
    return "must not be empty" if value == "" else None


VALIDATORS: Mapping[str, ValidatorKind] = {
    k.kind: k
    for k in (
        ValidatorKind(
            "min-length",
            "a length floor (the strategy's validate_key_strength)",
            (Parameter("length", int, required=True, minimum=0, maximum=1_000_000),),
            _min_length,
        ),
        ValidatorKind(
            "max-length",
            "a length ceiling",
            (Parameter("length", int, required=True, minimum=1, maximum=10_000_000),),
            _max_length,
        ),
        ValidatorKind(
            "hex",
            "hexadecimal digits, optionally of an exact length in characters",
            (
                Parameter("length", int, minimum=1, maximum=1_000_000),
                Parameter(
                    "case",
                    str,
                    default="any",
                    check=lambda v: None if v in _HEX_ALPHABETS else "must be any, lower or upper",
                ),
            ),
            _hex,
        ),
        ValidatorKind(
            "base64",
            "base64 that decodes, optionally to at least min_bytes bytes",
            (
                Parameter("min_bytes", int, minimum=1, maximum=1_000_000),
                Parameter("urlsafe", bool, default=False),
                Parameter("padding", bool, default=True),
            ),
            _base64,
        ),
        ValidatorKind(
            "entropy",
            "empirical Shannon entropy floor (bits per character and/or total bits)",
            (
                Parameter("bits_per_char", float, minimum=0, maximum=32),
                Parameter("total_bits", int, minimum=1, maximum=1_000_000),
            ),
            _entropy,
            _entropy_cross,
        ),
        ValidatorKind(
            "prefix",
            "starts with a fixed prefix",
            (Parameter("prefix", str, required=True, check=_nonempty),),
            _prefix,
        ),
        ValidatorKind("openai-key", "an OpenAI API key", (), _openai),
        ValidatorKind("anthropic-key", "an Anthropic API key", (), _anthropic),
        ValidatorKind("google-api-key", "a Google API key", (), _google),
        ValidatorKind(
            "url",
            "an absolute URL with an allowed scheme and a host",
            (Parameter("schemes", str, default="https", check=_check_schemes),),
            _url,
        ),
        ValidatorKind(
            "regex",
            "matches a regular expression in full",
            (
                Parameter("pattern", str, required=True, check=_check_pattern),
                Parameter("description", str, check=_nonempty),
            ),
            _regex,
        ),
        ValidatorKind("port", "a TCP port number", (), _port),
        ValidatorKind(
            "host", "a host name, an IPv4 address or a bracketed IPv6 address", (), _host
        ),
        ValidatorKind(
            "text",
            "non-blank printable text: no control characters, line breaks or format characters",
            (),
            _text,
        ),
        ValidatorKind(
            "password-classes",
            "contains a character of each enabled class",
            tuple(Parameter(name, bool, default=True) for name, _, _ in _CLASSES),
            _password_classes,
            _classes_cross,
        ),
    )
}
"""Validator kind name → ``ValidatorKind``."""


def build_validator(kind: str, params: Mapping[str, ParamValue] | None = None) -> Validator:
    """Bind validator ``kind`` to ``params``; ``InvalidRequest`` for an unknown kind or bad param.

    Bound validators are cached (they are immutable).
    """
    # the key carries each value's type: 1, 1.0 and True hash alike but mean different things
    items = tuple(sorted((k, type(v).__name__, v) for k, v in (params or {}).items()))
    try:
        return _cached_build(kind, items)
    except TypeError:  # an unhashable parameter value: build uncached (it will be refused)
        return _build(kind, dict(params or {}))


def _build(kind: str, params: Mapping[str, ParamValue]) -> Validator:
    validator_kind = VALIDATORS.get(kind)
    if validator_kind is None:
        known = ", ".join(sorted(VALIDATORS))
        raise InvalidRequest(f"unknown validator kind {kind!r} (known: {known})")
    return validator_kind.build(params)


@lru_cache(maxsize=1024)
def _cached_build(kind: str, items: tuple[tuple[str, str, ParamValue], ...]) -> Validator:
    return _build(kind, {k: v for k, _, v in items})
