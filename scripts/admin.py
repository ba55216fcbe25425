"""`make admin ARGS="..."`: the admin CLI (`flask --app app.wsgi admin ...`) on the configured database.

With no MONGODB_URI it works on the embedded nx-27017 and its file under VAR_DIR: the one `make run`
started, if one answers on EMBEDDED_DB_PORT, else one started for the command and stopped after it.
Development wiring, like gunicorn.conf.py; the commands themselves are app/admin.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scripts.embedded import ROOT, embedded_paths, port_open, start_embedded, stop_embedded


def main(argv: list[str]) -> int:
    # The CLI serves no requests: it must not add a file to the running service's metrics.
    env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    env.setdefault("LOG_LEVEL", "ERROR")  # the service's start-up warnings are not the command's
    embedded = None
    if not env.get("MONGODB_URI"):
        db_path, port, log_file = embedded_paths(env)
        if port_open("127.0.0.1", port):
            print(f"admin: using the embedded database that answers on 127.0.0.1:{port}", file=sys.stderr)
        else:
            embedded = start_embedded(db_path, port, log_file)
            print(f"admin: started the embedded database on {db_path} for this command", file=sys.stderr)
        env["MONGODB_URI"] = f"mongodb://127.0.0.1:{port}"
    flask = Path(sys.executable).with_name("flask")
    try:
        return subprocess.call([str(flask), "--app", "app.wsgi", "admin", *argv], env=env, cwd=ROOT)
    finally:
        if embedded is not None:
            stop_embedded(embedded)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
