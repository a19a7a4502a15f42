#!/usr/bin/env python3
"""Prints ``Absurd.fetch_task_result`` snapshots for the given task ids.

With ``--await-timeout S`` each task is first awaited with ``Absurd.await_task_result``
(polling until terminal, failing after S seconds).

Prints: {"queue", "results": {task_id: {"state", "result", "failure"} | null}}.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from _common import emit, fail, parser, run, snapshot_json


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("task_ids", nargs="+", help="task ids (comma-separated lists allowed)")
    p.add_argument("--await-timeout", type=float, default=None, metavar="SECONDS")
    p.add_argument("--require-found", action="store_true", help="fail if a task is unknown")
    args = p.parse_args()
    ids = [t.strip() for arg in args.task_ids for t in arg.split(",") if t.strip()]

    from absurd_sdk import Absurd

    client = Absurd(args.url, queue_name=args.queue)
    try:
        results = {}
        for tid in ids:
            if args.await_timeout is not None:
                try:
                    snap = client.await_task_result(tid, timeout=args.await_timeout)
                except Exception as e:  # the SDK raises on timeout
                    fail(f"task {tid} did not finish within {args.await_timeout}s: {type(e).__name__}: {e}")
            else:
                snap = client.fetch_task_result(tid)
            if snap is None and args.require_found:
                fail(f"task {tid} not found in queue {args.queue!r}")
            results[tid] = snapshot_json(snap)
        emit({"queue": args.queue, "results": results})
    finally:
        client.close()


if __name__ == "__main__":
    run(main)
