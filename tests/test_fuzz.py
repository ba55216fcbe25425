"""Property-based fuzzing of every tool, from the generated request schemas, against the Flask app.

Hypothesis strategies are derived from `app.schemas.request_schema` by `from_schema` below (the
schemas use a small subset of JSON Schema; hypothesis-jsonschema 0.23.1 no longer runs on current
hypothesis).

Four kinds of input per tool: bodies valid for the schema Coze sees (openapi.json's, `strict=False`),
bodies valid for the service's own strict schema, valid bodies with one field (or option) replaced
by an arbitrary JSON value, and arbitrary JSON or bytes as the whole body. Some bodies are aimed at
sessions that exist, so the operations run for real on nx-27017. The property: never a 5xx, always
HTTP 200 with a body of the tool's output shape (checked by `Api.post`), no implementation detail
in the text. The number of cases run is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app, schemas, spec
from app.settings import Settings
from tests.support import TOKEN, Api, assert_no_leak, fresh_database

pytestmark = pytest.mark.slow

RUNS: Counter = Counter()
FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
USER = "fz-user"
KNOWN_IDS = ("fz-1", "fz-2", "fz-closed", "never-created")

WEIRD_TEXT = st.text(
    st.characters(categories=["Cs", "Cc", "Zs", "Lo", "So", "Nd", "Lu", "Mn", "Cf"]) | st.sampled_from('$.@:_-{}"\\'),
    max_size=24,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.sampled_from([0, -1, 2**53, 2**63 - 1, 2**63, 2**64, 1.0, 600.0, 1e308, -0.0, 0.5])
    | st.floats()
    | st.text(max_size=24)
    | WEIRD_TEXT
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | WEIRD_TEXT, inner, max_size=4),
    max_leaves=16,
)


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values valid for one of the generated schemas (the keywords app.schemas emits)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "string":
        text = st.from_regex(schema["pattern"]) if "pattern" in schema else st.text(max_size=40) | WEIRD_TEXT
        if "maxLength" in schema:
            text = text.filter(lambda s, n=schema["maxLength"]: len(s) <= n)
        return text
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=min(schema.get("maxItems", 5), 5))
    properties = schema.get("properties")
    if not properties:  # a free-form object: the context
        return st.dictionaries(st.text(max_size=8) | WEIRD_TEXT.filter(_unicode), ANY_JSON, max_size=5)
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {k: from_schema(v) for k, v in properties.items() if k in required},
        optional={k: from_schema(v) for k, v in properties.items() if k not in required},
    )


def _unicode(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _fields(tool: spec.Tool) -> list[str]:
    names = list(schemas.request_schema(tool)["properties"])
    names += [f"options.{n}" for n in tool.options()]
    return names + ["operation", "options", "unknown_field", "options.unknown"]


def _aim(body: dict, target: tuple[str, str] | None) -> dict:
    """Point a generated body at a session that exists (or at none), keeping everything else."""
    if target is not None and isinstance(body, dict):
        body = {**body, "user_id": target[0], "session_id": target[1]}
    return body


TARGETS = st.none() | st.sampled_from([(USER, sid) for sid in KNOWN_IDS])


def valid_bodies(tool: spec.Tool, *, strict: bool):
    return st.builds(_aim, from_schema(schemas.request_schema(tool, strict=strict)), TARGETS)


@st.composite
def mutated_bodies(draw, tool: spec.Tool):
    body = dict(draw(valid_bodies(tool, strict=False)))
    field = draw(st.sampled_from(_fields(tool)))
    value = draw(ANY_JSON)
    if field.startswith("options."):
        options = body.get("options")
        options = dict(options) if isinstance(options, dict) else {}
        options[field.removeprefix("options.")] = value
        body["options"] = options
    else:
        body[field] = value
    return body


def _encode(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode("utf-8")


@pytest.fixture(scope="module")
def fuzz_api(mongo_uri, request):
    with fresh_database(mongo_uri, "test_fuzz") as db:
        app = create_app(Settings(env="test", mongodb_uri=mongo_uri, mongodb_db=db, service_tokens=(TOKEN,)))
        try:
            api = Api(app.test_client())
            for sid in KNOWN_IDS[:3]:
                api.create(USER, session_id=sid, context=json.dumps({"seed": sid}))
            api.call("close", {"user_id": USER, "session_id": "fz-closed"})
            yield api
        finally:
            app.extensions["database"].close()
    total = sum(RUNS.values())
    detail = ", ".join(f"{kind} {n}" for kind, n in sorted(RUNS.items()))
    line = f"\nfuzz: {total} cases run against the app, each answered 200 in the output shape ({detail})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(line)


def _check(api: Api, tool: spec.Tool, raw: bytes, kind: str) -> None:
    status, data = api.post(tool.name, None, raw=raw)  # Api.post checks the output shape
    assert status == 200, (tool.name, status, data, raw[:300])
    assert_no_leak(json.dumps(data, ensure_ascii=False), sent=raw.decode("utf-8", "replace"))
    if data["error_code"] == "":
        assert data["error"] == ""
    RUNS[kind] += 1


def _ran(fuzz) -> None:
    """Run a @given function and prove it really tried many cases."""
    before = sum(RUNS.values())
    fuzz()
    assert sum(RUNS.values()) - before >= 25, "hypothesis ran too few cases"


TOOLS = [pytest.param(t, id=t.name) for t in spec.TOOLS]


@pytest.mark.parametrize("tool", TOOLS)
def test_bodies_valid_for_the_coze_schema_never_get_a_5xx_and_always_the_output_shape(fuzz_api, tool):
    @FUZZ
    @given(body=valid_bodies(tool, strict=False))
    def run(body):
        _check(fuzz_api, tool, _encode(body), "coze-schema")

    _ran(run)


@pytest.mark.parametrize("tool", TOOLS)
def test_bodies_valid_for_the_strict_schema_never_get_a_5xx_and_always_the_output_shape(fuzz_api, tool):
    @FUZZ
    @given(body=valid_bodies(tool, strict=True))
    def run(body):
        _check(fuzz_api, tool, _encode(body), "strict-schema")

    _ran(run)


@pytest.mark.parametrize("tool", TOOLS)
def test_valid_bodies_with_one_field_replaced_by_any_json_value_never_get_a_5xx(fuzz_api, tool):
    @FUZZ
    @given(body=mutated_bodies(tool))
    def run(body):
        _check(fuzz_api, tool, _encode(body), "one-field-mutated")

    _ran(run)


@pytest.mark.parametrize("tool", [spec.MANAGE_TOOL, spec.TOOLS_BY_NAME["session_update"]], ids=lambda t: t.name)
def test_any_json_value_or_bytes_as_the_whole_body_never_gets_a_5xx(fuzz_api, tool):
    @settings(FUZZ, max_examples=100)
    @given(body=ANY_JSON | st.dictionaries(st.sampled_from(_fields(tool)), ANY_JSON, max_size=6))
    def run_json(body):
        _check(fuzz_api, tool, _encode(body), "any-json")

    @settings(FUZZ, max_examples=60)
    @given(raw=st.binary(max_size=200) | st.builds(lambda b: b'{"user_id":"' + b + b'"}', st.binary(max_size=40)))
    def run_bytes(raw):
        _check(fuzz_api, tool, raw, "any-bytes")

    _ran(run_json)
    _ran(run_bytes)
