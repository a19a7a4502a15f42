"""`durable`, the Python twin of examples/durable: a step, a sleep and an event.

Params (all optional): input (any JSON, default "hello"), sleep_seconds (default 1),
event (default "durable-demo"), timeout_seconds (default: wait indefinitely).
After the sleep and the event the task runs again from the top; `fetch` replays its stored
value, so `fetched_by_run` names the first execution's run.
"""

from absurd_guest import task


@task("durable")
def durable(params, ctx):
    params = params or {}
    fetch = ctx.step("fetch", lambda: {"input": params.get("input", "hello"), "run_id": ctx.run_id})
    ctx.sleep_for("cool-down", params.get("sleep_seconds", 1))
    event = ctx.await_event(params.get("event", "durable-demo"), timeout=params.get("timeout_seconds"))
    return {"fetched": fetch["input"], "fetched_by_run": fetch["run_id"], "event": event,
            "finished_by_run": ctx.run_id, "attempt": ctx.attempt}
