#!/usr/bin/env python3
"""Spawns tasks through the Python SDK (``Absurd.spawn``).

Spawns ``--count`` tasks named ``--task`` with params ``{"i": k}`` (k = 0..count-1, merged
over ``--params`` if given), ``max_attempts``, headers ``{"trace": "abc"}``, and an
idempotency key on the first one. The first task is then spawned a second time with the same
key to show that the SDK returns the same task id; a third, raw ``absurd.spawn_task`` call with
that key reports the ``created`` flag (the SDK's SpawnResult has no ``created``).

Prints: {"queue", "task", "task_ids", "run_ids", "attempts", "idempotency_key",
"duplicate_task_id", "duplicate_same", "raw_duplicate": {"task_id", "created"}}.
"""

from __future__ import annotations

import json

import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from _common import emit, fail, json_arg, parser, run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--task", default="echo", help="task name (default: echo)")
    p.add_argument("--count", type=int, default=1, help="number of tasks (default: 1)")
    p.add_argument("--max-attempts", type=int, default=3, help="max_attempts (default: 3)")
    p.add_argument("--params", default=None, help='extra params JSON object merged under {"i": k}')
    p.add_argument("--idempotency-key", default=None,
                   help="key for the first task (default: <queue>:<task>:first); '' for none")
    p.add_argument("--create-queue", action="store_true", help="create the queue first (SDK create_queue)")
    args = p.parse_args()
    if args.count < 1:
        fail("--count must be >= 1")

    extra = {}
    if args.params is not None:
        extra = json_arg(args.params, "--params")
        if not isinstance(extra, dict):
            fail("--params must be a JSON object")
    key = args.idempotency_key if args.idempotency_key is not None else f"{args.queue}:{args.task}:first"

    from absurd_sdk import Absurd

    client = Absurd(args.url, queue_name=args.queue)
    try:
        if args.create_queue:
            client.create_queue(args.queue)
        headers = {"trace": "abc"}
        spawned = []
        for k in range(args.count):
            params = dict(extra)
            params["i"] = k
            res = client.spawn(
                args.task,
                params,
                max_attempts=args.max_attempts,
                headers=headers,
                queue=args.queue,
                idempotency_key=(key or None) if k == 0 else None,
            )
            spawned.append(res)

        out = {
            "queue": args.queue,
            "task": args.task,
            "task_ids": [str(r["task_id"]) for r in spawned],
            "run_ids": [str(r["run_id"]) for r in spawned],
            "attempts": [r["attempt"] for r in spawned],
            "idempotency_key": key or None,
            "duplicate_task_id": None,
            "duplicate_same": None,
            "raw_duplicate": None,
        }
        if key:
            params = dict(extra)
            params["i"] = 0
            again = client.spawn(args.task, params, max_attempts=args.max_attempts, headers=headers,
                                 queue=args.queue, idempotency_key=key)
            out["duplicate_task_id"] = str(again["task_id"])
            out["duplicate_same"] = str(again["task_id"]) == out["task_ids"][0]
            if not out["duplicate_same"]:
                fail(f"spawning again with idempotency key {key!r} returned task {again['task_id']}, "
                     f"expected the first task {out['task_ids'][0]}")
            cur = client._conn.cursor()
            cur.execute(
                "select task_id, run_id, attempt, created from absurd.spawn_task(%s, %s, %s::jsonb, %s::jsonb)",
                (args.queue, args.task, json.dumps({"i": 0}), json.dumps({"idempotency_key": key})),
            )
            row = cur.fetchone()
            out["raw_duplicate"] = {"task_id": str(row[0]), "run_id": str(row[1]),
                                    "attempt": row[2], "created": row[3]}
            if row[3] is not False or str(row[0]) != out["task_ids"][0]:
                fail(f"raw spawn_task with an existing idempotency key returned {out['raw_duplicate']}, "
                     f"expected task {out['task_ids'][0]} with created=false")
        emit(out)
    finally:
        client.close()


if __name__ == "__main__":
    run(main)
