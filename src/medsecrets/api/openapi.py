"""The OpenAPI 3.1 document and the docs page, generated from the core's route specs.

Schemas come from the same dataclasses the core parses bodies into and
serialises responses from (``schema_of``), so the document follows the code:
request bodies and response objects have ``additionalProperties: false``;
request fields with defaults are optional, response fields always present.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import types
import typing
from collections.abc import Iterable, Mapping

import medsecrets
from medsecrets.core.routes.base import QueryParam, RouteSpec
from medsecrets.sensitive import SecretFields, Sensitive

__all__ = ["DOCS_URL", "OPENAPI_URL", "build_openapi", "docs_page", "error_statuses", "schema_of"]

OPENAPI_URL = "/v1/openapi.json"
DOCS_URL = "/v1/docs"

Schema = dict[str, object]

ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["error", "request_id"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}

_DESCRIPTIONS = {
    400: "Bad input: malformed JSON, unknown field, wrong type, bad path or share",
    401: "Missing, unknown, expired or revoked token",
    403: "The token's policy does not allow this",
    404: "No such secret, version, stage, category, token or route",
    405: "Wrong method on a known route",
    409: "Check-and-set lost, or the target exists",
    410: "The secret is scheduled for deletion",
    413: "Body over the size limit, or a value over 64 KiB",
    415: "The body is not application/json",
    422: "A field failed a catalog validator",
    500: "Internal error (generic message)",
    502: "A KMS or cloud provider call failed",
    503: "Sealed, not initialised, audit or storage unavailable, or timed out (outcome unknown)",
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ANY_ROUTE = frozenset({400, 405, 500, 503})
"""What every route may answer: a bad query parameter (all take none or declared ones), a
wrong method, a bug, and 503 (the request timeout, the audit devices down; sealed or not
initialised for the routes not served then)."""
_UNDECLARED = frozenset({404, 409, 410, 422, 502})
"""The errors of a route's own work when its spec declares none (``RouteSpec.statuses``)."""
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def error_statuses(spec: RouteSpec) -> frozenset[int]:
    """The error statuses ``spec`` answers: ``_ANY_ROUTE``, 401 and 403 unless it is open
    (the token), 413 and 415 for a method with a body (whose body is read), 404 with a URL
    parameter (the secret or category it names), and those of its own work
    (``spec.statuses``: declared per route, ``_UNDECLARED`` when not)."""
    found = set(_ANY_ROUTE)
    if not spec.open:
        found |= {401, 403}
    if spec.method in _BODY_METHODS:
        found |= {413, 415}
    if "{" in spec.url:
        found.add(404)
    found |= _UNDECLARED if spec.statuses is None else set(spec.statuses)
    return frozenset(found)


class _Schemas:
    """Collects component schemas while converting types."""

    def __init__(self) -> None:
        self.components: dict[str, Schema] = {}

    def of(self, tp: object, *, request: bool) -> Schema:
        if tp is type(None):
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str or tp is Sensitive:
            return {"type": "string"}
        if tp is dt.datetime:
            return {"type": "string", "format": "date-time"}
        if tp is SecretFields:
            return {"type": "object", "additionalProperties": {"type": "string"}}
        if tp is object or tp is typing.Any:
            return {}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is Sensitive:
            return {"type": "string"}
        if origin is typing.Literal:
            return {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            options = [self.of(a, request=request) for a in args]
            dataclass_options = [a for a in args if dataclasses.is_dataclass(a)]
            key = "oneOf" if len(dataclass_options) > 1 else "anyOf"
            return {key: options}
        if origin in (tuple, list, frozenset):
            item = args[0] if args else object
            return {"type": "array", "items": self.of(item, request=request)}
        if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, str]):
            value = args[1] if len(args) == 2 else object
            return {"type": "object", "additionalProperties": self.of(value, request=request)}
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self._dataclass(tp, request=request)
        raise TypeError(f"no schema for {tp!r}")

    def _dataclass(self, cls: type, *, request: bool) -> Schema:
        name = cls.__name__
        ref: Schema = {"$ref": f"#/components/schemas/{name}"}
        if name in self.components:
            return ref
        self.components[name] = {}  # placeholder against recursion
        hints = typing.get_type_hints(cls)
        properties: dict[str, object] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name.startswith("_") or not f.init:
                continue
            properties[f.name] = self.of(hints[f.name], request=request)
            has_default = (
                f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            )
            if not request or not has_default:
                required.append(f.name)
        schema: Schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": properties,
            "required": required,
        }
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{name}("):
            schema["description"] = doc.splitlines()[0]
        self.components[name] = schema
        return ref


def schema_of(tp: object, *, request: bool = False) -> tuple[Schema, dict[str, Schema]]:
    """The JSON Schema of ``tp`` and the component schemas it references."""
    schemas = _Schemas()
    return schemas.of(tp, request=request), schemas.components


def _query_param(param: QueryParam) -> Schema:
    base: Schema
    if param.type is bool:
        base = {"type": "boolean"}
    elif param.type is int:
        base = {"type": "integer"}
        if param.minimum is not None:
            base["minimum"] = param.minimum
        if param.maximum is not None:
            base["maximum"] = param.maximum
    else:
        base = {"type": "string"}
        if param.enum is not None:
            base["enum"] = list(param.enum)
    schema = {"type": "array", "items": base} if param.repeatable else base
    out: Schema = {
        "name": param.name,
        "in": "query",
        "required": param.required,
        "description": param.description,
        "schema": schema,
    }
    if param.repeatable:
        out["style"] = "form"
        out["explode"] = True
    return out


def _error_responses(statuses: Iterable[int]) -> dict[str, object]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in sorted(set(statuses))}


def _operation(spec: RouteSpec, schemas: _Schemas) -> Schema:
    op: Schema = {
        "operationId": spec.name.replace(".", "_"),
        "summary": spec.summary,
        "tags": [spec.name.split(".")[0]],
    }
    params: list[object] = []
    for name in ("path", "category"):
        if "{" + name + "}" in spec.url:
            params.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                }
            )
    params += [_query_param(q) for q in spec.query]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {
            "required": spec.body_required,
            "content": {"application/json": {"schema": schemas.of(spec.body, request=True)}},
        }
    if spec.open:
        op["security"] = []
    responses: dict[str, object] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": schemas.of(spec.response, request=False)}},
        }
    }
    responses.update(_error_responses(error_statuses(spec)))
    op["responses"] = responses
    return op


def build_openapi(
    routes: Iterable[RouteSpec], *, metrics_url: str | None = None, metrics_open: bool = False
) -> dict[str, object]:
    """The OpenAPI 3.1 document of ``routes`` plus the document and docs page themselves,
    and the Prometheus ``metrics_url`` the transport serves (if any; ``metrics_open``:
    without a token)."""
    schemas = _Schemas()
    schemas.components["Error"] = ERROR_SCHEMA
    paths: dict[str, dict[str, object]] = {}
    for spec in routes:
        paths.setdefault(spec.url, {})[spec.method.lower()] = _operation(spec, schemas)
    if metrics_url is not None:
        refused = (400, 404, 405, 500, 503) + (() if metrics_open else (401, 403))
        paths[metrics_url] = {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text format; a token allowed to read sys/metrics)",
                "tags": ["sys"],
                **({"security": []} if metrics_open else {}),
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_error_responses(refused),  # 400: any query parameter
                },
            }
        }
    paths[OPENAPI_URL] = {
        "get": {
            "operationId": "openapi",
            "summary": "This OpenAPI document",
            "tags": ["docs"],
            "security": [],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {}}}},
                **_error_responses((400, 405)),  # 400: any query parameter
            },
        }
    }
    paths[DOCS_URL] = {
        "get": {
            "operationId": "docs",
            "summary": "A docs page rendering this document",
            "tags": ["docs"],
            "security": [],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **_error_responses((400, 405)),  # 400: any query parameter
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "medsecrets API",
            "version": medsecrets.__version__,
            "description": "Encrypted, versioned, audited secrets management. See docs/api.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for status, text in _DESCRIPTIONS.items()
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "token": {"type": "apiKey", "in": "header", "name": "X-Medsecrets-Token"},
            },
        },
        "security": [{"bearer": []}, {"token": []}],
    }


def docs_page(document: Mapping[str, object]) -> str:
    """A self-contained HTML page listing every operation of ``document`` (no CDN)."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>medsecrets API</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "pre{background:#f4f4f4;padding:.5em;overflow:auto}code{font-weight:bold}</style>",
        "</head><body><h1>medsecrets API v1</h1>",
        f"<p>Machine-readable: <a href='{OPENAPI_URL}'>{OPENAPI_URL}</a></p>",
    ]
    paths = document.get("paths", {})
    assert isinstance(paths, dict)
    for url, ops in paths.items():
        assert isinstance(ops, dict)
        for method, op in ops.items():
            assert isinstance(op, dict)
            out.append(
                f"<h2><code>{html.escape(method.upper())} {html.escape(url)}</code></h2>"
                f"<p>{html.escape(str(op.get('summary', '')))}</p>"
            )
            auth = "open" if op.get("security") == [] else "token"
            out.append(f"<p>Auth: {auth}</p>")
            for param in op.get("parameters", []):
                out.append(
                    f"<p>Parameter <code>{html.escape(param['name'])}</code> "
                    f"({html.escape(param['in'])}): {html.escape(param.get('description', ''))}</p>"
                )
            body = op.get("requestBody")
            if isinstance(body, dict):
                schema = body["content"]["application/json"]["schema"]
                out.append(f"<p>Body:</p><pre>{html.escape(json.dumps(schema, indent=1))}</pre>")
            responses = op.get("responses", {})
            out.append(f"<p>Statuses: {html.escape(', '.join(responses))}</p>")
    components = document.get("components", {})
    assert isinstance(components, dict)
    out.append("<h1>Schemas</h1>")
    for name, schema in components.get("schemas", {}).items():
        out.append(
            f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>"
            f"<pre>{html.escape(json.dumps(schema, indent=1))}</pre>"
        )
    out.append("</body></html>")
    return "".join(out)
