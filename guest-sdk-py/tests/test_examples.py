"""The Python examples (examples/python) under CPython against the stand-in host. The same
modules built into components run through a real worker in host/tests/python_guests.rs."""

import importlib
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "python")
sys.path.insert(0, os.path.join(HERE, "host_stub"))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, EXAMPLES)

import absurd_guest  # noqa: E402
from test_absurd_guest import run  # noqa: E402
from wit_world.imports import durable, types  # noqa: E402


def load(module):
    absurd_guest._tasks.clear()
    sys.modules.pop(module, None)
    importlib.import_module(module)


class CalibrationPlan(unittest.TestCase):
    def setUp(self):
        durable.HOST = durable.Host()
        load("calibration_plan")

    def test_plans_and_spawns_the_next_task(self):
        out = run({"inputs": {"ms_path": "/data/2025-01-01T00:00:00.ms",
                              "calibration_params": {"refant": 104, "solve_delay": True}},
                   "outputs": {"previous": 1}}, "calibration-plan")
        self.assertEqual(out["status"], "success", out)
        plan = out["outputs"]["calibration_plan"]
        self.assertEqual(plan["solves"], ["delay", "bandpass", "gains"])
        self.assertEqual(plan["refant"], "104")
        self.assertEqual(plan["lock_path"], "/data/.2025-01-01T00:00:00.cal_lock")
        self.assertEqual(out["outputs"]["previous"], 1)
        name, params, options = durable.HOST.spawned[0]
        self.assertEqual(name, "calibration-solve")
        self.assertEqual(params["outputs"]["calibration_tables"], plan["calibration_tables"])
        self.assertEqual(options.idempotency_key, "tid:calibration-plan:calibration-solve")
        self.assertEqual(json.loads(options.headers)["chain_parent_task_id"], "tid")

    def test_bad_params_name_the_field(self):
        for params, field in [
            ({"inputs": {"ms_path": "x.txt"}}, "inputs.ms_path"),
            ({"inputs": {"ms_path": "x.ms", "calibration_params": {"gain_calmode": "a"}}},
             "inputs.calibration_params.gain_calmode"),
            ({"inputs": {"ms_path": "x.ms", "calibration_params": {"bp_minsnr": -1}}},
             "inputs.calibration_params.bp_minsnr"),
            ({"inputs": {"ms_path": "x.ms", "calibration_params": {"solve_bandpass": False, "solve_gains": False}}},
             "inputs.calibration_params"),
            ({"inputs": {}}, "inputs.ms_path"),
        ]:
            f = run(params, "calibration-plan")
            self.assertIsInstance(f, types.TaskError, params)
            self.assertEqual((f.name, json.loads(f.details)["path"]), ("$InvalidParams", field))
            self.assertEqual(f.kind, types.ErrorKind.PERMANENT)
        self.assertEqual(durable.HOST.spawned, [])


class Durable(unittest.TestCase):
    def setUp(self):
        durable.HOST = durable.Host()
        load("durable_demo")

    def test_step_sleep_event(self):
        self.assertEqual(run({"sleep_seconds": 5}, "durable"), "suspended")
        durable.HOST.now_millis += 10_000
        self.assertEqual(run({"sleep_seconds": 5}, "durable", attempt=1), "suspended")
        durable.emit_event("durable-demo", '{"go": true}')
        out = run({"sleep_seconds": 5}, "durable")
        self.assertEqual(out["event"], {"go": True})
        self.assertEqual(out["fetched"], "hello")
        self.assertEqual(out["fetched_by_run"], "rid1")


class Fanout(unittest.TestCase):
    def setUp(self):
        durable.HOST = durable.Host()
        load("fanout")

    def test_fans_out_joins_and_waits_for_the_last_child(self):
        params = {"task": "solve", "items": [{"n": 1}, {"n": 2}], "then": {"last": True}, "queue": "kids"}
        self.assertEqual(run(params, "fanout"), "suspended")
        ids = [f"00000000-0000-0000-0000-{n:012d}" for n in (1, 2, 3)]
        durable.HOST.ended[ids[0]] = ("completed", {"n": 1})
        durable.HOST.ended[ids[1]] = ("failed", {"name": "Boom", "message": "no"})
        self.assertEqual(run(params, "fanout"), "suspended", "waiting for the last child")
        durable.HOST.ended[ids[2]] = ("completed", "done")
        out = run(params, "fanout")
        self.assertEqual(out, {"children": ids[:2], "then": "done",
                               "results": [{"state": "completed", "result": {"n": 1}},
                                           {"state": "failed", "failure": {"name": "Boom", "message": "no"}}]})
        self.assertEqual([(n, p, o.queue, o.max_attempts) for n, p, o in durable.HOST.spawned],
                         [("solve", {"n": 1}, "kids", 1), ("solve", {"n": 2}, "kids", 1),
                          ("solve", {"last": True}, "kids", 1)])

    def test_a_failed_last_child_fails_the_task_and_a_timeout_is_reported(self):
        self.assertEqual(run({"task": "solve", "then": {}}, "fanout"), "suspended")
        durable.HOST.ended["00000000-0000-0000-0000-000000000001"] = ("cancelled",)
        f = run({"task": "solve", "then": {}}, "fanout")
        self.assertEqual((f.name, f.kind), ("$ChildFailed", types.ErrorKind.PERMANENT))
        durable.HOST = durable.Host()
        out = run({"task": "solve", "items": [1], "timeout_seconds": 0}, "fanout")
        self.assertEqual(out, {"timed_out": True, "children": ["00000000-0000-0000-0000-000000000001"]})
        self.assertEqual(run({"task": "solve", "item": [1]}, "fanout").name, "$InvalidParams")


if __name__ == "__main__":
    unittest.main()
