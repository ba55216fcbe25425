"""The generated artefacts: schemas are valid, openapi.json is fresh and follows Coze's import rules."""

from __future__ import annotations

import json

import yaml
from jsonschema import Draft202012Validator

from app import schemas, spec
from scripts import cozerules
from scripts.gen_openapi import DEFAULT_URL, render
from tests.support import ROOT


def committed_openapi() -> dict:
    return json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))


def test_every_generated_schema_is_a_valid_json_schema():
    for tool in spec.TOOLS:
        Draft202012Validator.check_schema(schemas.request_schema(tool))
        Draft202012Validator.check_schema(schemas.response_schema(tool))
        Draft202012Validator.check_schema(schemas.request_schema(tool, strict=False))


def test_committed_openapi_json_is_what_the_spec_generates():
    assert (ROOT / "openapi.json").read_text(encoding="utf-8") == render(DEFAULT_URL), (
        "openapi.json is stale: run `make openapi` and commit it"
    )


def test_openapi_json_follows_every_coze_import_rule():
    assert cozerules.openapi_problems(committed_openapi()) == []


def test_the_rules_checker_catches_what_coze_refuses():
    doc = committed_openapi()
    doc["servers"].append({"url": "http://other"})
    first = doc["paths"]["/v1/session"]["post"]
    first["responses"]["201"] = first["responses"]["200"]
    first["requestBody"]["content"]["application/json"]["schema"]["properties"]["user_id"]["format"] = "date-time"
    problems = "\n".join(cozerules.openapi_problems(doc))
    assert "exactly one servers entry" in problems
    assert "only a 200" in problems
    assert "date-time" in problems


def test_plugin_manifest_passes_coze_rules_and_holds_no_token():
    manifest = yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))
    assert cozerules.manifest_problems(manifest) == []
    assert manifest["auth"]["type"] == "service_http"
    assert manifest["auth"]["location"] == "Header"
    assert manifest["auth"]["service_token"] == ""


def test_there_is_one_operation_tool_and_one_tool_per_operation():
    ids = [op["post"]["operationId"] for op in committed_openapi()["paths"].values()]
    assert ids == ["session_manage", *(f"session_{name}" for name in spec.OPERATIONS)]
    manage = committed_openapi()["paths"]["/v1/session"]["post"]
    body = manage["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["operation"]["enum"] == list(spec.OPERATIONS)
    assert body["required"] == ["operation"]


def test_each_operation_tool_declares_only_the_inputs_it_uses():
    doc = committed_openapi()
    get_body = doc["paths"]["/v1/session/get"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(get_body["properties"]) == {
        "user_id",
        "session_id",
        "lock_token",
        "options",
    }  # the token only resumes a locked session
    assert set(get_body["properties"]["options"]["properties"]) == {"lang", "resume"}
    create = doc["paths"]["/v1/session/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" not in create["properties"]


def test_context_is_a_json_string_and_booleans_live_in_options_with_their_defaults():
    doc = committed_openapi()
    for item in doc["paths"].values():
        body = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        if "context" in body["properties"]:
            assert body["properties"]["context"]["type"] == "string"
        for name, prop in body["properties"].items():
            assert prop["type"] != "boolean", f"top-level boolean {name} would arrive false from Coze"
        for prop in body["properties"]["options"]["properties"].values():
            if prop["type"] == "boolean":  # unset inside an object, Coze sends the declared default
                assert type(prop["default"]) is bool
        out = item["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert out["properties"]["context"]["type"] == "string"


def schemas_in(schema: dict):
    """Every schema nested in `schema` (itself included): properties and items."""
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from schemas_in(sub)
    if isinstance(schema.get("items"), dict):
        yield from schemas_in(schema["items"])


def test_no_schema_in_openapi_uses_format_ref_or_combinators():
    doc = committed_openapi()
    text = json.dumps(doc)
    for word in ('"$ref"', '"oneOf"', '"anyOf"', '"allOf"'):
        assert word not in text
    for item in doc["paths"].values():
        op = item["post"]
        top = [op["requestBody"]["content"]["application/json"]["schema"]]
        top.append(op["responses"]["200"]["content"]["application/json"]["schema"])
        for schema in (s for t in top for s in schemas_in(t)):
            assert "format" not in schema, schema  # the keyword; an option may be called "format"


def test_the_operation_tool_declares_only_defaults_every_operation_agrees_on():
    # Coze fills declared defaults in: a default timeout would reset a session's timeout on touch.
    options = spec.MANAGE_TOOL.options()
    assert options["timeout"].default is None
    assert options["limit"].default is None
    assert options["merge"].default is True
    for name, f in options.items():
        for op in spec.OPERATIONS.values():
            if name in op.options and f.default is not None:
                assert spec.TOOLS_BY_NAME[f"session_{op.name}"].options()[name].default == f.default


def test_the_manifest_tells_the_model_about_resume_the_lock_and_the_memory_tools_within_600_characters():
    manifest = yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))
    text = manifest["description_for_model"]
    assert len(text) <= 600
    for word in ("options.resume", "lock_token", "request_id", "edits", "rewind", "fork", "compact", "transcript"):
        assert word in text, word
    assert "create a new session" not in text  # resume, not a new session, keeps the conversation
    too_long = {**manifest, "description_for_model": "x" * 601}
    assert "description_for_model: at most 600 characters" in cozerules.manifest_problems(too_long)
