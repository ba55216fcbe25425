"""Regenerate openapi.json from app/spec.py: python scripts/gen_openapi.py [SERVER_URL].

The server URL comes from the argument, else PUBLIC_BASE_URL, else http://127.0.0.1:8080.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.schemas import openapi_document  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:8080"


def render(server_url: str) -> str:
    return json.dumps(openapi_document(server_url), ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else os.environ.get("PUBLIC_BASE_URL") or DEFAULT_URL
    (ROOT / "openapi.json").write_text(render(url), encoding="utf-8")
    print(f"wrote openapi.json for {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
