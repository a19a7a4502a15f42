"""The misbehaving-guest zoo in Python: each mode misbehaves one way, and the sandbox must
contain it with the same failure as the Rust zoo (examples/zoo). ``params.mode`` picks one:

| mode | what it does | expected host outcome |
|---|---|---|
| infinite-loop | spins forever | $Timeout (or $OutOfFuel under a fuel budget) |
| deep-recursion | unbounded Python recursion; CPython's guard raises RecursionError | $Trap, cause "stack overflow" |
| deep-recursion, ``"unlimited": true`` | the same with the recursion limit lifted: frames fill the heap | $MemoryLimit |
| memory-bomb | keeps 1 MiB blocks until allocation fails | $MemoryLimit |
| huge-allocation | one step allocates ``bytes`` (default 1 GiB) at once | $MemoryLimit |
| huge-result | returns a string of ``bytes`` (default 64 MiB) | $ResultTooLarge |
| log-flood | ``lines`` log records plus ``bytes`` to stdout and stderr | completes; logs truncated |
| read-passwd | opens /etc/passwd | completes, reporting the denial |
| open-socket | TCP connect to ``addr`` (default 127.0.0.1:5432) | completes, reporting the denial |
| block-poll | blocks in a WASI poll (time.sleep) | $Timeout |
| ok | returns {"ok": true} | completes |
"""

import logging
import sys
import time

from absurd_guest import task

log = logging.getLogger("zoo")
MIB = 1024 * 1024


def recurse(n):
    return recurse(n + 1) + 1


@task("zoo")
def zoo(params, ctx):
    mode = params["mode"]
    if mode == "infinite-loop":
        x = 0
        while True:
            x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF
    if mode == "deep-recursion":
        if params.get("unlimited"):
            sys.setrecursionlimit(1_000_000_000)
        return {"depth": recurse(0)}
    if mode == "memory-bomb":
        hoard = []
        while True:
            hoard.append(bytearray(MIB))
    if mode == "huge-allocation":
        size = params.get("bytes", 1024 * MIB)
        return ctx.step("allocate", lambda: len(bytearray(size)))
    if mode == "huge-result":
        return "x" * params.get("bytes", 64 * MIB)
    if mode == "log-flood":
        lines = params.get("lines", 1_000_000)
        size = params.get("bytes", 64 * MIB)
        for i in range(lines):
            log.info("zoo: log flood line %d", i)
        line = "o" * 1023 + "\n"
        written = 0
        while written < size:
            sys.stdout.write(line)
            sys.stderr.write(line)
            written += len(line)
        return {"log_lines": lines, "stdout_bytes": written, "stderr_bytes": written}
    if mode == "read-passwd":
        try:
            with open("/etc/passwd") as f:
                return {"read": True, "content": f.read()}
        except OSError as e:
            return {"read": False, "error": str(e), "kind": type(e).__name__}
    if mode == "open-socket":
        host, _, port = params.get("addr", "127.0.0.1:5432").rpartition(":")
        try:
            import socket

            s = socket.create_connection((host, int(port)), timeout=2)
            return {"outcome": {"connected": True, "peer": str(s.getpeername())}}
        except Exception as e:  # ImportError too: the sandbox may have no socket module
            return {"outcome": {"connected": False, "error": str(e), "kind": type(e).__name__}}
    if mode == "block-poll":
        time.sleep(1_000_000)
        return {"woke": "sleep"}
    if mode == "ok":
        return {"ok": True}
    raise ValueError(f"unknown mode {mode!r}")
