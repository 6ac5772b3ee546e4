"""The OpenAPI document: valid 3.1, lists exactly the served routes, cached; the docs page."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from medsecrets.core import Core

from .conftest import SAMPLES, SyncClient, url_for


def test_document_is_valid_openapi_31(client: SyncClient) -> None:
    r = client.get("/v1/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_document_lists_every_served_route_and_nothing_else(client: SyncClient, core: Core) -> None:
    doc = client.get("/v1/openapi.json").json()
    documented = {(m.upper(), url) for url, ops in doc["paths"].items() for m in ops}
    served = {(spec.method, spec.url) for spec in core.routes.values()}
    served |= {("GET", "/v1/openapi.json"), ("GET", "/v1/docs")}
    assert documented == served
    # ... and every documented route answers something other than 404/405.
    for method, url in sorted(documented):
        concrete = url.replace("{path}", "medessence/dev/database").replace(
            "{category}", "database"
        )
        status = client.request(method, concrete).status_code
        assert status not in (404, 405) or "{" in url, (method, url, status)


def test_every_operation_documents_its_errors_and_strict_bodies(client: SyncClient) -> None:
    doc = client.get("/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for url, ops in doc["paths"].items():
        for method, op in ops.items():
            responses = set(op["responses"])
            assert "200" in responses
            if url.startswith("/v1/openapi") or url == "/v1/docs":
                continue
            assert {"400", "405", "500", "503"} <= responses, (method, url)
            if "{" in url:  # the secret or category the URL names may not exist
                assert "404" in responses, (method, url)
            if op.get("security") != []:
                assert {"401", "403"} <= responses
            if method in ("post", "put", "patch", "delete"):
                assert {"413", "415"} <= responses
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                body = schemas[ref.rsplit("/", 1)[1]]
                assert body["additionalProperties"] is False
            for param in op.get("parameters", []):
                assert param["in"] in ("path", "query")
    for name, schema in schemas.items():
        if schema.get("type") == "object" and "properties" in schema:
            assert schema["additionalProperties"] is False, name


def test_document_is_cached(client: SyncClient) -> None:
    assert client.get("/v1/openapi.json").content == client.get("/v1/openapi.json").content


def test_docs_page_renders_the_document_without_external_assets(client: SyncClient) -> None:
    r = client.get("/v1/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for url in ("/v1/secrets/{path}", "/v1/sys/health", "/v1/auth/token/create"):
        assert url in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_the_metrics_route_and_required_parameters_are_documented(core: Core) -> None:
    from medsecrets.api.app import METRICS_URL, create_app
    from medsecrets.api.metrics import Metrics

    for open_metrics in (False, True):
        app = create_app(core, metrics=Metrics(), metrics_unauthenticated=open_metrics)
        doc = json.loads(app._openapi)
        validate(doc)
        operation = doc["paths"][METRICS_URL]["get"]
        assert "text/plain" in operation["responses"]["200"]["content"]
        assert ({"401", "403"} <= set(operation["responses"])) is not open_metrics
        assert (operation.get("security") == []) is open_metrics
    who_read = doc["paths"]["/v1/sys/audit/who-read"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in who_read} == {"path": True, "since": False}


def test_statuses_follow_each_route_s_declaration(client: SyncClient) -> None:
    """Derived from the route specs (open, method, URL parameters) plus each route's own
    errors: the document says what a route answers, not one list for all."""
    paths = client.get("/v1/openapi.json").json()["paths"]

    def statuses(url: str, method: str) -> set[int]:
        return {int(s) for s in paths[url][method]["responses"] if s != "200"}

    assert statuses("/v1/sys/health", "get") == {400, 405, 500, 503}
    # open, yet refused after an operator's seal (auto-unseal waits for a restart)
    assert statuses("/v1/sys/unseal", "post") == {400, 403, 405, 413, 415, 500, 502, 503}
    assert statuses("/v1/sys/init", "post") == {400, 405, 409, 413, 415, 500, 502, 503}
    read = statuses("/v1/secrets/{path}", "get")
    assert read == {400, 401, 403, 404, 405, 410, 500, 502, 503}  # no 409, 413, 415, 422
    write = statuses("/v1/secrets/{path}", "put")
    assert {409, 410, 413, 415, 422} <= write
    assert statuses("/v1/metadata", "get") == {400, 401, 403, 405, 500, 503}
    # beyond the parent: 403; the parent revoked meanwhile: 401 (nothing of its own)
    assert statuses("/v1/auth/token/create", "post") == {400, 401, 403, 405, 413, 415, 500, 503}


def test_what_each_route_answers_is_among_its_documented_statuses(
    client: SyncClient, core: Core, auth: dict[str, str]
) -> None:
    """Each route driven with its sample, without a token, with an unknown query parameter,
    a bad body, a wrong media type, a missing resource and while sealed: every answer's
    status is one its operation lists."""
    paths = client.get("/v1/openapi.json").json()["paths"]
    answered: list[tuple[str, str, int]] = []
    specs = {spec.name: spec for spec in core.routes.values()}
    names = [name for name in sorted(SAMPLES) if name != "sys.seal"] + ["sys.seal"]
    for _ in range(2):  # unsealed, then sealed (by the sample of sys.seal, the last one)
        for name in names:
            spec = specs[name]
            param, body, query = SAMPLES[name]
            url = url_for(spec.url, param)
            missing = url_for(spec.url, "medessence/development/database/missing-x")
            if "{category}" in spec.url:
                missing = url_for(spec.url, "no-such-category")
            tries: list[tuple[str, dict[str, object]]] = [
                (url + (f"?{query}" if query else ""), {"headers": auth, "json": body}),
                (url, {"json": body}),
                (url + "?unknown=1", {"headers": auth, "json": body}),
                (missing, {"headers": auth, "json": body}),
            ]
            if spec.method != "GET":
                tries.append((url, {"json": {}}))  # sys/unseal: auto-unseal
                tries.append((url, {"headers": auth, "json": {"unknown_field": 1}}))
                tries.append((url, {"headers": auth, "content": b"x", "params": {}}))
                tries.append(
                    (
                        url,
                        {
                            "headers": {**auth, "content-type": "application/json"},
                            "content": b'{"a":1,"a":2}',
                        },
                    )
                )
            for target, kwargs in tries:
                response = client.request(spec.method, target, **kwargs)
                answered.append((spec.url, spec.method, response.status_code))
    for url, method, status in answered:
        if status != 200:
            assert str(status) in paths[url][method.lower()]["responses"], (method, url, status)
    assert {status for _, _, status in answered} >= {200, 400, 401, 404, 409, 415, 503}
