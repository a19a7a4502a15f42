"""`calibration-plan`, the Python twin of examples/pipeline: plans a DSA-110 calibration of one
measurement set in the checkpointed step `plan`, then spawns the chain's next task.

Params: {"config": <object | YAML path | null>, "inputs": {"ms_path": "…/x.ms",
"calibration_params": {...}}, "outputs": {...}, "chain_name": "...", "next_task": "..."}.
A wrong field fails the task permanently with $InvalidParams, naming the field.
"""

import logging
from dataclasses import asdict, dataclass, field
from typing import Literal, Optional, Union

from absurd_guest import InvalidParams, task

log = logging.getLogger("calibration-plan")


@dataclass
class CalibrationParams:
    field: Union[str, int] = "0"
    refant: Union[str, int] = "103"
    solve_delay: bool = False
    solve_bandpass: bool = True
    solve_gains: bool = True
    gain_solint: str = "inf"
    gain_calmode: Literal["p", "ap"] = "ap"
    bp_minsnr: float = 5.0
    gain_minsnr: float = 3.0


@dataclass
class Inputs:
    ms_path: str
    calibration_params: CalibrationParams = field(default_factory=CalibrationParams)


@dataclass
class Params:
    inputs: Inputs
    config: Union[dict, str, None] = None
    outputs: Optional[dict] = None
    chain_name: str = "calibrator"
    next_task: str = "calibration-solve"


def make_plan(inputs: Inputs) -> dict:
    ms, cp = inputs.ms_path.rstrip("/"), inputs.calibration_params
    if not ms.endswith(".ms") or len(ms) == 3 or ms.endswith("/.ms"):
        raise InvalidParams("inputs.ms_path", f"must name a measurement set ending in .ms, got {inputs.ms_path!r}")
    for name in ("bp_minsnr", "gain_minsnr"):
        if not getattr(cp, name) > 0:
            raise InvalidParams(f"inputs.calibration_params.{name}", f"must be a positive number, got {getattr(cp, name)}")
    prefix = f"{ms[:-3]}_{cp.field}"
    solves = [s for s, on in (("delay", cp.solve_delay), ("bandpass", cp.solve_bandpass), ("gains", cp.solve_gains)) if on]
    if not solves:
        raise InvalidParams("inputs.calibration_params", "solve_delay, solve_bandpass and solve_gains are all false: nothing to solve")
    suffix = {"delay": "kcal", "bandpass": "bpcal", "gains": "gpcal"}
    directory, _, stem = ms[:-3].rpartition("/")
    return {"ms_path": ms, "field": str(cp.field), "refant": str(cp.refant), "table_prefix": prefix,
            "lock_path": f"{directory or '.'}/.{stem}.cal_lock", "solves": solves,
            "calibration_tables": [f"{prefix}_{suffix[s]}" for s in solves],
            "gain_solint": cp.gain_solint, "gain_calmode": cp.gain_calmode,
            "bp_minsnr": cp.bp_minsnr, "gain_minsnr": cp.gain_minsnr}


@task("calibration-plan", params=Params)
def calibration_plan(params: Params, ctx):
    plan = make_plan(params.inputs)  # validated before the step: bad params fail alike on every attempt
    plan = ctx.step("plan", lambda: plan)
    log.info("%s solves %s with refant %s", plan["ms_path"], plan["solves"], plan["refant"])
    outputs = {**(params.outputs or {}), "ms_path": plan["ms_path"],
               "calibration_tables": plan["calibration_tables"], "calibration_plan": plan}
    next_id = ctx.spawn(
        params.next_task,
        {"config": params.config, "inputs": asdict(params.inputs), "outputs": outputs, "chain_name": params.chain_name},
        idempotency_key=f"{ctx.task_id}:{ctx.task_name}:{params.next_task}",
        headers={"chain_name": params.chain_name, "chain_parent_task_id": ctx.task_id},
    )["task_id"]
    return {"status": "success", "outputs": outputs, "chain_next_task": params.next_task,
            "chain_next_task_id": next_id,
            "message": f"planned {', '.join(plan['solves'])} for {plan['ms_path']}; spawned {params.next_task}"}
