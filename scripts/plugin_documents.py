"""The documents the registration script sends or exports, and the sample inputs it debugs each tool with.

Development tooling, not run in production: plugin.yaml and openapi.json as committed, with the server URL
and the service token filled in and checked against the Coze import rules.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app import schemas, spec
from app.context_schema import ContextSchema
from scripts import cozerules
from scripts.register_console import EXIT_USAGE, Failure, Output

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Documents:
    manifest: dict[str, Any]
    openapi: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name_for_human"])

    def ai_plugin(self) -> str:
        return json.dumps(self.manifest, ensure_ascii=False)

    def openapi_text(self) -> str:
        return json.dumps(self.openapi, ensure_ascii=False, indent=2)

    def tool_names(self) -> list[str]:
        return [op["operationId"] for item in self.openapi["paths"].values() for op in item.values()]


def load_documents(
    base_url: str, token: str, out: Output, root: Path = ROOT, context_schema: ContextSchema | None = None
) -> Documents:
    """plugin.yaml and openapi.json as committed (or, with a context schema, the document generated with
    its typed fields), with the server URL and the token filled in and checked."""
    manifest = yaml.safe_load((root / "plugin.yaml").read_text(encoding="utf-8"))
    if context_schema is not None:
        openapi = schemas.openapi_document(base_url, context_schema)
    else:
        openapi = json.loads((root / "openapi.json").read_text(encoding="utf-8"))
        committed_url = (openapi.get("servers") or [{}])[0].get("url", "")
        if openapi != schemas.openapi_document(committed_url):
            out.warn("openapi.json differs from what app/spec.py generates: run `make openapi` and commit it")
    if (manifest.get("auth") or {}).get("type") == "service_http":
        manifest["auth"]["service_token"] = token
    openapi["servers"] = [{"url": base_url}]
    problems = cozerules.manifest_problems(manifest) + cozerules.openapi_problems(openapi)
    if problems:
        raise Failure("check", "Coze would refuse these documents: " + "; ".join(problems), EXIT_USAGE)
    return Documents(manifest, openapi)


def sample_parameters(tool: spec.Tool, user_id: str, session_id: str, lock_token: str = "") -> dict[str, Any]:
    """The flat input object debug_api sends for `tool`, from the spec: what its operation needs
    (`lock_token`: the one session_lock returned, for session_unlock)."""
    op_name = "get" if len(tool.operations) > 1 else tool.operations[0]
    op = spec.OPERATIONS[op_name]
    params: dict[str, Any] = {}
    for name in tool.inputs:
        if name == "operation":
            params[name] = op_name
        elif name == "user_id":
            params[name] = user_id
        elif name == "session_id" and name in op.needs:
            params[name] = session_id
        elif name == "context" and name in op.inputs:
            params[name] = json.dumps({"coze_debug": True, "tool": tool.name})
        elif name == "messages" and name in op.inputs:
            params[name] = [{"role": "user", "content": "Hello from the registration script's debug run."}]
        elif name == "lock_token" and name in op.needs:
            params[name] = lock_token or "no-lock-was-taken"
        elif name == "summary" and name in op.needs:
            params[name] = "The user said hello to the registration script's debug run."
    if "lang" in tool.options():
        params["options"] = {"lang": "en"}
    if "lease" in tool.options():
        params["options"]["lease"] = 10  # released by session_unlock right after, or soon anyway
    if "upto_seq" in tool.options() and op_name == "compact":
        params["options"]["upto_seq"] = 1  # session_append_messages ran before: seq 1 exists
    if "to_seq" in tool.options() and op_name == "rewind":
        params["options"]["to_seq"] = 1  # at what compact summed up: allowed, drops what came after
    return params


LAST = (("lock",), ("unlock",), ("close",), ("delete",))  # in this order, after every other tool


def debug_order(name: str) -> tuple[int, int]:
    """create first (its session serves the others), then the rest in spec order, then lock, unlock
    (with lock's token: no other write meets the lock), close and delete."""
    tool = spec.TOOLS_BY_NAME.get(name)
    index = spec.TOOLS.index(tool) if tool else len(spec.TOOLS)
    ops = tool.operations if tool else ()
    rank = 0 if ops == ("create",) else 2 + LAST.index(ops) if ops in LAST else 1
    return rank, index


def export(directory: Path, docs: Documents, out: Output) -> None:
    """Import-ready openapi.json and ai_plugin.json (the manifest, without the token) for the SaaS UI."""
    manifest = copy.deepcopy(docs.manifest)
    if isinstance(manifest.get("auth"), dict) and "service_token" in manifest["auth"]:
        manifest["auth"]["service_token"] = ""  # never written to disk: typed into the import form instead
    problems = cozerules.manifest_problems(manifest) + cozerules.openapi_problems(docs.openapi)
    if problems:
        raise Failure("export", "; ".join(problems), EXIT_USAGE)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "openapi.json").write_text(json.dumps(docs.openapi, ensure_ascii=False, indent=2) + "\n", "utf-8")
    (directory / "ai_plugin.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", "utf-8")
    server = docs.openapi["servers"][0]["url"]
    auth = manifest.get("auth") or {}
    out.step("export", f"wrote {directory / 'openapi.json'} (server {server}) and {directory / 'ai_plugin.json'}")
    steps = [
        "Import into Coze SaaS (coze.cn / coze.com has no API for this; do it in the web UI):",
        "  1. Open your workspace, Library -> + -> Plugin -> Import.",
        f"  2. Choose 'local file' and upload {directory / 'openapi.json'} (or paste its text), then Next.",
        f"  3. Name and description: take them from ai_plugin.json ({docs.name}).",
        f"  4. Authorization: 'Service', location {auth.get('location', 'Header')}, "
        f"parameter name {auth.get('key', 'Authorization')}, service token = your SERVICE_TOKEN "
        "(the value is sent verbatim; 'Bearer <token>' also works).",
        f"  5. Enable all {len(docs.tool_names())} tools and run each one in the test console (Debug) until "
        "it passes: first session_create with a user_id, then use the session_id it returns for the others.",
        "  6. Publish the plugin; only published plugins can be added to workflows and agents.",
        f"  The service must answer at {server} from the internet, on a domain name (Coze SaaS refuses IP addresses).",
    ]
    for line in steps:
        out.text(line)
