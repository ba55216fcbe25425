"""Regenerate openapi.json from app/spec.py: python scripts/gen_openapi.py [SERVER_URL].

The server URL comes from the argument, else PUBLIC_BASE_URL, else http://127.0.0.1:8080. With
CONTEXT_SCHEMA set, every tool that takes or returns a context also declares its typed `fields`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.context_schema import ContextSchema, ContextSchemaError  # noqa: E402
from app.schemas import openapi_document  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:8080"


def render(server_url: str, context_schema: ContextSchema | None = None) -> str:
    return json.dumps(openapi_document(server_url, context_schema), ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("PUBLIC_BASE_URL") or DEFAULT_URL
    schema_path = os.environ.get("CONTEXT_SCHEMA", "").strip()
    try:
        schema = ContextSchema.load(schema_path) if schema_path else None
    except ContextSchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (ROOT / "openapi.json").write_text(render(url, schema), encoding="utf-8")
    print(f"wrote openapi.json for {url}" + (f", with the typed context fields of {schema_path}" if schema else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
