#!/usr/bin/env python3
"""Runs the Python SDK's own worker (``Absurd.work_batch``) over a queue.

Registered tasks:
  echo    returns its params;
  double  x = params["x"] (else params["i"]); ``ctx.step("double", lambda: x * 2)``; returns {"y": <step>};
  fail    raises RuntimeError(params.get("message", "boom"));
  sleepy  ``ctx.sleep_for("nap", params.get("seconds", 1))`` then returns {"slept": true, "i": ...};
  waiter  ``ctx.await_event(params["event"])`` and returns {"event": ..., "payload": <payload>}.

Stops when every task named with ``--task-id`` is terminal (completed/failed/cancelled), or,
with ``--until-idle S``, after S seconds in which no task was claimed (and the named tasks,
if any, are terminal); fails if ``--deadline`` passes first.

Prints: {"worker_id", "batches", "claimed" (= handler invocations), "invocations": {name: n}, "outcomes":
{"returned": n, "raised": n, "suspended": n}, "tasks": {task_id: state}, "states": {state: n},
"elapsed_s"}.
"""

from __future__ import annotations

import time
from collections import Counter

import sys

sys.dont_write_bytecode = True  # keep tests/interop free of __pycache__

from _common import emit, fail, parser, run

TERMINAL = {"completed", "failed", "cancelled"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--task-id", action="append", default=[],
                   help="a task to wait for (repeatable; comma-separated lists allowed)")
    p.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds without claiming anything")
    p.add_argument("--deadline", type=float, default=60.0, help="give up after this many seconds (default 60)")
    p.add_argument("--worker-id", default="py-worker-1")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--claim-timeout", type=int, default=60)
    p.add_argument("--poll-interval", type=float, default=0.1)
    args = p.parse_args()

    task_ids = [t.strip() for arg in args.task_id for t in arg.split(",") if t.strip()]
    if not task_ids and args.until_idle is None:
        fail("give --task-id (tasks to wait for) and/or --until-idle SECONDS")

    from absurd_sdk import Absurd, SuspendTask

    client = Absurd(args.url, queue_name=args.queue)
    invocations: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    def counted(name):
        def wrap(fn):
            def handler(params, ctx):
                invocations[name] += 1
                try:
                    value = fn(params, ctx)
                except SuspendTask:
                    outcomes["suspended"] += 1
                    raise
                except Exception:
                    outcomes["raised"] += 1
                    raise
                outcomes["returned"] += 1
                return value

            client.register_task(name)(handler)
            return fn

        return wrap

    @counted("echo")
    def echo(params, ctx):
        return params

    @counted("double")
    def double(params, ctx):
        x = params.get("x", params.get("i"))
        y = ctx.step("double", lambda: x * 2)
        return {"y": y}

    @counted("fail")
    def failing(params, ctx):
        raise RuntimeError(params.get("message", "boom") if isinstance(params, dict) else "boom")

    @counted("sleepy")
    def sleepy(params, ctx):
        ctx.sleep_for("nap", params.get("seconds", 1))
        return {"slept": True, "i": params.get("i")}

    @counted("waiter")
    def waiter(params, ctx):
        event = params["event"]
        payload = ctx.await_event(event)
        return {"event": event, "payload": payload}

    def states():
        out = {}
        for tid in task_ids:
            snap = client.fetch_task_result(tid)
            out[tid] = snap.state if snap is not None else None
        return out

    start = time.monotonic()
    deadline = start + args.deadline
    last_claim = start
    batches = 0
    claimed = 0
    try:
        while True:
            before = sum(invocations.values())
            client.work_batch(worker_id=args.worker_id, claim_timeout=args.claim_timeout,
                              batch_size=args.batch_size)
            batches += 1
            executed = sum(invocations.values()) - before
            now = time.monotonic()
            if executed:
                claimed += executed
                last_claim = now
                continue  # drain the queue before checking
            current = states()
            all_terminal = all(s in TERMINAL for s in current.values())
            if task_ids and all_terminal and args.until_idle is None:
                break
            if args.until_idle is not None and now - last_claim >= args.until_idle and all_terminal:
                break
            if now >= deadline:
                pending = {t: s for t, s in current.items() if s not in TERMINAL}
                fail(f"deadline of {args.deadline}s passed after {claimed} claims; "
                     f"tasks not finished: {pending or 'none (queue never went idle)'}")
            time.sleep(args.poll_interval)
        final = states()
        emit({
            "worker_id": args.worker_id,
            "batches": batches,
            "claimed": claimed,
            "invocations": dict(invocations),
            "outcomes": {k: outcomes.get(k, 0) for k in ("returned", "raised", "suspended")},
            "tasks": final,
            "states": dict(Counter(s for s in final.values() if s is not None)),
            "elapsed_s": round(time.monotonic() - start, 3),
        })
    finally:
        client.close()


if __name__ == "__main__":
    run(main)
