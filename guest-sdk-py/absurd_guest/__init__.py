"""absurd_guest: write Absurd task components for absurd-host in Python.

A module of ``@task`` functions, built with ``absurd-host build-py app.py -o app.wasm``, is a
WebAssembly component of the ``absurd:task@0.2.0`` world, interchangeable with one built with
the Rust SDK. The context mirrors the Absurd Python SDK's ``TaskContext``::

    import logging
    from absurd_guest import task, PermanentError

    log = logging.getLogger(__name__)

    @task("greet")
    def greet(params, ctx):
        name = ctx.step("pick-name", lambda: params.get("name", "world"))
        ctx.sleep_for("pause", 5)
        log.info("greeting %s", name)
        return {"greeting": f"hello {name}"}

Durable semantics are Absurd's: after a sleep, an event wait or a crash the task runs again
from the top, and completed steps return their stored values instead of running again. A
suspension never shows up in Python: the host ends the execution inside the call and settles
the run itself.

Failures: a ``TaskError`` (``PermanentError``, ``RetryableError``, ``InvalidParams``) fails
the run with its name and message; any other exception fails it as retryable, named after the
exception's class with the traceback in ``details``. CPython's own guards report under the
host's names for the same conditions: ``RecursionError`` (CPython's stack-overflow check) as
``$Trap`` with cause ``stack overflow``, ``MemoryError`` as ``$MemoryLimit``.
"""

import dataclasses
import datetime as _dt
import json
import logging
import math
import traceback

from . import _params
from ._params import InvalidField

__all__ = [
    "task",
    "TaskContext",
    "TaskError",
    "RetryableError",
    "PermanentError",
    "InvalidParams",
    "TimeoutError",
    "TaskResultSnapshot",
    "CHILD_FAILED",
    "get_current_context",
    "registered_tasks",
]

# The generated bindings (`componentize-py bindings`): present inside the component; the unit
# tests put a stand-in with the same interface on the path.
from wit_world.imports import durable as _durable  # noqa: E402
from wit_world.imports import log as _log  # noqa: E402
from wit_world.imports import types as _types  # noqa: E402
from componentize_py_types import Err as _Err  # noqa: E402

#: The most of a traceback kept in a failure's details (the host also caps details).
MAX_TRACEBACK_CHARS = 8192
#: The longest await timeout the WIT can carry (u32 seconds).
MAX_TIMEOUT_SECONDS = 2**32 - 1
#: The failure name of ``TaskResultSnapshot.unwrap`` and ``ctx.spawn_and_wait`` for a child
#: that failed or was cancelled (the Rust SDK's ``CHILD_FAILED``).
CHILD_FAILED = "$ChildFailed"


class TaskError(Exception):
    """A failure with a name, a message and optional JSON details.

    Retryable unless ``permanent`` is true. Raise it (or a subclass) from a task.
    """

    permanent = False

    def __init__(self, message: str, *, name: str = None, details=None, permanent: bool = None):
        super().__init__(message)
        self.message = str(message)
        self.name = name or type(self).__name__
        self.details = details
        if permanent is not None:
            self.permanent = permanent


class RetryableError(TaskError):
    """A failure retried according to the task's retry policy (the default for exceptions)."""


class PermanentError(TaskError):
    """A failure that fails the task at once, without further attempts."""

    permanent = True


class InvalidParams(PermanentError):
    """Params that do not fit: a permanent ``$InvalidParams`` naming the field."""

    def __init__(self, field: str, problem: str):
        message = f"invalid params: field `{field}`: {problem}" if field else f"invalid params: {problem}"
        super().__init__(message, name="$InvalidParams", details={"path": field, "error": problem})
        self.field = field
        self.problem = problem


class TimeoutError(TaskError, TimeoutError):  # noqa: A001 (as the Absurd Python SDK names it)
    """``await_event`` or ``await_task_result`` with a timeout: nothing arrived in time."""


@dataclasses.dataclass(frozen=True)
class TaskResultSnapshot:
    """How an awaited task ended (the Absurd Python SDK's ``TaskResultSnapshot``).

    ``state`` is ``"completed"`` (``result`` is its result), ``"failed"`` (``failure`` is its
    failure, ``{"name", "message", ...}``) or ``"cancelled"``.
    """

    state: str
    result: object = None
    failure: object = None

    @property
    def completed(self) -> bool:
        return self.state == "completed"

    def unwrap(self, what: str = "the awaited task"):
        """The result; a failed or cancelled task raises a ``PermanentError`` named
        ``$ChildFailed`` (its failure in ``details["failure"]``)."""
        if self.state == "completed":
            return self.result
        if self.state == "failed":
            message = self.failure.get("message") if isinstance(self.failure, dict) else None
            if not isinstance(message, str):
                message = "(no message)"
            raise PermanentError(f"{what} failed: {message}", name=CHILD_FAILED,
                                 details={"failure": self.failure})
        raise PermanentError(f"{what} was {self.state}", name=CHILD_FAILED)

    def to_json(self) -> dict:
        """As the SDKs checkpoint it: ``{"state", "result" | "failure"}``."""
        if self.state == "completed":
            return {"state": "completed", "result": self.result}
        if self.state == "failed":
            return {"state": "failed", "failure": self.failure}
        return {"state": self.state}


# --- logging ----------------------------------------------------------------------------------

_LEVELS = (
    (logging.ERROR, _log.Level.ERROR),
    (logging.WARNING, _log.Level.WARN),
    (logging.INFO, _log.Level.INFO),
    (logging.DEBUG, _log.Level.DEBUG),
)


def _host_level(levelno: int):
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return _log.Level.TRACE


class HostLogHandler(logging.Handler):
    """Sends records to the host's log, which tags them with the run's task and run ids."""

    def emit(self, record):
        try:
            message = self.format(record)
        except Exception:  # a bad format string must not fail the task
            message = f"{record.msg!r} (unformattable: {record.args!r})"
        _log.log(_host_level(record.levelno), _text(message))


_handler = HostLogHandler()
_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
_root = logging.getLogger()
if not any(isinstance(h, HostLogHandler) for h in _root.handlers):
    _root.addHandler(_handler)
_root.setLevel(logging.INFO)


# --- the context ------------------------------------------------------------------------------


def _dumps(value, what: str) -> str:
    try:
        text = json.dumps(_params.to_json_value(value), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"), default=_params.to_json_value_strict)
    except (TypeError, ValueError) as e:
        raise TaskError(f"{what} is not JSON: {e}", name="$GuestError") from e
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot cross into the host as UTF-8: escaped instead, the host then
        # decides (PostgreSQL's jsonb refuses it, which fails the run as $InvalidResult).
        text = json.dumps(_params.to_json_value(value), ensure_ascii=True, allow_nan=False,
                          separators=(",", ":"), default=_params.to_json_value_strict)
    return text


def _timeout_seconds(what: str, timeout):
    """A timeout (seconds or a ``timedelta``) as the WIT's whole seconds, rounded up."""
    if timeout is None:
        return None
    if isinstance(timeout, _dt.timedelta):
        timeout = timeout.total_seconds()
    t = float(timeout)
    if not math.isfinite(t) or t < 0 or t > MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{what}: timeout must be 0..{MAX_TIMEOUT_SECONDS} seconds, got {timeout!r}")
    return math.ceil(t)


_RETRY_KINDS = {"none": "NONE", "fixed": "FIXED", "exponential": "EXPONENTIAL"}


def _retry_strategy(task_name: str, strategy):
    """The Absurd SDK's ``retry_strategy`` dict as the WIT's record (``None`` for the host's)."""
    if strategy is None:
        return None
    if not isinstance(strategy, dict):
        raise ValueError(f"spawn `{task_name}`: retry_strategy must be a dict, got {strategy!r}")
    unknown = sorted(set(strategy) - {"kind", "base_seconds", "factor", "max_seconds"})
    if unknown:
        raise ValueError(f"spawn `{task_name}`: retry_strategy has unknown keys {unknown} "
                         "(known: kind, base_seconds, factor, max_seconds)")
    kind = strategy.get("kind")
    if kind not in _RETRY_KINDS:
        raise ValueError(f"spawn `{task_name}`: retry_strategy kind must be one of "
                         f"{sorted(_RETRY_KINDS)}, got {kind!r}")

    def seconds(key):
        v = strategy.get(key)
        return None if v is None else float(v)

    return _durable.RetryStrategy(kind=getattr(_durable.RetryKind, _RETRY_KINDS[kind]),
                                  base_seconds=seconds("base_seconds"), factor=seconds("factor"),
                                  max_seconds=seconds("max_seconds"))


def _cancellation(task_name: str, policy):
    """The Absurd SDK's ``cancellation`` dict as the WIT's record (``None`` for none)."""
    if policy is None:
        return None
    if not isinstance(policy, dict):
        raise ValueError(f"spawn `{task_name}`: cancellation must be a dict, got {policy!r}")
    unknown = sorted(set(policy) - {"max_delay", "max_duration"})
    if unknown:
        raise ValueError(f"spawn `{task_name}`: cancellation has unknown keys {unknown} "
                         "(known: max_delay, max_duration)")
    values = {}
    for key in ("max_delay", "max_duration"):
        v = policy.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 2**64):
            raise ValueError(f"spawn `{task_name}`: cancellation {key} must be whole seconds >= 0, got {v!r}")
        values[key] = v
    return _durable.CancellationPolicy(**values)


def _text(s) -> str:
    """`s` as a string that crosses into the host (lone surrogates replaced)."""
    s = str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


class TaskContext:
    """What a task gets besides its params: its ids and Absurd's durable operations."""

    def __init__(self, info):
        self.task_id = info.task_id
        self.run_id = info.run_id
        self.attempt = info.attempt
        self.queue_name = info.queue
        self.task_name = info.task_name
        self._headers_text = info.headers
        self._headers = None

    def __repr__(self):
        return f"TaskContext(task={self.task_name!r}, task_id={self.task_id}, run_id={self.run_id}, attempt={self.attempt})"

    @property
    def headers(self) -> dict:
        """The task's headers (a dict, empty when it has none)."""
        if self._headers is None:
            parsed = json.loads(self._headers_text) if self._headers_text else {}
            self._headers = parsed if isinstance(parsed, dict) else {}
        return self._headers

    # steps

    def step(self, name: str, fn):
        """Runs ``fn()`` as the checkpointed step ``name``, or returns its stored value.

        The value is stored as JSON (a dataclass as its fields), so a replay returns what
        ``json.loads`` gives back. Repeated names in one execution are numbered by the host
        (``name``, ``name#2``, …), as the Absurd SDKs do.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("a step name must be a non-empty string")
        begun = _durable.begin_step(name)
        if begun.value is not None:
            return json.loads(begun.value)
        value = fn()
        text = _dumps(value, f"the value of step `{begun.checkpoint_name}`")
        try:
            _durable.complete_step(begun.checkpoint_name, text)
        except _Err as e:
            raise RetryableError(f"step `{begun.checkpoint_name}` could not be stored: {e.value}",
                                 name="$HostError") from None
        return value

    def run_step(self, name_or_fn=None):
        """Decorator: runs the function as a step and replaces it with the step's value.

        ``@ctx.run_step`` names the step after the function; ``@ctx.run_step("name")`` names it.
        """
        if callable(name_or_fn):
            return self.step(name_or_fn.__name__, name_or_fn)

        def decorator(fn):
            return self.step(name_or_fn or fn.__name__, fn)

        return decorator

    # time

    def sleep_for(self, step_name: str, duration) -> None:
        """Sleeps ``duration`` seconds (a number or a ``timedelta``) as the step ``step_name``."""
        if isinstance(duration, _dt.timedelta):
            duration = duration.total_seconds()
        seconds = float(duration)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"sleep_for `{step_name}`: duration must be a finite number of seconds >= 0, got {duration!r}")
        _durable.sleep_for(step_name, seconds)

    def sleep_until(self, step_name: str, wake_at) -> None:
        """Sleeps until ``wake_at``: an aware ``datetime`` (naive means UTC) or Unix seconds."""
        if isinstance(wake_at, _dt.datetime):
            if wake_at.tzinfo is None:
                wake_at = wake_at.replace(tzinfo=_dt.timezone.utc)
            millis = math.floor(wake_at.timestamp() * 1000)
        else:
            seconds = float(wake_at)
            if not math.isfinite(seconds):
                raise ValueError(f"sleep_until `{step_name}`: not a time: {wake_at!r}")
            millis = math.floor(seconds * 1000)
        millis = max(-(2**63), min(2**63 - 1, millis))
        _durable.sleep_until(step_name, millis)

    # events

    def await_event(self, event_name: str, step_name: str = None, timeout=None):
        """Waits for the queue event ``event_name`` and returns its payload.

        Until it is emitted the run is suspended. With ``timeout`` (seconds, rounded up to a
        whole second), raises ``absurd_guest.TimeoutError`` if it did not arrive in time.
        """
        seconds = _timeout_seconds(f"await_event `{event_name}`", timeout)
        payload = _durable.await_event(event_name, step_name, seconds)
        if payload is None:
            raise TimeoutError(f'Timed out waiting for event "{event_name}"', name="TimeoutError")
        return json.loads(payload)

    def emit_event(self, event_name: str, payload=None) -> None:
        """Emits the queue event ``event_name`` (the first emit of a name wins)."""
        if not event_name:
            raise ValueError("event_name must be a non-empty string")
        text = _dumps(payload, f"the payload of event `{event_name}`")
        try:
            _durable.emit_event(event_name, text)
        except _Err as e:
            raise RetryableError(f"emitting event `{event_name}` failed: {e.value}", name="$HostError") from None

    # other tasks

    def spawn(self, task_name: str, params=None, *, queue: str = None, max_attempts: int = None,
              idempotency_key: str = None, headers: dict = None, retry_strategy: dict = None,
              cancellation: dict = None) -> dict:
        """Spawns ``task_name`` with ``params``; returns ``{"task_id": ...}``.

        ``queue`` defaults to this task's queue. The host allows only the task names (and
        queues) the task type was granted (``spawn_tasks`` in ``absurd-host.toml``). As in the
        Absurd Python SDK, ``retry_strategy`` is ``{"kind": "none" | "fixed" | "exponential",
        "base_seconds", "factor", "max_seconds"}`` and ``cancellation`` is ``{"max_delay",
        "max_duration"}`` (seconds). The spawned task is this task's child: cancelling this
        task cancels it too while it still runs.

        A spawn is not a step: a re-run spawns again unless ``idempotency_key`` is set (or use
        ``spawn_once``).
        """
        options = _durable.SpawnOptions(
            queue=queue,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            headers=None if headers is None else _dumps(headers, "spawn headers"),
            retry_strategy=_retry_strategy(task_name, retry_strategy),
            cancellation=_cancellation(task_name, cancellation),
        )
        text = _dumps(params, f"the params of spawned task `{task_name}`")
        try:
            task_id = _durable.spawn(task_name, text, options)
        except _Err as e:
            raise RetryableError(f"spawning `{task_name}` failed: {e.value}", name="$HostError") from None
        return {"task_id": task_id}

    def spawn_once(self, task_name: str, params=None, **options) -> str:
        """Spawns ``task_name`` as the checkpointed step ``$spawn:<task_name>`` and returns its
        task id: a re-run returns the same id, never a second task.

        Without ``idempotency_key`` one is made from this task's id and the step's checkpoint
        name, as the Rust SDK's ``spawn_once`` does (so a Rust and a Python component resume
        each other's spawns). Takes ``spawn``'s keyword options.
        """
        begun = _durable.begin_step(f"$spawn:{task_name}")
        if begun.value is not None:
            stored = json.loads(begun.value)
            if not isinstance(stored, str):
                raise PermanentError(f"stored value of step `{begun.checkpoint_name}` is not a task id: {begun.value[:200]}",
                                     name="$CheckpointMismatch")
            return stored
        if options.get("idempotency_key") is None:
            options["idempotency_key"] = f"{self.task_id}:{begun.checkpoint_name}"
        task_id = self.spawn(task_name, params, **options)["task_id"]
        try:
            _durable.complete_step(begun.checkpoint_name, json.dumps(task_id))
        except _Err as e:
            raise RetryableError(f"step `{begun.checkpoint_name}` could not be stored: {e.value}",
                                 name="$HostError") from None
        return task_id

    def await_task_result(self, task_id, queue_name: str = None, timeout=None,
                          step_name: str = None) -> TaskResultSnapshot:
        """Waits for the task ``task_id`` (of ``queue_name``, default this task's queue) to end
        and returns a ``TaskResultSnapshot``.

        Until it ends the run is suspended, holding no worker slot (so, unlike the Absurd
        Python SDK, waiting for a task of the same queue is fine), and runs again when it does;
        the outcome then replays from the checkpoint ``$awaitTaskResult:<task_id>`` (or
        ``step_name``). With ``timeout`` (seconds, rounded up to a whole second), raises
        ``absurd_guest.TimeoutError`` if the task had not ended in time. ``task_id`` may also be
        what ``spawn`` returned (``{"task_id": ...}``). Other queues need a grant
        (``spawn_queues``).
        """
        if isinstance(task_id, dict) and "task_id" in task_id:
            task_id = task_id["task_id"]
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"await_task_result: task_id must be a task id (a string), got {task_id!r}")
        seconds = _timeout_seconds(f"await_task_result `{task_id}`", timeout)
        options = _durable.AwaitOptions(queue=queue_name, step_name=step_name, timeout_seconds=seconds)
        outcome = _durable.await_task_result(task_id, options)
        if outcome is None:
            raise TimeoutError(f'Timed out waiting for task "{task_id}"', name="TimeoutError")
        if isinstance(outcome, _durable.TaskOutcome_Completed):
            return TaskResultSnapshot("completed", result=json.loads(outcome.value))
        if isinstance(outcome, _durable.TaskOutcome_Failed):
            return TaskResultSnapshot("failed", failure=json.loads(outcome.value))
        return TaskResultSnapshot("cancelled")

    def spawn_and_wait(self, task_name: str, params=None, **options):
        """Spawns ``task_name`` (replay-safe, as ``spawn_once``) and waits for it; returns its
        result. A child that fails or is cancelled fails this run permanently with
        ``$ChildFailed`` (the child's failure in ``details["failure"]``). Takes ``spawn``'s
        keyword options; ``queue`` is also where the child is awaited.
        """
        task_id = self.spawn_once(task_name, params, **options)
        snapshot = self.await_task_result(task_id, options.get("queue"))
        return snapshot.unwrap(f"task {task_name} ({task_id})")

    def join_all(self, task_ids, queue_name: str = None) -> list:
        """Waits for every task of ``task_ids`` (all of ``queue_name``, default this task's
        queue) and returns their ``TaskResultSnapshot``s in the same order: the fan-in after a
        fan-out of spawns. The run is suspended while any of them still runs, and runs again
        as they end; outcomes already known replay from their checkpoints.
        """
        return [self.await_task_result(t, queue_name) for t in task_ids]

    def heartbeat(self, seconds: int = None) -> None:
        """Extends the run's lease by ``seconds`` (default: the claim timeout)."""
        _durable.heartbeat(seconds)


_current = None


def get_current_context():
    """The context of the task running now, or ``None`` outside a task."""
    return _current


# --- registration and dispatch ----------------------------------------------------------------


@dataclasses.dataclass
class _Task:
    name: str
    fn: object
    params: object


_tasks = {}


def registered_tasks() -> dict:
    """Task name -> function, as registered with ``@task``."""
    return {name: t.fn for name, t in _tasks.items()}


def task(name_or_fn=None, *, params=None):
    """Registers a task: ``@task``, ``@task("name")`` or ``@task("name", params=Dataclass)``.

    The function is called as ``fn(params, ctx)`` and returns the task's result (anything
    ``json.dumps`` takes, or a dataclass). With ``params=`` a dataclass, params are checked
    against it first and a mismatch fails the task permanently with ``$InvalidParams``,
    naming the field. The name defaults to the function's name with ``_`` as ``-``.

    A component may hold several tasks: the run's task name picks one. A component with a
    single task runs it whatever name the host's configuration gives the task type.
    """

    def register(fn, explicit=None):
        tname = explicit or fn.__name__.replace("_", "-")
        if tname in _tasks:
            raise ValueError(f"task `{tname}` is registered twice")
        if params is not None and not (dataclasses.is_dataclass(params) and isinstance(params, type)):
            raise TypeError(f"task `{tname}`: params= must be a dataclass, got {params!r}")
        _tasks[tname] = _Task(tname, fn, params)
        return fn

    if callable(name_or_fn):
        return register(name_or_fn)

    def decorator(fn):
        return register(fn, name_or_fn)

    return decorator


def _traceback_text(exc) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-MAX_TRACEBACK_CHARS:]
    return text


def _failure(exc):
    """The WIT task-error for an exception."""
    if isinstance(exc, TaskError):
        kind = _types.ErrorKind.PERMANENT if exc.permanent else _types.ErrorKind.RETRYABLE
        details = exc.details
        name, message = exc.name, exc.message
    elif isinstance(exc, RecursionError):
        # CPython stops a runaway recursion itself, before the wasm stack overflows: reported
        # as the host reports a guest's stack overflow, so a Python and a Rust guest fail alike.
        kind = _types.ErrorKind.RETRYABLE
        name = "$Trap"
        message = f"the guest trapped: stack overflow (Python: RecursionError: {exc})"
        details = {"cause": "stack overflow", "exception": "RecursionError",
                   "traceback": _traceback_text(exc)}
    elif isinstance(exc, MemoryError):
        # An allocation CPython refused without growing the memory (the host's memory limit
        # traps a growth past it as $MemoryLimit): reported under the same name.
        kind = _types.ErrorKind.RETRYABLE
        name = "$MemoryLimit"
        message = f"the guest ran out of memory (Python: MemoryError: {exc})"
        details = {"cause": "MemoryError", "exception": "MemoryError", "traceback": _traceback_text(exc)}
    else:
        kind = _types.ErrorKind.RETRYABLE
        name, message = type(exc).__name__, str(exc)
        details = {"traceback": _traceback_text(exc)}
    if details is not None:
        try:
            details = json.dumps(details, ensure_ascii=True, default=str)
        except (TypeError, ValueError):
            details = json.dumps(_text(details))
    return _types.TaskError(kind=kind, name=_text(name), message=_text(message), details=details)


def _pick(task_name: str):
    found = _tasks.get(task_name)
    if found is not None:
        return found
    if len(_tasks) == 1:
        return next(iter(_tasks.values()))
    known = ", ".join(sorted(_tasks)) or "none (use @task)"
    raise PermanentError(f"this component has no task `{task_name}` (its tasks: {known})", name="$UnknownTask")


def _decode_params(t: _Task, text: str):
    if text is None or not text.strip():
        value = None
    else:
        try:
            value = json.loads(text)
        except ValueError as e:
            raise InvalidParams("", f"not valid JSON: {e}") from None
    if t.params is None:
        return value
    try:
        return _params.convert(t.params, value)
    except InvalidField as e:
        raise InvalidParams(e.path, e.problem) from None


def run(info, params: str) -> str:
    """The world's export: runs the task ``info.task_name`` (see ``absurd_guest._world``)."""
    global _current
    ctx = TaskContext(info)
    _current = ctx
    try:
        t = _pick(info.task_name)
        value = _decode_params(t, params)
        result = t.fn(value, ctx)
        return _dumps(result, f"the result of task `{t.name}`")
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # every way a task can fail
        raise _Err(_failure(exc)) from None
    finally:
        _current = None
