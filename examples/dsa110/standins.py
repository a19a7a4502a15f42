"""Stand-ins for the DSA-110 pipeline's stages (dsa110-spec §1.5), for tests and demos.

Each function is an absurd-native entry point ``function(params, ctx)`` (python/absurd_native.py)
that keeps its stage's input/output contract and writes real, small files into a stage
directory, without the pipeline's science:

    python -m absurd_native standins:imaging            (examples/dsa110 and python/ on PYTHONPATH)

Params have the pipeline's shape ``{"config", "inputs", "outputs", "chain_name"}``. Every stage
returns ``{"status": "success", "outputs": <the outputs it got, plus its own>, "message"}``, so
that a chain carries each stage's outputs to the next (the seed's ``ctx.outputs``).

Common inputs (the workflow's ``inputs`` reach every node):

- ``inputs.output_dir``: the stage directory (required); every file goes under it.
- ``inputs.standin_fail``: a stage name, or a list of them: that stage fails permanently
  (``PermanentError``) with "stand-in failure requested for <stage>". For tests of failure paths.

Each call appends one JSON line ``{"stage", "task_id", "attempt", ...}`` to
``<output_dir>/standins.log``, so a test can tell which stage ran in which attempt.

``calibration_solve_casa`` and ``calibration_apply_casa`` run the real CASA calibration of
examples/casa/calibrate.py (they need the CASA venv: run them with examples/casa/run-casa).
``calibration_solve`` and ``calibration_apply`` are stdlib-only stand-ins that write table
directories without solving anything. README.md lists what each stand-in simplifies.

Standard library only (Python 3.8+), like absurd_native.
"""

import datetime
import json
import os
import shutil
import struct
import time

from absurd_native import PermanentError

LOG_NAME = "standins.log"


class InvalidParams(PermanentError):
    """Validation failed: the params cannot work, whatever the number of attempts."""


# ---- helpers -------------------------------------------------------------------------------


def _obj(params, key):
    value = params.get(key) if isinstance(params, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParams(f"Validation failed: {key} must be an object")
    return value


def _stage(params, ctx, name):
    """Checks the common params, honours standin_fail, logs the call; returns (inputs,
    outputs, output_dir)."""
    if not isinstance(params, dict):
        raise InvalidParams("Validation failed: params must be an object")
    inputs = _obj(params, "inputs")
    outputs = _obj(params, "outputs")
    fail = inputs.get("standin_fail")
    if fail == name or (isinstance(fail, list) and name in fail):
        _log(inputs, ctx, name, failed=True)
        raise PermanentError(f"stand-in failure requested for {name} (inputs.standin_fail)")
    out_dir = inputs.get("output_dir")
    if not isinstance(out_dir, str) or not out_dir:
        raise InvalidParams("Validation failed: inputs.output_dir (the stage directory) is required")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _log(inputs, ctx, name)
    return inputs, dict(outputs), out_dir


def _log(inputs, ctx, name, **extra):
    out_dir = inputs.get("output_dir")
    if not isinstance(out_dir, str) or not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    line = dict(
        stage=name, task_id=ctx.task_id, run_id=ctx.run_id, attempt=ctx.attempt, pid=os.getpid(),
        **extra,
    )
    with open(os.path.join(out_dir, LOG_NAME), "a") as f:
        f.write(json.dumps(line) + "\n")


def _write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _success(outputs, message):
    return {"status": "success", "outputs": outputs, "message": f"stand-in: {message}"}


def _existing(path, what):
    if not isinstance(path, str) or not path:
        raise InvalidParams(f"Validation failed: {what} is required")
    if not os.path.exists(path):
        raise InvalidParams(f"Validation failed: {what} {path} does not exist")
    return path


def _ms_path(inputs, outputs):
    return _existing(outputs.get("ms_path") or inputs.get("ms_path"), "outputs.ms_path")


def _ms_stem(ms):
    base = os.path.basename(ms.rstrip("/"))
    return base[:-3] if base.endswith(".ms") else base


def _parse_time(value, what):
    if not isinstance(value, str):
        raise InvalidParams(f"Validation failed: inputs.{what} (ISO time) is required")
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParams(f"Validation failed: inputs.{what} {value!r} is not an ISO time") from None


def _hdf5_files(input_path):
    _existing(input_path, "inputs.input_path")
    if os.path.isfile(input_path):
        return [input_path]
    files = sorted(
        os.path.join(input_path, f) for f in os.listdir(input_path) if f.endswith((".hdf5", ".h5"))
    )
    if not files:
        raise InvalidParams(f"Validation failed: no HDF5 files in {input_path}")
    return files


# ---- FITS: a tiny valid primary HDU (a stand-in image) ----------------------------------------


def _fits_card(key, value, comment=""):
    if isinstance(value, bool):
        v = ("T" if value else "F").rjust(20)
    elif isinstance(value, (int, float)):
        v = repr(value).rjust(20)
    else:
        v = ("'" + str(value).replace("'", "''").ljust(8) + "'").ljust(20)
    card = f"{key:<8}= {v}" + (f" / {comment}" if comment else "")
    return card[:80].ljust(80)


def _write_fits(path, pixels, header):
    n = len(pixels)
    cards = [
        _fits_card("SIMPLE", True),
        _fits_card("BITPIX", -32),
        _fits_card("NAXIS", 2),
        _fits_card("NAXIS1", len(pixels[0])),
        _fits_card("NAXIS2", n),
    ] + [_fits_card(k, v) for k, v in header.items()]
    cards.append("END".ljust(80))
    head = "".join(cards).encode("ascii")
    head += b" " * (-len(head) % 2880)
    data = b"".join(struct.pack(">%df" % len(row), *row) for row in pixels)
    data += b"\0" * (-len(data) % 2880)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head + data)
    os.replace(tmp, path)


def _read_fits_header(path):
    with open(path, "rb") as f:
        block = f.read(2880)
    cards = [block[i : i + 80].decode("ascii", "replace") for i in range(0, len(block), 80)]
    if not cards or not cards[0].startswith("SIMPLE  =") or cards[0][29] != "T":
        raise InvalidParams(f"Validation failed: {path} is not a FITS file")
    header = {}
    for c in cards:
        if c.startswith("END"):
            break
        if c[8:10] == "= ":
            header[c[:8].strip()] = c[10:].split("/")[0].strip().strip("'").strip()
    return header


# ---- the stages ------------------------------------------------------------------------------


def catalog_setup(params, ctx):
    """inputs.input_path (HDF5) → catalog_setup_status (+ catalog_path)."""
    inputs, outputs, out_dir = _stage(params, ctx, "catalog-setup")
    files = _hdf5_files(inputs.get("input_path"))
    path = os.path.join(out_dir, "catalogs", "catalog_setup.json")
    _write_json(path, {"input_path": inputs["input_path"], "files": len(files), "catalog": "stand-in NVSS strip"})
    outputs.update({"catalog_setup_status": "ready", "catalog_path": path})
    return _success(outputs, f"catalog ready for {len(files)} file(s)")


def convert_uvh5_to_ms(params, ctx):
    """inputs.input_path, start_time, end_time → ms_path, ms_paths
    (<output_dir>/science/YYYY-MM-DD/YYYY-MM-DDTHH:MM:SS.ms).

    The MS is a copy of ``inputs.template_ms`` when given (a real Measurement Set, for the CASA
    stages), else a directory holding the list of its source files."""
    inputs, outputs, out_dir = _stage(params, ctx, "convert-uvh5-to-ms")
    files = _hdf5_files(inputs.get("input_path"))
    start = _parse_time(inputs.get("start_time"), "start_time")
    end = _parse_time(inputs.get("end_time"), "end_time")
    if end <= start:
        raise InvalidParams("Validation failed: inputs.end_time must be after inputs.start_time")
    kind = "calibrators" if params.get("chain_name") == "calibrator" else "science"
    day_dir = os.path.join(out_dir, kind, start.strftime("%Y-%m-%d"))
    os.makedirs(day_dir, exist_ok=True)
    ms = os.path.join(day_dir, start.strftime("%Y-%m-%dT%H:%M:%S") + ".ms")

    def convert():
        # A retry starts from a clean slate: a partial MS of an earlier attempt goes first.
        if os.path.lexists(ms):
            shutil.rmtree(ms)
        tmp = ms + ".partial"
        if os.path.lexists(tmp):
            shutil.rmtree(tmp)
        template = inputs.get("template_ms")
        if template:
            shutil.copytree(_existing(template, "inputs.template_ms"), tmp, symlinks=True)
        else:
            os.makedirs(tmp)
            with open(os.path.join(tmp, "table.dat"), "w") as f:
                f.write("stand-in Measurement Set\n")
        _write_json(os.path.join(tmp, "STANDIN_SOURCES.json"), {"files": files})
        os.rename(tmp, ms)
        return {"ms_path": ms, "files": len(files)}

    done = ctx.step("convert", convert)
    outputs.update({"ms_path": done["ms_path"], "ms_paths": [done["ms_path"]]})
    return _success(outputs, f"converted {done['files']} subband file(s) to {os.path.basename(ms)}")


def calibration_solve(params, ctx):
    """inputs|outputs.ms_path, inputs.calibration_params → calibration_tables (stdlib: table
    directories holding only a description, one checkpointed step per table)."""
    inputs, outputs, _ = _stage(params, ctx, "calibration-solve")
    ms = _ms_path(inputs, outputs)
    cp = inputs.get("calibration_params") or {}
    field = str(cp.get("field", "0"))
    prefix = os.path.join(os.path.dirname(ms), f"{_ms_stem(ms)}_{field}")
    tables = []
    for suffix in ("bpcal", "gpcal"):
        table = f"{prefix}_{suffix}"

        def solve(table=table, suffix=suffix):
            os.makedirs(table, exist_ok=True)
            _write_json(os.path.join(table, "STANDIN.json"), {"ms": ms, "kind": suffix, "attempt": ctx.attempt})
            return {"table": table, "attempt": ctx.attempt}

        tables.append(ctx.step(f"solve-{suffix}", solve)["table"])
    outputs.update({"ms_path": ms, "calibration_tables": tables})
    return _success(outputs, "solved " + ", ".join(os.path.basename(t) for t in tables))


def calibration_apply(params, ctx):
    """outputs.ms_path, outputs.calibration_tables → ms_path "with CORRECTED_DATA" (stdlib: a
    marker file in the MS)."""
    inputs, outputs, _ = _stage(params, ctx, "calibration-apply")
    ms = _ms_path(inputs, outputs)
    tables = outputs.get("calibration_tables") or inputs.get("calibration_tables")
    if not isinstance(tables, list) or not tables:
        raise InvalidParams("Validation failed: outputs.calibration_tables must list the tables to apply")
    for t in tables:
        _existing(t, "calibration table")
    _write_json(os.path.join(ms, "STANDIN_CORRECTED_DATA.json"), {"tables": tables})
    outputs.update({"ms_path": ms, "calibration_tables": tables})
    return _success(outputs, f"applied {len(tables)} table(s)")


def imaging(params, ctx):
    """outputs.ms_path → image_path (<output_dir>/images/<ms_stem>.img-image.fits: a 16×16
    point source)."""
    inputs, outputs, out_dir = _stage(params, ctx, "imaging")
    ms = _ms_path(inputs, outputs)
    stem = _ms_stem(ms)
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    path = os.path.join(img_dir, f"{stem}.img-image.fits")
    size = 16
    pixels = [[0.001 * ((x * 7 + y * 3) % 5) for x in range(size)] for y in range(size)]
    pixels[size // 2][size // 2] = 1.0
    _write_fits(path, pixels, {"OBJECT": stem, "BUNIT": "JY/BEAM", "ORIGIN": "absurd-host stand-in"})
    outputs.update({"image_path": path})
    return _success(outputs, f"imaged {os.path.basename(ms)}")


def _image(outputs, inputs):
    path = _existing(outputs.get("image_path") or inputs.get("image_path"), "outputs.image_path")
    return path, _read_fits_header(path)


def validation(params, ctx):
    """outputs.image_path → validation_results."""
    inputs, outputs, out_dir = _stage(params, ctx, "validation")
    path, header = _image(outputs, inputs)
    results = {
        "image_path": path,
        "passed": True,
        "naxis": [int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))],
        "bunit": header.get("BUNIT"),
    }
    _write_json(os.path.join(out_dir, "qa", os.path.basename(path) + ".validation.json"), results)
    outputs.update({"validation_results": results})
    return _success(outputs, f"validated {os.path.basename(path)}")


def crossmatch(params, ctx):
    """outputs.image_path | detected_sources → crossmatch_results."""
    inputs, outputs, out_dir = _stage(params, ctx, "crossmatch")
    if outputs.get("detected_sources") is not None and not outputs.get("image_path"):
        sources = outputs["detected_sources"]
        name = "detected_sources"
    else:
        path, header = _image(outputs, inputs)
        sources = [{"x": int(header.get("NAXIS1", 0)) // 2, "y": int(header.get("NAXIS2", 0)) // 2, "peak_jy": 1.0}]
        name = os.path.basename(path)
    results = {"n_sources": len(sources), "n_matched": len(sources), "catalog": "stand-in NVSS"}
    _write_json(os.path.join(out_dir, "qa", name + ".crossmatch.json"), results)
    outputs.update({"crossmatch_results": results})
    return _success(outputs, f"cross-matched {len(sources)} source(s)")


def photometry(params, ctx):
    """outputs.ms_path (+ image_path) → photometry_results."""
    inputs, outputs, out_dir = _stage(params, ctx, "photometry")
    ms = _ms_path(inputs, outputs)
    stem = _ms_stem(ms)
    path = os.path.join(out_dir, "photometry", f"{stem}.photometry.csv")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write("source,flux_jy,err_jy\nstandin-0,1.000,0.010\n")
    os.replace(path + ".tmp", path)
    results = {"n_sources": 1, "csv_path": path}
    outputs.update({"photometry_results": results})
    return _success(outputs, f"measured 1 source in {stem}")


# ---- the real CASA calibration (examples/casa/calibrate.py) ------------------------------------


class _HoldAfter:
    """A ctx whose step ``hold`` blocks, on attempt 1, once it has completed (checkpointed):
    it writes ``<output_dir>/hold.<step>`` and sleeps until the run is stopped. A test kills the
    worker then, with a solve checkpointed and the next one not begun."""

    def __init__(self, ctx, hold, out_dir):
        self._ctx = ctx
        self._hold = hold
        self._out_dir = out_dir

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def step(self, name, fn):
        value = self._ctx.step(name, fn)
        if name == self._hold and self._ctx.attempt == 1:
            with open(os.path.join(self._out_dir, f"hold.{name}"), "w") as f:
                f.write(f"{os.getpid()}\n")
            while True:
                time.sleep(1)
        return value


def calibration_solve_casa(params, ctx):
    """The real solve (calibrate.solve). ``inputs.calibration_params.standin_hold_after``: a
    step name at which attempt 1 holds (see _HoldAfter)."""
    inputs, _, out_dir = _stage(params, ctx, "calibration-solve")
    import calibrate

    hold = (inputs.get("calibration_params") or {}).get("standin_hold_after")
    return calibrate.solve(params, _HoldAfter(ctx, hold, out_dir) if hold else ctx)


def calibration_apply_casa(params, ctx):
    """The real apply (calibrate.apply)."""
    _stage(params, ctx, "calibration-apply")
    import calibrate

    return calibrate.apply(params, ctx)
