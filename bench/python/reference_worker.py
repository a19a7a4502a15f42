#!/usr/bin/env python3
"""Python reference worker for the absurd-host throughput benchmark.

Runs the upstream ``absurd-sdk`` worker loop (``Absurd.start_worker`` or
``AsyncAbsurd.start_worker``) exactly as an SDK user would, with the SDK's own
defaults for everything except ``concurrency``. The registered handlers do no
work: they return their params unchanged, so the run measures the cost of the
SDK's claim/complete cycle against PostgreSQL.

Protocol with the benchmark harness:

* ``ready`` is printed on stdout (and flushed) once the client is connected,
  the queue has been checked to exist and the worker loop is about to start.
* The SDK defaults that were used are printed on stderr at start.
* SIGTERM or SIGINT asks the SDK worker to stop (``stop_worker``); the loop
  finishes what it is executing, the client is closed and the process exits
  with status 0. A signal that arrives before the worker loop has started
  (even during imports) makes the script exit with status 0 without starting
  it. A second signal while stopping exits at once with status
  128 + signal number.
* Any error (bad DSN, missing queue, worker crash) exits with status 1 and a
  message on stderr.

The script does not time anything: the harness reads the timestamps that the
database records in ``absurd.r_<queue>``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# Importing absurd_sdk (psycopg, asyncio) takes a noticeable fraction of a
# second. Until the real handlers are installed, a stop signal is only
# recorded, so that an early SIGTERM/SIGINT still ends the process with
# status 0 (the worker is then never started).
_early_signals: List[int] = []


def _record_early_signal(signum: int, _frame: Any) -> None:
    _early_signals.append(signum)


for _sig in STOP_SIGNALS:
    signal.signal(_sig, _record_early_signal)

import asyncio  # noqa: E402  (imported after the early handlers on purpose)

try:
    from absurd_sdk import Absurd, AsyncAbsurd
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"reference_worker: cannot import absurd_sdk ({exc}); "
        "run with the virtualenv that has absurd-sdk installed\n"
    )
    sys.exit(1)

PROG = "reference_worker"


def log(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="reference_worker.py",
        description=(
            "Run the upstream absurd-sdk worker (start_worker) on one queue with "
            "trivial handlers, for a throughput comparison with absurd-host. "
            "Prints 'ready' on stdout once started and runs until SIGTERM or "
            "SIGINT, then exits with status 0."
        ),
        epilog=(
            "Registered tasks: the --task-name task and 'echo'; both return their "
            "params unchanged. All other worker settings (poll interval, claim "
            "timeout, claim batch size, worker id) are the SDK's defaults and "
            "are reported on stderr at start."
        ),
    )
    parser.add_argument(
        "--dsn",
        required=True,
        help="PostgreSQL connection URL, e.g. postgresql://postgres@127.0.0.1:5432/db",
    )
    parser.add_argument(
        "--queue", required=True, help="Absurd queue to work (must already exist)"
    )
    parser.add_argument(
        "--mode",
        required=True,
        choices=("sync", "async"),
        help=(
            "sync: absurd_sdk.Absurd (psycopg Connection; a thread pool when "
            "concurrency > 1); async: absurd_sdk.AsyncAbsurd (AsyncConnection, "
            "asyncio tasks)"
        ),
    )
    parser.add_argument(
        "--concurrency",
        required=True,
        type=positive_int,
        help="value passed as start_worker(concurrency=N)",
    )
    parser.add_argument(
        "--task-name",
        default="noop",
        help="name of the task to register; an 'echo' task is registered as well (default: noop)",
    )
    return parser.parse_args(argv)


def task_names(primary: str) -> List[str]:
    names = [primary]
    if "echo" not in names:
        names.append("echo")
    return names


def sdk_defaults(start_worker: Callable[..., Any]) -> Dict[str, Any]:
    """Read the keyword defaults of the installed SDK's start_worker."""
    defaults: Dict[str, Any] = {}
    for name, param in inspect.signature(start_worker).parameters.items():
        if param.default is not inspect.Parameter.empty:
            defaults[name] = param.default
    return defaults


def report_defaults(mode: str, concurrency: int, start_worker: Callable[..., Any]) -> None:
    defaults = sdk_defaults(start_worker)
    batch = defaults.get("batch_size")
    worker_id = defaults.get("worker_id")
    parts = [
        f"mode={mode}",
        f"concurrency={concurrency}",
        f"poll_interval={defaults.get('poll_interval')!r}s (SDK default)",
        f"claim_timeout={defaults.get('claim_timeout')!r}s (SDK default)",
        (
            f"batch_size={batch!r} (SDK default; None means batch_size = "
            f"concurrency = {concurrency})"
        ),
        (
            f"worker_id={worker_id!r} (SDK default; None means "
            "'<hostname>:<pid>')"
        ),
    ]
    log("start_worker settings: " + ", ".join(parts))


def check_queue(queue: str, queues: List[str]) -> None:
    if queue not in queues:
        known = ", ".join(sorted(queues)) or "none"
        raise RuntimeError(
            f"queue {queue!r} does not exist in this database (queues: {known}); "
            "create it first, e.g. with 'absurdctl create-queue'"
        )


def say_ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def run_sync(args: argparse.Namespace) -> int:
    # Signal handlers go in first, so a stop request that arrives while
    # connecting is honoured (the worker then never starts).
    stopping = threading.Event()
    holder: Dict[str, Absurd] = {}

    def keep_stopping() -> None:
        # start_worker sets the SDK's running flag to True when it begins, so
        # a stop_worker() that lands just before that would be lost. Re-assert
        # the stop every 50 ms until the process exits (daemon thread, so it
        # never delays exit; stop_worker only clears a flag).
        while True:
            client = holder.get("client")
            if client is not None:
                client.stop_worker()
            time.sleep(0.05)

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log(f"second {name} while stopping, exiting now")
            os._exit(128 + signum)
        log(f"{name} received, stopping worker")
        stopping.set()
        threading.Thread(target=keep_stopping, daemon=True).start()

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    if _early_signals:
        on_signal(_early_signals[0], None)

    client = Absurd(args.dsn, queue_name=args.queue)
    holder["client"] = client
    try:
        for name in task_names(args.task_name):

            @client.register_task(name)
            def handler(params: Any, ctx: Any) -> Any:
                return params

        check_queue(args.queue, client.list_queues())
        if stopping.is_set():
            log("stop requested before the worker started")
            return 0

        report_defaults("sync", args.concurrency, client.start_worker)
        say_ready()
        client.start_worker(concurrency=args.concurrency)
        log("worker stopped")
    finally:
        client.close()
    return 0


async def run_async(args: argparse.Namespace) -> int:
    # The client does not connect in its constructor, so it exists before the
    # signal handlers are installed and they can always reach it.
    client = AsyncAbsurd(args.dsn, queue_name=args.queue)
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:
            log(f"second {name} while stopping, exiting now")
            os._exit(128 + signum)
        stopping = True
        log(f"{name} received, stopping worker")
        client.stop_worker()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    if _early_signals:
        on_signal(_early_signals[0])

    try:
        for name in task_names(args.task_name):

            @client.register_task(name)
            async def handler(params: Any, ctx: Any) -> Any:
                return params

        # list_queues opens the client's connection, so start_worker does not
        # suspend before it sets its running flag (see below).
        check_queue(args.queue, await client.list_queues())
        if stopping:
            log("stop requested before the worker started")
            return 0

        report_defaults("async", args.concurrency, client.start_worker)
        # The worker coroutine's first step (which sets the SDK's running
        # flag) is queued here, before any later signal callback can run, so
        # a stop requested after this point is never overwritten.
        worker = asyncio.ensure_future(client.start_worker(concurrency=args.concurrency))
        say_ready()
        await worker
        log("worker stopped")
    finally:
        await client.close()
    return 0


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    try:
        if args.mode == "sync":
            return run_sync(args)
        return asyncio.run(run_async(args))
    except Exception as exc:
        log(f"error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
