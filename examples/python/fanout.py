"""`fanout`, the Python twin of examples/fanout: fan-out/fan-in over child tasks with
absurd:task@0.2.0's `await-task-result`.

Params (the Rust twin's): {"task": <the children's task name>, "items": [one child per item,
spawned with the item as its params], "then": <optional: after the fan-in, one more child
spawned with these params and awaited with spawn_and_wait>, "queue": <optional: the children's
queue>, "timeout_seconds": <optional: wait at most this long for the first child alone>}.

Result: {"children": [task ids], "results": [{"state", "result" | "failure"} in the same
order], "then": <the last child's result>}, or {"timed_out": true, "children": [...]}. A `then`
child that fails fails this task permanently with $ChildFailed.

Each spawn is a checkpointed step with an idempotency key (`spawn_once`), so the re-runs after
each wait find the same children.
"""

from absurd_guest import InvalidParams, TimeoutError, task


@task("fanout")
def fanout(params, ctx):
    params = params or {}
    unknown = sorted(set(params) - {"task", "items", "then", "queue", "timeout_seconds"})
    if unknown:
        raise InvalidParams(unknown[0], "unknown field")
    if not isinstance(params.get("task"), str):
        raise InvalidParams("task", "must be a task name (text)")
    child, queue = params["task"], params.get("queue")
    options = {"max_attempts": 1, "queue": queue}
    ids = [ctx.spawn_once(child, item, **options) for item in params.get("items", [])]
    if params.get("timeout_seconds") is not None and ids:
        try:
            ctx.await_task_result(ids[0], queue, timeout=params["timeout_seconds"])
        except TimeoutError:
            return {"timed_out": True, "children": ids}
    results = [s.to_json() for s in ctx.join_all(ids, queue)]
    then = ctx.spawn_and_wait(child, params["then"], **options) if "then" in params else None
    return {"children": ids, "results": results, "then": then}
