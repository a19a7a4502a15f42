"""Shared helpers for the interop scripts (plain scripts run with the test venv's python).

Every script takes ``--url`` and ``--queue``, prints exactly one JSON object on stdout and
exits non-zero with a one-line ``<script>: error: ...`` message on stderr when it fails.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import traceback
import uuid
from typing import Any, Callable, NoReturn

SCRIPT = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "interop"


class Failure(Exception):
    """An expected failure: printed as a clear message, exit code 1."""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="PostgreSQL URL of the database holding the absurd schema")
    p.add_argument("--queue", required=True, help="queue name")
    return p


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=_default, sort_keys=True))
    sys.stdout.write("\n")
    sys.stdout.flush()


def fail(message: str) -> NoReturn:
    raise Failure(message)


def json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"{what} is not valid JSON ({e}): {text!r}")


def describe_error(err: BaseException) -> str:
    sqlstate = getattr(err, "sqlstate", None)
    text = f"{type(err).__name__}: {err}".strip()
    if sqlstate:
        text += f" (SQLSTATE {sqlstate})"
    return text


def run(main: Callable[[], int | None]) -> NoReturn:
    """Runs ``main`` and turns any exception into a clear message and exit status 1."""
    try:
        code = main()
    except Failure as e:
        print(f"{SCRIPT}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{SCRIPT}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - report anything unexpected clearly
        if getattr(e, "sqlstate", None) is None:  # database errors speak for themselves
            traceback.print_exc(file=sys.stderr)
        print(f"{SCRIPT}: error: {describe_error(e)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


def snapshot_json(snapshot: Any) -> Any:
    """A ``TaskResultSnapshot`` (or ``None`` for an unknown task) as plain JSON."""
    if snapshot is None:
        return None
    return {"state": snapshot.state, "result": snapshot.result, "failure": snapshot.failure}
