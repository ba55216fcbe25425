"""What the plugin registration script says and how its steps fail: development tooling, not run in production.

Output prints every line with each known secret (password, token, login cookie) masked; Failure names the
failed step and carries the exit code scripts/register_plugin.py returns.
"""

from __future__ import annotations

import json
from typing import TextIO

MASK = "***"
EXIT_FAILED = 1
EXIT_USAGE = 2


class Failure(Exception):
    """A step failed; the message says which and why. Exit code EXIT_FAILED unless told otherwise."""

    def __init__(self, step: str, detail: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(f"{step} failed: {detail}")
        self.step = step
        self.exit_code = exit_code


class Output:
    """Every line the script prints goes through here, with every known secret masked."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self._secrets: list[str] = []
        self.prefix = ""  # "(dry run) " while nothing is really sent

    def add_secret(self, value: str | None) -> None:
        if not value or len(value) < 4:  # shorter ones would garble the output; they are never printed anyway
            return
        variants = {
            value,
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            json.dumps(json.dumps(value))[3:-3],
        }
        self._secrets = sorted(set(self._secrets) | {v for v in variants if v}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def step(self, step: str, text: str) -> None:
        print(self.mask(f"{step}: {self.prefix}{text}"), file=self.out, flush=True)

    def text(self, text: str) -> None:
        print(self.mask(text), file=self.out, flush=True)

    def warn(self, text: str) -> None:
        print(self.mask(f"warning: {text}"), file=self.err, flush=True)

    def error(self, text: str) -> None:
        print(self.mask(f"error: {text}"), file=self.err, flush=True)
