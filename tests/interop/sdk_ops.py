#!/usr/bin/env python3
"""Queue and task operations through the Python SDK, one per subcommand.

  emit-event NAME [--payload JSON]        Absurd.emit_event        -> {"op", "event", "payload"}
  cancel TASK_ID                          Absurd.cancel_task       -> {"op", "task_id", "snapshot"}
  retry TASK_ID [--spawn-new] [--max-attempts N]
                                          Absurd.retry_task        -> {"op", "task_id", "run_id", "attempt", "created"}
  create-queue [NAME] [--storage-mode M] [--policy JSON]
                                          Absurd.create_queue      -> {"op", "queue", "queues"}
  list-queues                             Absurd.list_queues       -> {"op", "queues"}
  drop-queue [NAME]                       Absurd.drop_queue        -> {"op", "queue", "queues"}
  queue-policy [NAME]                     Absurd.get_queue_policy  -> {"op", "queue", "policy"}
  set-queue-policy [NAME] --policy JSON   Absurd.set_queue_policy  -> {"op", "queue", "policy"}
                                          (JSON: the method's keyword arguments)

NAME defaults to --queue. Options go before or after the subcommand's arguments.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from _common import emit, fail, json_arg, parser, run, snapshot_json


def main() -> None:
    p = parser("Queue and task operations through the Python SDK")
    sub = p.add_subparsers(dest="op", required=True)
    e = sub.add_parser("emit-event")
    e.add_argument("name")
    e.add_argument("--payload", default=None, help="JSON payload (default: null)")
    c = sub.add_parser("cancel")
    c.add_argument("task_id")
    r = sub.add_parser("retry")
    r.add_argument("task_id")
    r.add_argument("--spawn-new", action="store_true")
    r.add_argument("--max-attempts", type=int, default=None)
    for name in ("create-queue", "drop-queue", "queue-policy", "set-queue-policy"):
        q = sub.add_parser(name)
        q.add_argument("name", nargs="?", default=None)
        if name in ("create-queue", "set-queue-policy"):
            q.add_argument("--policy", default=None, help="JSON object of keyword arguments")
        if name == "create-queue":
            q.add_argument("--storage-mode", default=None)
    sub.add_parser("list-queues")
    args = p.parse_args()

    from absurd_sdk import Absurd

    client = Absurd(args.url, queue_name=args.queue)
    try:
        if args.op == "emit-event":
            payload = json_arg(args.payload, "--payload") if args.payload is not None else None
            client.emit_event(args.name, payload)
            emit({"op": args.op, "queue": args.queue, "event": args.name, "payload": payload})
        elif args.op == "cancel":
            client.cancel_task(args.task_id)
            emit({"op": args.op, "queue": args.queue, "task_id": args.task_id,
                  "snapshot": snapshot_json(client.fetch_task_result(args.task_id))})
        elif args.op == "retry":
            res = client.retry_task(args.task_id, max_attempts=args.max_attempts, spawn_new=args.spawn_new)
            emit({"op": args.op, "queue": args.queue, "retried_task_id": args.task_id,
                  "task_id": str(res["task_id"]), "run_id": str(res["run_id"]),
                  "attempt": res["attempt"], "created": res["created"],
                  "snapshot": snapshot_json(client.fetch_task_result(str(res["task_id"])))})
        elif args.op == "create-queue":
            name = args.name or args.queue
            kwargs = json_arg(args.policy, "--policy") if args.policy is not None else {}
            if args.storage_mode is not None:
                kwargs["storage_mode"] = args.storage_mode
            client.create_queue(name, **kwargs)
            queues = client.list_queues()
            if name not in queues:
                fail(f"queue {name!r} missing from list_queues() after create_queue: {queues}")
            emit({"op": args.op, "queue": name, "queues": queues})
        elif args.op == "drop-queue":
            name = args.name or args.queue
            client.drop_queue(name)
            queues = client.list_queues()
            if name in queues:
                fail(f"queue {name!r} still listed by list_queues() after drop_queue: {queues}")
            emit({"op": args.op, "queue": name, "queues": queues})
        elif args.op == "queue-policy":
            name = args.name or args.queue
            emit({"op": args.op, "queue": name, "policy": client.get_queue_policy(name)})
        elif args.op == "set-queue-policy":
            name = args.name or args.queue
            kwargs = json_arg(args.policy, "--policy") if args.policy is not None else {}
            client.set_queue_policy(name, **kwargs)
            emit({"op": args.op, "queue": name, "policy": client.get_queue_policy(name)})
        elif args.op == "list-queues":
            emit({"op": args.op, "queues": client.list_queues()})
    finally:
        client.close()


if __name__ == "__main__":
    run(main)
