"""Unit tests of absurd_guest under CPython, against an in-memory stand-in for the host's
`durable` and `log` imports (tests/host_stub). What the real host does with the same calls is
tested through a real worker in host/tests/python_guests.rs.

Run: python3 -m unittest discover -s guest-sdk-py/tests
"""

import dataclasses
import datetime as dt
import json
import logging
import os
import sys
import unittest
from typing import Literal, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "host_stub"))
sys.path.insert(0, os.path.dirname(HERE))

import absurd_guest  # noqa: E402
from absurd_guest import InvalidParams, PermanentError, RetryableError, task  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world.imports import durable, log as wit_log, types  # noqa: E402


def info(task_name="t", attempt=1, headers=None):
    return types.TaskInfo(task_id="tid", run_id=f"rid{attempt}", attempt=attempt, queue="q",
                          task_name=task_name, headers=headers)


def run(params, task_name="t", **kw):
    """One execution: the result as JSON, or the TaskError, or "suspended"."""
    durable.HOST.new_execution()
    try:
        return json.loads(absurd_guest.run(info(task_name, **kw), json.dumps(params)))
    except Err as e:
        return e.value
    except durable.Suspended:
        return "suspended"


class Base(unittest.TestCase):
    def setUp(self):
        absurd_guest._tasks.clear()
        durable.HOST = durable.Host()
        wit_log.RECORDS.clear()


class Steps(Base):
    def test_a_step_runs_once_and_replays_its_stored_value(self):
        ran = []

        @task("t")
        def t(params, ctx):
            value = ctx.step("fetch", lambda: ran.append(1) or {"n": len(ran)})
            ctx.sleep_for("nap", 10)
            return {"fetched": value}

        self.assertEqual(run(None), "suspended")
        self.assertEqual(durable.HOST.checkpoints["fetch"], '{"n":1}')
        durable.HOST.now_millis += 20_000
        self.assertEqual(run(None), {"fetched": {"n": 1}})
        self.assertEqual(ran, [1], "the step ran once")

    def test_run_step_decorator_with_and_without_a_name(self):
        @task("t")
        def t(params, ctx):
            @ctx.run_step
            def first():
                return 1

            @ctx.run_step("second-step")
            def second():
                return first + 1

            @ctx.run_step()
            def third():
                return second + 1

            return [first, second, third]

        self.assertEqual(run(None), [1, 2, 3])
        self.assertEqual(sorted(durable.HOST.checkpoints), ["first", "second-step", "third"])

    def test_repeated_step_names_are_numbered_by_the_host(self):
        @task("t")
        def t(params, ctx):
            return [ctx.step("s", lambda: i) for i in range(3)]

        self.assertEqual(run(None), [0, 1, 2])
        self.assertEqual(sorted(durable.HOST.checkpoints), ["s", "s#2", "s#3"])

    def test_a_dataclass_step_value_is_stored_as_an_object(self):
        @dataclasses.dataclass
        class Plan:
            refant: str
            solints: list

        @task("t")
        def t(params, ctx):
            return ctx.step("plan", lambda: Plan("103", ["inf"]))

        self.assertEqual(run(None), {"refant": "103", "solints": ["inf"]})

    def test_a_value_that_is_not_json_fails_naming_the_step(self):
        @task("t")
        def t(params, ctx):
            return ctx.step("bad", lambda: {1, 2})

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "$GuestError"))
        self.assertIn("step `bad`", f.message)
        self.assertNotIn("bad", durable.HOST.checkpoints)

    def test_nan_is_refused_rather_than_stored_as_invalid_json(self):
        @task("t")
        def t(params, ctx):
            return float("nan")

        f = run(None)
        self.assertEqual(f.name, "$GuestError")
        self.assertIn("result of task `t`", f.message)


class Time(Base):
    def test_sleep_until_takes_datetimes_and_unix_seconds(self):
        @task("t")
        def t(params, ctx):
            ctx.sleep_until("a", dt.datetime(1970, 1, 1, 0, 16, 40, tzinfo=dt.timezone.utc))
            ctx.sleep_until("b", 999.5)
            ctx.sleep_until("c", dt.datetime(1970, 1, 1, 0, 16, 40))  # naive: UTC
            ctx.sleep_for("d", dt.timedelta(seconds=0))
            return "done"

        self.assertEqual(run(None), "done")
        calls = [c for c in durable.HOST.calls if c[0].startswith("sleep")]
        self.assertEqual(calls, [("sleep_until", "a", 1_000_000), ("sleep_until", "b", 999_500),
                                 ("sleep_until", "c", 1_000_000), ("sleep_for", "d", 0.0)])

    def test_a_negative_or_infinite_sleep_is_refused_naming_the_step(self):
        for bad in (-1, float("inf")):
            absurd_guest._tasks.clear()

            @task("t")
            def t(params, ctx):
                ctx.sleep_for("nap", bad)

            f = run(None)
            self.assertEqual(f.name, "ValueError")
            self.assertIn("sleep_for `nap`", f.message)


class Events(Base):
    def test_await_event_suspends_until_emitted_then_returns_the_payload(self):
        @task("t")
        def t(params, ctx):
            return {"got": ctx.await_event("ready")}

        self.assertEqual(run(None), "suspended")
        durable.emit_event("ready", '{"v":1}')
        self.assertEqual(run(None), {"got": {"v": 1}})

    def test_await_event_timeout_raises_timeout_error_and_rounds_up(self):
        @task("t")
        def t(params, ctx):
            try:
                ctx.await_event("never", timeout=0)
            except absurd_guest.TimeoutError as e:
                assert isinstance(e, TimeoutError)
                ctx.await_event("other", step_name="wait-other", timeout=1.2)
                return "timed out"

        self.assertEqual(run(None), "suspended")
        self.assertIn(("await_event", "never", None, 0), durable.HOST.calls)
        self.assertIn(("await_event", "other", "wait-other", 2), durable.HOST.calls)

    def test_an_unhandled_timeout_is_a_retryable_timeout_error(self):
        @task("t")
        def t(params, ctx):
            ctx.await_event("never", timeout=0)

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "TimeoutError"))
        self.assertIn('"never"', f.message)

    def test_emit_event_sends_json_and_a_null_payload_by_default(self):
        @task("t")
        def t(params, ctx):
            ctx.emit_event("a", {"x": [1, 2]})
            ctx.emit_event("b")
            return None

        self.assertIsNone(run(None))
        self.assertEqual(durable.HOST.events, {"a": '{"x":[1,2]}', "b": "null"})


class SpawnAndHeartbeat(Base):
    def test_spawn_passes_params_and_options(self):
        @task("t")
        def t(params, ctx):
            return ctx.spawn("next", {"a": 1}, queue="other", max_attempts=3,
                             idempotency_key="k", headers={"timeout_sec": 5})

        self.assertEqual(run(None), {"task_id": "00000000-0000-0000-0000-000000000001"})
        name, params, options = durable.HOST.spawned[0]
        self.assertEqual((name, params), ("next", {"a": 1}))
        self.assertEqual(options, durable.SpawnOptions("other", 3, "k", '{"timeout_sec":5}', None, None))

    def test_a_refused_spawn_is_a_retryable_host_error_naming_the_task(self):
        durable.HOST.refuse_spawn = "task `x` is not granted"

        @task("t")
        def t(params, ctx):
            ctx.spawn("x")

        durable.HOST.refuse_spawn = "task `x` is not granted"
        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "$HostError"))
        self.assertIn("spawning `x` failed: task `x` is not granted", f.message)

    def test_heartbeat_and_headers(self):
        @task("t")
        def t(params, ctx):
            ctx.heartbeat()
            ctx.heartbeat(30)
            return ctx.headers

        self.assertEqual(run(None, headers='{"trace":"abc"}'), {"trace": "abc"})
        self.assertEqual(durable.HOST.heartbeats, [None, 30])
        self.assertEqual(run(None), {})


class SpawnOptionsOf020(Base):
    def test_retry_strategy_and_cancellation_take_the_absurd_sdks_dicts(self):
        @task("t")
        def t(params, ctx):
            ctx.spawn("a", retry_strategy={"kind": "exponential", "base_seconds": 2, "factor": 3,
                                           "max_seconds": 60},
                      cancellation={"max_delay": 10, "max_duration": 3600})
            ctx.spawn("b", retry_strategy={"kind": "none"}, cancellation={"max_duration": 5})
            return None

        run(None)
        a, b = (o for _, _, o in durable.HOST.spawned)
        self.assertEqual(a.retry_strategy, durable.RetryStrategy(durable.RetryKind.EXPONENTIAL, 2.0, 3.0, 60.0))
        self.assertEqual(a.cancellation, durable.CancellationPolicy(10, 3600))
        self.assertEqual(b.retry_strategy, durable.RetryStrategy(durable.RetryKind.NONE, None, None, None))
        self.assertEqual(b.cancellation, durable.CancellationPolicy(None, 5))

    def test_bad_spawn_options_name_the_key(self):
        for kw, needle in [
            ({"retry_strategy": {"kind": "linear"}}, "retry_strategy kind must be one of"),
            ({"retry_strategy": {"kind": "fixed", "base": 1}}, "unknown keys ['base']"),
            ({"cancellation": {"max_delay": -1}}, "cancellation max_delay must be whole seconds"),
            ({"cancellation": {"max_duration": 1.5}}, "cancellation max_duration must be whole seconds"),
            ({"cancellation": {"delay": 1}}, "unknown keys ['delay']"),
        ]:
            absurd_guest._tasks.clear()

            @task("t")
            def t(params, ctx, kw=kw):
                ctx.spawn("x", **kw)

            f = run(None)
            self.assertEqual(f.name, "ValueError", kw)
            self.assertIn(needle, f.message)
            self.assertIn("spawn `x`", f.message)
        self.assertEqual(durable.HOST.spawned, [])


def child_id(n):
    return f"00000000-0000-0000-0000-{n:012d}"


class AwaitingTasks(Base):
    def test_await_task_result_suspends_until_the_task_ends_then_replays(self):
        @task("t")
        def t(params, ctx):
            snap = ctx.await_task_result("c1")
            return {"state": snap.state, "result": snap.result, "completed": snap.completed}

        self.assertEqual(run(None), "suspended")
        durable.HOST.ended["c1"] = ("completed", {"rows": 3})
        self.assertEqual(run(None), {"state": "completed", "result": {"rows": 3}, "completed": True})
        self.assertEqual(json.loads(durable.HOST.checkpoints["$awaitTaskResult:c1"]),
                         {"state": "completed", "result": {"rows": 3}})
        del durable.HOST.ended["c1"]
        self.assertEqual(run(None)["result"], {"rows": 3}, "replayed from the checkpoint")

    def test_failed_and_cancelled_outcomes(self):
        durable.HOST.ended["f"] = ("failed", {"name": "Boom", "message": "it broke"})
        durable.HOST.ended["c"] = ("cancelled",)

        @task("t")
        def t(params, ctx):
            f = ctx.await_task_result({"task_id": "f"}, queue_name="other", step_name="wait-f")
            c = ctx.await_task_result("c")
            return [f.to_json(), c.to_json(), f.completed, c.completed]

        self.assertEqual(run(None), [{"state": "failed", "failure": {"name": "Boom", "message": "it broke"}},
                                     {"state": "cancelled"}, False, False])
        (tid, opts), _ = durable.HOST.awaits
        self.assertEqual((tid, opts), ("f", durable.AwaitOptions("other", "wait-f", None)))
        self.assertIn("wait-f", durable.HOST.checkpoints)

    def test_a_timeout_raises_timeout_error_and_is_rounded_up(self):
        @task("t")
        def t(params, ctx):
            try:
                ctx.await_task_result("slow", timeout=0)
            except absurd_guest.TimeoutError as e:
                return str(e)

        self.assertEqual(run(None), 'Timed out waiting for task "slow"')

        absurd_guest._tasks.clear()

        @task("t")
        def t2(params, ctx):
            ctx.await_task_result("slow", timeout=dt.timedelta(seconds=1.5))

        self.assertEqual(run(None), "suspended")
        self.assertEqual(durable.HOST.awaits[-1][1].timeout_seconds, 2)

    def test_a_bad_task_id_or_timeout_is_refused(self):
        for args in [(None,), (42,), ("",), ("x", None, -1), ("x", None, float("nan"))]:
            absurd_guest._tasks.clear()

            @task("t")
            def t(params, ctx, args=args):
                ctx.await_task_result(*args)

            f = run(None)
            self.assertEqual(f.name, "ValueError", args)
        self.assertEqual(durable.HOST.awaits, [])

    def test_unwrap_gives_the_result_or_a_permanent_child_failed(self):
        ok = absurd_guest.TaskResultSnapshot("completed", result=[1])
        self.assertEqual(ok.unwrap(), [1])
        failed = absurd_guest.TaskResultSnapshot("failed", failure={"name": "X", "message": "bad input"})
        with self.assertRaises(PermanentError) as e:
            failed.unwrap("task solve (id)")
        self.assertEqual((e.exception.name, e.exception.message), ("$ChildFailed", "task solve (id) failed: bad input"))
        self.assertEqual(e.exception.details, {"failure": {"name": "X", "message": "bad input"}})
        with self.assertRaises(PermanentError) as e:
            absurd_guest.TaskResultSnapshot("cancelled").unwrap()
        self.assertEqual(e.exception.message, "the awaited task was cancelled")
        with self.assertRaises(PermanentError) as e:
            absurd_guest.TaskResultSnapshot("failed", failure="odd").unwrap()
        self.assertIn("failed: (no message)", e.exception.message)

    def test_spawn_once_is_a_step_with_the_rust_sdks_idempotency_key(self):
        @task("t")
        def t(params, ctx):
            a = ctx.spawn_once("child", {"n": 1})
            b = ctx.spawn_once("child", {"n": 2}, idempotency_key="mine", queue="q2")
            ctx.sleep_for("nap", 10)
            return [a, b]

        self.assertEqual(run(None), "suspended")
        durable.HOST.now_millis += 20_000
        self.assertEqual(run(None), [child_id(1), child_id(2)])
        self.assertEqual(len(durable.HOST.spawned), 2, "replays spawn nothing")
        (_, p1, o1), (_, p2, o2) = durable.HOST.spawned
        self.assertEqual((p1, o1.idempotency_key), ({"n": 1}, "tid:$spawn:child"))
        self.assertEqual((p2, o2.idempotency_key, o2.queue), ({"n": 2}, "mine", "q2"))
        self.assertEqual(durable.HOST.checkpoints["$spawn:child#2"], json.dumps(child_id(2)))

    def test_spawn_and_wait_returns_the_childs_result(self):
        @task("t")
        def t(params, ctx):
            return ctx.spawn_and_wait("child", {"x": 1}, queue="kids", max_attempts=2)

        self.assertEqual(run(None), "suspended")
        durable.HOST.ended[child_id(1)] = ("completed", {"y": 2})
        self.assertEqual(run(None), {"y": 2})
        self.assertEqual(len(durable.HOST.spawned), 1)
        self.assertEqual([o.queue for _, o in durable.HOST.awaits], ["kids", "kids"])

    def test_spawn_and_wait_fails_permanently_when_the_child_fails(self):
        @task("t")
        def t(params, ctx):
            return ctx.spawn_and_wait("child")

        self.assertEqual(run(None), "suspended")
        durable.HOST.ended[child_id(1)] = ("failed", {"name": "BuiltinFailure", "message": "no"})
        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "$ChildFailed"))
        self.assertEqual(f.message, f"task child ({child_id(1)}) failed: no")
        self.assertEqual(json.loads(f.details)["failure"]["name"], "BuiltinFailure")

    def test_join_all_waits_for_each_in_order(self):
        @task("t")
        def t(params, ctx):
            ids = [ctx.spawn_once("child", i) for i in range(3)]
            return [s.to_json() for s in ctx.join_all(ids)]

        self.assertEqual(run(None), "suspended")
        durable.HOST.ended[child_id(1)] = ("completed", 0)
        durable.HOST.ended[child_id(2)] = ("failed", {"message": "m"})
        self.assertEqual(run(None), "suspended", "the third still runs")
        durable.HOST.ended[child_id(3)] = ("cancelled",)
        self.assertEqual(run(None), [{"state": "completed", "result": 0},
                                     {"state": "failed", "failure": {"message": "m"}},
                                     {"state": "cancelled"}])
        self.assertEqual(len(durable.HOST.spawned), 3)


class Failures(Base):
    def test_an_exception_is_retryable_and_named_after_its_class(self):
        @task("t")
        def t(params, ctx):
            raise KeyError("missing")

        f = run(None)
        self.assertEqual((f.kind, f.name, f.message), (types.ErrorKind.RETRYABLE, "KeyError", "'missing'"))
        self.assertIn("raise KeyError", json.loads(f.details)["traceback"])

    def test_permanent_error_is_permanent_with_its_details(self):
        @task("t")
        def t(params, ctx):
            raise PermanentError("no such field", details={"field": "J1234"})

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "PermanentError"))
        self.assertEqual(json.loads(f.details), {"field": "J1234"})

    def test_named_errors(self):
        @task("t")
        def t(params, ctx):
            if params == 1:
                raise RetryableError("busy", name="CalibratorBusy")
            raise PermanentError("bad", name="BadRequest")

        f = run(1)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "CalibratorBusy"))
        f = run(2)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "BadRequest"))

    def test_system_exit_fails_the_run_instead_of_escaping(self):
        @task("t")
        def t(params, ctx):
            sys.exit(3)

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "SystemExit"))

    def test_recursion_error_is_reported_as_the_hosts_stack_overflow(self):
        def down(n):
            return down(n + 1)

        @task("t")
        def t(params, ctx):
            return down(0)

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "$Trap"))
        details = json.loads(f.details)
        self.assertEqual((details["cause"], details["exception"]), ("stack overflow", "RecursionError"))
        self.assertIn("stack overflow", f.message)

    def test_memory_error_is_reported_as_the_hosts_memory_limit(self):
        @task("t")
        def t(params, ctx):
            raise MemoryError()

        f = run(None)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.RETRYABLE, "$MemoryLimit"))
        self.assertEqual(json.loads(f.details)["exception"], "MemoryError")

    def test_lone_surrogates_never_break_the_crossing_into_the_host(self):
        @task("t")
        def t(params, ctx):
            if params == "fail":
                raise ValueError("bad \ud800 text")
            logging.getLogger("s").warning("log \udcff")
            return {"text": "ok \ud800", "plain": "é"}

        out = absurd_guest.run(info(), '"ok"')
        out.encode("utf-8")
        self.assertIn("\\ud800", out)
        self.assertEqual(json.loads(out)["plain"], "é")
        wit_log.RECORDS[-1][1].encode("utf-8")
        f = run("fail")
        f.message.encode("utf-8")
        self.assertEqual(f.name, "ValueError")

    def test_a_huge_traceback_is_cut_to_its_end(self):
        @task("t")
        def t(params, ctx):
            raise ValueError("x" * 100_000)

        f = run(None)
        tb = json.loads(f.details)["traceback"]
        self.assertLessEqual(len(tb), absurd_guest.MAX_TRACEBACK_CHARS + 1)
        self.assertTrue(tb.startswith("…"))


class Params(Base):
    def setUp(self):
        super().setUp()

        @dataclasses.dataclass
        class CalParams:
            field: str = "0"
            refant: str = "103"
            gain_calmode: Literal["p", "ap"] = "ap"
            bp_minsnr: float = 5.0

        @dataclasses.dataclass
        class Inputs:
            ms_path: str
            calibration_params: Optional[CalParams] = None
            tags: list[str] = dataclasses.field(default_factory=list)

        @dataclasses.dataclass
        class P:
            inputs: Inputs
            config: Optional[dict] = None

        self.P = P

        @task("plan", params=P)
        def plan(params, ctx):
            return {"ms": params.inputs.ms_path, "cal": dataclasses.asdict(params.inputs.calibration_params)
                    if params.inputs.calibration_params else None}

    def check(self, params, field, problem):
        f = run(params, "plan")
        self.assertIsInstance(f, types.TaskError, f)
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "$InvalidParams"))
        self.assertEqual(json.loads(f.details)["path"], field)
        self.assertIn(f"field `{field}`", f.message)
        self.assertIn(problem, f.message)

    def test_valid_params_become_dataclasses(self):
        out = run({"inputs": {"ms_path": "a.ms", "calibration_params": {"bp_minsnr": 3}}}, "plan")
        self.assertEqual(out["ms"], "a.ms")
        self.assertEqual(out["cal"]["bp_minsnr"], 3.0)

    def test_each_mistake_names_its_field(self):
        self.check({}, "inputs", "missing field")
        self.check({"inputs": {"ms_path": 5}}, "inputs.ms_path", "expected a string, got integer `5`")
        self.check({"inputs": {"ms_path": "a", "calibration_params": {"gain_calmode": "x"}}},
                   "inputs.calibration_params.gain_calmode", "expected one of 'p', 'ap'")
        self.check({"inputs": {"ms_path": "a", "tags": ["ok", 2]}}, "inputs.tags[1]", "expected a string")
        self.check({"inputs": {"ms_path": "a", "bogus": 1}}, "inputs.bogus", "unknown field")
        self.check({"inputs": {"ms_path": "a", "calibration_params": {"bp_minsnr": True}}},
                   "inputs.calibration_params.bp_minsnr", "expected a number, got boolean")

    def test_params_that_are_not_json_are_invalid(self):
        durable.HOST.new_execution()
        with self.assertRaises(Err) as e:
            absurd_guest.run(info("plan"), "{nope")
        self.assertEqual(e.exception.value.name, "$InvalidParams")
        self.assertIn("not valid JSON", e.exception.value.message)

    def test_invalid_params_raised_by_the_task_names_the_field(self):
        @task("later")
        def later(params, ctx):
            raise InvalidParams("inputs.ms_path", "must end with .ms")

        f = run({}, "later")
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "$InvalidParams"))
        self.assertEqual(f.message, "invalid params: field `inputs.ms_path`: must end with .ms")


class Dispatch(Base):
    def test_several_tasks_in_one_component_dispatch_by_name(self):
        @task
        def first_task(params, ctx):
            return 1

        @task("second")
        def second(params, ctx):
            return 2

        self.assertEqual(run(None, "first-task"), 1)
        self.assertEqual(run(None, "second"), 2)
        f = run(None, "third")
        self.assertEqual((f.kind, f.name), (types.ErrorKind.PERMANENT, "$UnknownTask"))
        self.assertIn("first-task, second", f.message)

    def test_a_single_task_runs_under_any_name(self):
        @task("only")
        def only(params, ctx):
            return ctx.task_name

        self.assertEqual(run(None, "configured-name"), "configured-name")

    def test_registering_a_name_twice_is_refused(self):
        @task("dup")
        def a(params, ctx):
            pass

        with self.assertRaises(ValueError):
            task("dup")(lambda p, c: None)

    def test_current_context_is_set_during_the_run_only(self):
        @task("t")
        def t(params, ctx):
            return absurd_guest.get_current_context() is ctx

        self.assertIs(run(None), True)
        self.assertIsNone(absurd_guest.get_current_context())


class Logging(Base):
    def test_logging_reaches_the_host_log_at_its_level(self):
        @task("t")
        def t(params, ctx):
            lg = logging.getLogger("calib")
            lg.debug("hidden at the default level")
            lg.info("plan %s", "ready")
            lg.warning("careful")
            lg.error("bad")
            lg.critical("worse")
            lg.info("bad format %d", "x")
            return None

        run(None)
        L = wit_log.Level
        self.assertEqual(wit_log.RECORDS[:4], [(L.INFO, "calib: plan ready"), (L.WARN, "calib: careful"),
                                               (L.ERROR, "calib: bad"), (L.ERROR, "calib: worse")])
        self.assertEqual(wit_log.RECORDS[4][0], L.INFO)
        self.assertIn("bad format", wit_log.RECORDS[4][1])
        self.assertEqual(len(wit_log.RECORDS), 5, "debug is below the default level")

if __name__ == "__main__":
    unittest.main()
