"""absurd-native: run a Python callable as an absurd-host native task.

    python -m absurd_native package.module:function [PARAMS_JSON]

The host runs this in the task's work directory. It reads params.json (PARAMS_JSON, else
$ABSURD_PARAMS_FILE, else ./params.json), calls ``function(params, ctx)``, and writes what the
function returns to result.json, atomically. ``ctx`` speaks the run's control channel (the
Unix socket in $ABSURD_CONTROL_SOCKET, docs/native-tasks.md "The control channel"):

    value = ctx.step("solve-bandpass", lambda: solve(...))   # checkpointed: a retry replays it
    ctx.heartbeat(600)                                        # extend the lease
    ctx.log("info", "message")
    ctx.spawn("imaging", {"outputs": ...}, queue="dsa110", max_attempts=3)
    ctx.emit_event("calibration.done", {...})
    ctx.sleep_for("cooldown", 300)          # durable: the process exits, the run re-runs later
    payload = ctx.await_event("ms.ready", timeout=3600)   # durable too; None at the timeout

Failures: an exception fails the run, retryably; raise ``PermanentError`` for a failure no
retry can fix. An exception with an integer ``exit_code`` attribute (the DSA-110 ErrorCode
convention: 6 resource, 7 calibration, …) makes the program exit with that code after writing
the error report. A result ``{"status": "error", ...}`` (the DSA-110 convention) fails the run too;
add ``"retryable": False`` to make it permanent.

Standard library only; Python 3.8 or later (CASA's 3.11 included). Without a control socket
(the program run by hand), steps run without checkpoints and the durable calls raise.
"""

import importlib
import json
import os
import socket
import sys
import threading
import traceback

__all__ = ["Context", "PermanentError", "ControlError", "RunEnded", "main"]

PROTOCOL_VERSION = 1
_SUN_PATH_MAX = 107
_TRACEBACK_TAIL = 8192


class PermanentError(Exception):
    """A failure that retrying cannot fix (invalid params, a missing input): no more attempts."""


class ControlError(Exception):
    """The host refused a request it lets the program handle (a bad request, a refused spawn)."""

    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RunEnded(BaseException):
    """The run is over for this process: suspended (a sleep or event wait), failed by the
    host (a limit), or lost. Derives from BaseException so that ``except Exception`` in task
    code does not swallow it; the program must exit without writing a result."""

    def __init__(self, why, message="", failure=None):
        super().__init__(message or why)
        self.why = why
        self.failure = failure


def _connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            s.connect(path)
        else:
            # Too long for sun_path: go through the directory's /proc/self/fd entry.
            fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                s.connect(f"/proc/self/fd/{fd}/{os.path.basename(path)}")
            finally:
                os.close(fd)
    except BaseException:
        s.close()
        raise
    return s


class _Channel:
    """One connection, one request at a time (a lock keeps threads from interleaving)."""

    def __init__(self, path):
        self._sock = _connect(path)
        self._reader = self._sock.makefile("rb")
        self._lock = threading.Lock()
        self._next = 0

    def call(self, op, **args):
        with self._lock:
            self._next += 1
            request = dict(args, op=op, id=self._next)
            line = json.dumps(request, separators=(",", ":"), allow_nan=False)
            self._sock.sendall(line.encode() + b"\n")
            raw = self._reader.readline()
        if not raw:
            raise RunEnded("closed", "the host closed the control channel")
        reply = json.loads(raw)
        if reply.get("ok"):
            return reply
        err = reply.get("error") or {}
        kind = err.get("kind", "error")
        message = err.get("message", "")
        if kind == "run_failed":
            raise RunEnded("failed", message, err.get("failure"))
        if kind == "run_ended":
            raise RunEnded("ended", message)
        raise ControlError(kind, message)


class Context:
    """What a task function gets besides its params."""

    def __init__(self, task, socket_path=None):
        self.task = task or {}
        self.task_id = self.task.get("task_id")
        self.run_id = self.task.get("run_id")
        self.attempt = self.task.get("attempt", 1)
        self.task_name = self.task.get("task_name")
        self.queue = self.task.get("queue")
        self.headers = self.task.get("headers") or {}
        self._channel = _Channel(socket_path) if socket_path else None

    @property
    def durable(self):
        """Whether the run has a control channel (steps are checkpointed)."""
        return self._channel is not None

    def _call(self, op, **args):
        if self._channel is None:
            raise ControlError(
                "no_channel", f"{op} needs the host's control channel (ABSURD_CONTROL_SOCKET)"
            )
        return self._channel.call(op, **args)

    def step(self, name, fn):
        """Runs ``fn()`` once per task: its JSON value is stored, and a later attempt (a retry,
        or the run re-executed after a sleep) gets the stored value without calling ``fn``."""
        if self._channel is None:
            return fn()
        begun = self._call("step_begin", name=name)
        if begun.get("done"):
            return begun.get("value")
        value = fn()
        self._call("step_complete", checkpoint=begun["checkpoint"], value=value)
        return value

    def heartbeat(self, seconds=None):
        """Extends the run's lease by ``seconds`` (default: the worker's claim timeout)."""
        if self._channel is not None:
            self._call("heartbeat", seconds=seconds)

    def log(self, level, message=None):
        """Logs through the host (in the task's span). ``ctx.log("text")`` logs at info."""
        if message is None:
            level, message = "info", level
        if self._channel is None:
            print(f"[{level}] {message}", file=sys.stderr, flush=True)
            return
        self._call("log", level=level, message=str(message))

    def spawn(self, task, params=None, queue=None, **options):
        """Spawns a task; options: max_attempts, idempotency_key, headers, retry_strategy,
        cancellation. Returns ``{"task_id", "run_id", "attempt", "created"}``."""
        reply = self._call(
            "spawn", task=task, params={} if params is None else params, queue=queue,
            options=options or None,
        )
        return {k: reply.get(k) for k in ("task_id", "run_id", "attempt", "created")}

    def emit_event(self, event, payload=None):
        self._call("emit_event", event=event, payload=payload)

    def _suspending(self, reply):
        if reply.get("suspend"):
            raise RunEnded("suspended", "the run is suspended; it runs again when it wakes")
        return reply

    def sleep_for(self, step, seconds):
        """Sleeps durably: the first time, the process exits and the run re-runs from the start
        after ``seconds``; then (with the steps before it replayed) it returns at once."""
        self._suspending(self._call("sleep_for", step=step, seconds=float(seconds)))

    def sleep_until(self, step, at):
        """``at``: an RFC 3339 string, or a timezone-aware datetime."""
        if hasattr(at, "isoformat"):
            at = at.isoformat()
        self._suspending(self._call("sleep_until", step=step, at=at))

    def await_event(self, event, step=None, timeout=None):
        """Waits durably for an event and returns its payload, or None once ``timeout``
        seconds have passed first."""
        reply = self._suspending(
            self._call("await_event", event=event, step=step, timeout=timeout)
        )
        return reply.get("payload") if reply.get("received") else None


def _write_result(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_target(spec):
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PermanentError(f"expected package.module:function, got {spec!r}")
    module = importlib.import_module(module_name)
    target = module
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise PermanentError(f"{spec} is not callable")
    return target


def _error(exc, retryable):
    message = f"{type(exc).__name__}: {exc}"
    tb = traceback.format_exc()
    return {
        "status": "error",
        "message": message,
        "errors": [message],
        "exception": type(exc).__name__,
        "traceback": tb[-_TRACEBACK_TAIL:],
        "retryable": retryable,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    # Options (`--noconfig` for casaconfig, which reads sys.argv itself) are the task's.
    positional = [a for a in argv if not a.startswith("--")]
    spec = positional[0]
    params_path = (
        positional[1]
        if len(positional) > 1
        else os.environ.get("ABSURD_PARAMS_FILE", "params.json")
    )
    result_path = os.environ.get("ABSURD_RESULT_FILE") or os.path.join(
        os.path.dirname(os.path.abspath(params_path)), "result.json"
    )
    try:
        with open(params_path) as f:
            doc = json.load(f)
        if isinstance(doc, dict) and "task" in doc and "params" in doc:
            params, task = doc["params"], doc["task"]
        else:
            params, task = doc, {}
        ctx = Context(task, os.environ.get("ABSURD_CONTROL_SOCKET"))
        target = _load_target(spec)
        result = target(params, ctx)
    except RunEnded as e:
        # Suspended: exit quietly; the host re-runs the program when the run wakes.
        # Failed or lost: the host reports (or not) on its own; nothing to write.
        if e.why != "suspended":
            print(f"absurd-native: the run ended: {e}", file=sys.stderr, flush=True)
            return 1
        return 0
    except PermanentError as e:
        traceback.print_exc()
        _write_result(result_path, _error(e, False))
        return 0
    except Exception as e:  # noqa: BLE001 - every failure becomes the run's failure
        traceback.print_exc()
        _write_result(result_path, _error(e, True))
        # An exception may carry the DSA-110 exit code of its kind (6 resource, 7 calibration…):
        # the host then classifies the failure by it.
        code = getattr(e, "exit_code", None)
        return code if isinstance(code, int) and 1 <= code <= 125 else 0
    try:
        _write_result(result_path, result)
    except (TypeError, ValueError) as e:
        traceback.print_exc()
        _write_result(result_path, _error(e, False))
    return 0


if __name__ == "__main__":
    # Run through the imported module, so that task code that does
    # `from absurd_native import PermanentError` raises the class this module catches.
    import absurd_native as _module

    sys.exit(_module.main())
