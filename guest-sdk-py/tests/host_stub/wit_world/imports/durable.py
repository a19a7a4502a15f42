"""An in-memory host for the `durable` interface, with the WIT's semantics: step names
numbered per execution, checkpoints replayed, sleeps and event waits that suspend (here: raise
`Suspended`, which the test harness catches, as the host ends the guest's execution)."""

import json
from dataclasses import dataclass
from typing import Optional

from componentize_py_types import Err


class Suspended(BaseException):
    """The host ended the execution inside a call (a sleep or an event wait)."""


@dataclass
class Step:
    checkpoint_name: str
    value: Optional[str]


@dataclass
class SpawnOptions:
    queue: Optional[str]
    max_attempts: Optional[int]
    idempotency_key: Optional[str]
    headers: Optional[str]


class Host:
    def __init__(self):
        self.checkpoints = {}
        self.events = {}
        self.now_millis = 1_000_000
        self.calls = []
        self.spawned = []
        self.heartbeats = []
        self.refuse_spawn = None
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
