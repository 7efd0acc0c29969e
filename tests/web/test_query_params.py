"""Hostile query parameters: every bad one is a 400 that names it (never a 500), and any
attribute key can be searched for, quotes, backslashes and JSON-path syntax included; on each store."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import grpc_export, pb_request, pb_span
from support.clickhouse_fixtures import STORES, serve_on

# Keys that broke or fooled a JSONPath built by pasting: '$."' || key || '"'.
KEYS = ['a"b', "a\\b", "a\\", "it's", "$x", "$", "a.b", "a[0]", "*", "ü-ключ", "~t", "a/b", '"', '\\"', "..", "a b"]


@pytest.fixture(scope="module", params=STORES)
def srv(request, module_server_factory, tmp_path_factory):
    srv = serve_on(request, module_server_factory, tmp_path_factory.mktemp("params"))
    base = (int(time.time()) - 120) * 10**9
    spans = [
        pb_span(bytes([i + 1]) * 16, bytes([i + 1]) * 8, f"span {i}", base, base + 10**6, attrs={key: f"v{i}"})
        for i, key in enumerate(KEYS)
    ]
    # One more span with every key, other values: a key=value filter must not match it.
    spans.append(pb_span(b"\xff" * 16, b"\xff" * 8, "all", base, base + 10**6, attrs={k: "other" for k in KEYS}))
    grpc_export(srv.grpc_target, pb_request(({"service.name": "svc"}, spans)))
    return srv


def _get(srv, path: str, params) -> httpx.Response:
    return httpx.get(srv.web_url + path, params=params, timeout=30)


@pytest.mark.parametrize("i, key", list(enumerate(KEYS)))
def test_any_attribute_key_can_be_searched(srv, i, key):
    r = _get(srv, "/api/v1/traces", {"attr": f"{key}=v{i}"})
    assert r.status_code == 200, r.text
    assert [t["trace_id"] for t in r.json()["traces"]] == [f"{i + 1:02x}" * 16]
    present = _get(srv, "/api/v1/traces", {"attr": key})
    assert present.status_code == 200, present.text
    assert {t["trace_id"] for t in present.json()["traces"]} == {f"{i + 1:02x}" * 16, "ff" * 16}


def test_twenty_attribute_filters_are_fine(srv):
    r = _get(srv, "/api/v1/traces", [("attr", k) for k in KEYS[:15]] + [("attr", "a.b")] * 5)
    assert r.status_code == 200, r.text
    assert [t["trace_id"] for t in r.json()["traces"]] == ["ff" * 16]


BIG = "9" * 30
BAD = [
    ("/api/v1/traces", {"offset": str(2**63)}, "offset"),
    ("/api/v1/traces", {"offset": BIG}, "offset"),
    ("/api/v1/traces", {"offset": "1000000001"}, "offset"),
    ("/api/v1/traces", {"offset": "-1"}, "offset"),
    ("/api/v1/traces", {"limit": str(2**63)}, "limit"),
    ("/api/v1/traces", {"limit": "0"}, "limit"),
    ("/api/v1/traces", {"min_duration": "1" + "0" * 400 + "ms"}, "min_duration"),
    ("/api/v1/traces", {"max_duration": "1" + "0" * 400}, "max_duration"),
    ("/api/v1/traces", {"min_duration": "100000000000000000000h"}, "min_duration"),
    ("/api/v1/traces", {"max_duration": "10000000000000h"}, "max_duration"),
    ("/api/v1/traces", {"min_duration": "1e400ms"}, "min_duration"),
    ("/api/v1/traces", [("attr", f"k{i}=v") for i in range(21)], "attr"),
    ("/api/v1/traces", [("attr", f"k{i}") for i in range(2000)], "attr"),
    ("/api/v1/traces", {"attr": "=v"}, "attr"),
    ("/api/v1/traces", {"start": "1" + "0" * 400}, "start"),
    ("/api/v1/traces", {"end": "nan"}, "end"),
    ("/api/v1/traces", {"trace_id": "x" * 32}, "trace id"),
    ("/api/v1/traces", {"sort": "bogus"}, "sort"),
    ("/api/v1/traces", {"order": "bogus"}, "order"),
    ("/api/v1/traces/facets", {"start": "-1"}, "start"),
    ("/api/v1/traces/facets", {"start": BIG, "end": BIG + "9"}, "start"),
    ("/api/v1/panels/llm_latency_ms", {"step": BIG}, "step"),
    ("/api/v1/panels/llm_latency_ms", {"end": "1e400"}, "end"),
    ("/api/v1/dashboard", {"step": "nan"}, "step"),
    ("/api/v1/metrics/x/rate", {"step": "-1"}, "step"),
    ("/api/v1/metrics/x/samples", {"start": "inf"}, "start"),
]


@pytest.mark.parametrize("path, params, names", BAD, ids=[f"{p}:{str(q)[:40]}" for p, q, _ in BAD])
def test_a_bad_parameter_is_a_400_naming_it(srv, path, params, names):
    r = _get(srv, path, params)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert names in detail, detail
    assert len(detail) < 300, "an error names the parameter; it does not echo a huge value"


@pytest.mark.parametrize(
    "params",
    [
        {"offset": "1000000000"},
        {"min_duration": "2562047h"},  # just within int64 nanoseconds
        {"max_duration": "9223372036854.775ms"},
        {"attr": "a%22b"},
    ],
)
def test_values_at_the_bounds_are_accepted(srv, params):
    assert _get(srv, "/api/v1/traces", params).status_code == 200


def test_hostile_path_values_are_404s(srv):
    for path in ('/api/v1/panels/a"b\\', "/api/v1/metrics/a%22b%5C/rate", "/api/v1/traces/" + "0" * 31 + "g"):
        r = httpx.get(srv.web_url + path, timeout=30)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
