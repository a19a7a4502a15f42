"""An in-memory host for the `durable` interface, with the WIT's semantics: step names
numbered per execution, checkpoints replayed, sleeps, event waits and task-result waits that suspend (here: raise
`Suspended`, which the test harness catches, as the host ends the guest's execution)."""

import json
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Union

from componentize_py_types import Err


class Suspended(BaseException):
    """The host ended the execution inside a call (a sleep or an event wait)."""


@dataclass
class Step:
    checkpoint_name: str
    value: Optional[str]


class RetryKind(Enum):
    NONE = 0
    FIXED = 1
    EXPONENTIAL = 2


@dataclass
class RetryStrategy:
    kind: RetryKind
    base_seconds: Optional[float]
    factor: Optional[float]
    max_seconds: Optional[float]


@dataclass
class CancellationPolicy:
    max_delay: Optional[int]
    max_duration: Optional[int]


@dataclass
class SpawnOptions:
    queue: Optional[str]
    max_attempts: Optional[int]
    idempotency_key: Optional[str]
    headers: Optional[str]
    retry_strategy: Optional[RetryStrategy]
    cancellation: Optional[CancellationPolicy]


@dataclass
class AwaitOptions:
    queue: Optional[str]
    step_name: Optional[str]
    timeout_seconds: Optional[int]


@dataclass
class TaskOutcome_Completed:
    value: str


@dataclass
class TaskOutcome_Failed:
    value: str


@dataclass
class TaskOutcome_Cancelled:
    pass


TaskOutcome = Union[TaskOutcome_Completed, TaskOutcome_Failed, TaskOutcome_Cancelled]


class Host:
    def __init__(self):
        self.checkpoints = {}
        self.events = {}
        self.now_millis = 1_000_000
        self.calls = []
        self.spawned = []
        self.heartbeats = []
        self.refuse_spawn = None
        # task id -> how it ended: ("completed", result) | ("failed", failure) | ("cancelled",)
        self.ended = {}
        self.awaits = []
        self.new_execution()

    def new_execution(self):
        self.counts = {}

    def name(self, base):
        n = self.counts.get(base, 0) + 1
        self.counts[base] = n
        return base if n == 1 else f"{base}#{n}"


HOST = Host()


def begin_step(name: str) -> Step:
    HOST.calls.append(("begin_step", name))
    cp = HOST.name(name)
    return Step(cp, HOST.checkpoints.get(cp))


def complete_step(checkpoint_name: str, value: str) -> None:
    HOST.calls.append(("complete_step", checkpoint_name, value))
    json.loads(value)
    HOST.checkpoints[checkpoint_name] = value


def sleep_for(step_name: str, seconds: float) -> None:
    HOST.calls.append(("sleep_for", step_name, seconds))
    sleep_until(step_name, HOST.now_millis + int(seconds * 1000), record=False)


def sleep_until(step_name: str, unix_millis: int, record=True) -> None:
    if record:
        HOST.calls.append(("sleep_until", step_name, unix_millis))
    cp = HOST.name(step_name)
    wake = json.loads(HOST.checkpoints.setdefault(cp, json.dumps(unix_millis)))
    if wake > HOST.now_millis:
        raise Suspended(f"sleeping until {wake}")


def await_event(event: str, step_name: Optional[str], timeout_seconds: Optional[int]) -> Optional[str]:
    HOST.calls.append(("await_event", event, step_name, timeout_seconds))
    cp = HOST.name(step_name or f"$awaitEvent:{event}")
    if cp in HOST.checkpoints:
        return HOST.checkpoints[cp]
    if event in HOST.events:
        HOST.checkpoints[cp] = HOST.events[event]
        return HOST.events[event]
    if timeout_seconds == 0:
        return None
    raise Suspended(f"waiting for {event}")


def emit_event(event: str, payload: str) -> None:
    HOST.calls.append(("emit_event", event, payload))
    json.loads(payload)
    HOST.events.setdefault(event, payload)


def spawn(task_name: str, params: str, options: SpawnOptions) -> str:
    HOST.calls.append(("spawn", task_name, params, options))
    if HOST.refuse_spawn:
        raise Err(HOST.refuse_spawn)
    HOST.spawned.append((task_name, json.loads(params), options))
    return f"00000000-0000-0000-0000-{len(HOST.spawned):012d}"


def heartbeat(seconds: Optional[int]) -> None:
    HOST.heartbeats.append(seconds)


def _outcome(stored: str) -> TaskOutcome:
    v = json.loads(stored)
    if v["state"] == "completed":
        return TaskOutcome_Completed(json.dumps(v["result"]))
    if v["state"] == "failed":
        return TaskOutcome_Failed(json.dumps(v["failure"]))
    return TaskOutcome_Cancelled()


def await_task_result(task_id: str, options: AwaitOptions) -> Optional[TaskOutcome]:
    """As the host: the outcome replays from the checkpoint `$awaitTaskResult:<task-id>` (or
    the step name), `{"state", "result" | "failure"}`; a task still going suspends the run, or
    returns `None` with a timeout of 0 (the stand-in's clock does not move on its own)."""
    HOST.awaits.append((task_id, options))
    cp = HOST.name(options.step_name or f"$awaitTaskResult:{task_id}")
    if cp in HOST.checkpoints:
        return _outcome(HOST.checkpoints[cp])
    ended = HOST.ended.get(task_id)
    if ended is not None:
        state = ended[0]
        stored = {"state": state}
        if state == "completed":
            stored["result"] = ended[1]
        elif state == "failed":
            stored["failure"] = ended[1]
        HOST.checkpoints[cp] = json.dumps(stored)
        return _outcome(HOST.checkpoints[cp])
    if options.timeout_seconds == 0:
        return None
    raise Suspended(f"waiting for task {task_id}")
