#!/usr/bin/env python3
"""Steady-rate task spawner for the absurd-host pickup-latency benchmark.

Spawns ``--count`` tasks one at a time, each with its own
``Absurd.spawn(...)`` call through the upstream ``absurd-sdk`` sync client,
at ``--rate`` spawns per second. Spawns follow an absolute schedule: spawn k
(0-based) is due at start + k / rate, so a slow spawn does not push the whole
schedule back; spawns that fall behind are issued immediately (catch-up),
and the worst lateness is reported.

Task k gets params {"i": k}. On success one JSON line is printed on stdout:

    {"spawned": N, "task_ids": [...], "elapsed_s": ..., "late_max_ms": ...}

* task_ids are in spawn order (task_ids[k] has params {"i": k});
* elapsed_s is from the first deadline (start) to the return of the last spawn;
* late_max_ms is the largest (actual start - deadline) over all spawns, in
  milliseconds (0 when every spawn started on time).

Any error exits with a non-zero status and a message on stderr; nothing is
printed on stdout then.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, List

try:
    from absurd_sdk import Absurd
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"spawn_steady: cannot import absurd_sdk ({exc}); "
        "run with the virtualenv that has absurd-sdk installed\n"
    )
    sys.exit(1)

PROG = "spawn_steady"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spawn_steady.py",
        description=(
            "Spawn N Absurd tasks one at a time at a steady rate (absolute "
            "schedule: spawn k at start + k/R) through the absurd-sdk sync "
            "client, then print one JSON line: "
            '{"spawned": N, "task_ids": [...], "elapsed_s": ..., "late_max_ms": ...}.'
        ),
        epilog=(
            'Task k gets params {"i": k}. Spawns that fall behind schedule are '
            "issued immediately; late_max_ms reports the worst lateness. Exits "
            "non-zero with a message on stderr on any error."
        ),
    )
    parser.add_argument(
        "--dsn",
        required=True,
        help="PostgreSQL connection URL, e.g. postgresql://postgres@127.0.0.1:5432/db",
    )
    parser.add_argument(
        "--queue", required=True, help="Absurd queue to spawn into (must already exist)"
    )
    parser.add_argument(
        "--count", required=True, type=positive_int, help="number of tasks to spawn"
    )
    parser.add_argument(
        "--rate",
        required=True,
        type=positive_rate,
        help="spawns per second (may be fractional)",
    )
    parser.add_argument(
        "--task-name", default="noop", help="task name to spawn (default: noop)"
    )
    return parser.parse_args(argv)


def spawn_all(args: argparse.Namespace) -> dict:
    client = Absurd(args.dsn, queue_name=args.queue)
    try:
        queues = client.list_queues()
        if args.queue not in queues:
            known = ", ".join(sorted(queues)) or "none"
            raise RuntimeError(
                f"queue {args.queue!r} does not exist in this database "
                f"(queues: {known}); create it first, e.g. with 'absurdctl create-queue'"
            )

        task_ids: List[str] = []
        late_max = 0.0
        interval = 1.0 / args.rate
        start = time.perf_counter()
        for k in range(args.count):
            deadline = start + k * interval
            now = time.perf_counter()
            while now < deadline:
                time.sleep(deadline - now)
                now = time.perf_counter()
            late_max = max(late_max, now - deadline)
            try:
                result = client.spawn(args.task_name, {"i": k}, queue=args.queue)
            except Exception as exc:
                raise RuntimeError(
                    f"spawn {k + 1}/{args.count} failed after {len(task_ids)} "
                    f"successful spawns: {type(exc).__name__}: {exc}"
                ) from exc
            task_ids.append(str(result["task_id"]))
        elapsed = time.perf_counter() - start
    finally:
        client.close()

    return {
        "spawned": len(task_ids),
        "task_ids": task_ids,
        "elapsed_s": round(elapsed, 6),
        "late_max_ms": round(late_max * 1000.0, 3),
    }


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    try:
        summary = spawn_all(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:
        sys.stderr.write(f"{PROG}: error: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
