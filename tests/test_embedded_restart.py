"""The embedded nx-27017 starts again after a crash left its pid file behind (scripts/embedded.py).

A container's pids repeat from one start to the next: after a SIGKILL the pid file often names a live
process of the new start (gunicorn itself), and nx-27017 refused to start while it did. Real
nx-27017 processes on temporary files.
"""

from __future__ import annotations

import os

import pytest
from pymongo import MongoClient

from scripts.embedded import free_port, start_embedded, stop_embedded


def files(tmp_path):
    return str(tmp_path / "sessions.db"), str(tmp_path / "nx.log"), tmp_path / "nx.pid"


def test_a_pid_file_naming_a_live_process_that_is_not_nx_27017_does_not_stop_the_start(tmp_path):
    db_path, log_file, pid_file = files(tmp_path)
    pid_file.write_text(str(os.getpid()))  # alive, and not a database: what a killed container leaves
    port = free_port()
    proc = start_embedded(db_path, port, log_file)
    try:
        with MongoClient("127.0.0.1", port, serverSelectionTimeoutMS=2000) as client:
            assert client.admin.command("ping")["ok"] == 1
        assert pid_file.read_text().strip() == str(proc.pid)
    finally:
        stop_embedded(proc)
    assert not pid_file.exists()  # a clean stop removes it


def test_a_second_nx_27017_on_the_same_files_is_still_refused(tmp_path):
    db_path, log_file, _ = files(tmp_path)
    first = start_embedded(db_path, free_port(), log_file)
    try:
        with pytest.raises(RuntimeError, match="nx-27017 exited with 1"):
            start_embedded(db_path, free_port(), log_file)
    finally:
        stop_embedded(first)
