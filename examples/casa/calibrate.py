"""DSA-110 calibration tasks for the absurd-host `native` handler kind, with modular CASA.

    run-casa calibrate.py solve PARAMS_JSON [--noconfig]
    run-casa calibrate.py apply PARAMS_JSON [--noconfig]

PARAMS_JSON is the host's params.json: {"params": P, "task": {...}}, where P has the DSA-110
shape {"config": ..., "inputs": {"ms_path", "calibration_params"}, "outputs": {...}}. The
result is written to result.json in the current directory (the run's work directory):
{"status": "success"|"error", "outputs": {"ms_path", "calibration_tables": [...]}, "message"}.

solve (`calibration-solve`): takes the MS's calibration lock, removes calibration tables a
failed earlier attempt may have left (never the MS), fills MODEL_DATA with the calibrator's
flux (setjy, manual), solves a bandpass (B, solnorm) and phase-only gains (G, calmode p) on
top of it, and checks each table: it exists, has rows, not all flagged, and holds solutions
for the reference antenna. Tables: <ms without .ms>_<field>_bpcal and ..._gpcal next to the MS.

apply (`calibration-apply`): takes the lock, applies the tables (applycal) and checks that
CORRECTED_DATA is populated and the MS is not mostly flagged.

Exit status: 0 with a result ("status": "error" and "retryable": false for invalid params),
7 for a calibration failure (the DSA-110 CALIBRATION code) with an error result, 6 when the
lock cannot be taken in time. CASA solvers often fail without raising, hence the checks.
"""
import argparse
import errno
import fcntl
import json
import os
import shutil
import sys
import time
import traceback

import casa_env

EXIT_RESOURCE = 6
EXIT_CALIBRATION = 7


class InvalidParams(Exception):
    """The params cannot work, whatever the number of attempts."""


class CalibrationError(Exception):
    """A solve or apply did not produce what it must."""


class LockTimeout(Exception):
    pass


def write_result(result):
    tmp = "result.json.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, "result.json")


def log(msg):
    print(f"calibrate: {msg}", flush=True)


# ---- the per-MS lock (same file and kind of lock as the DSA-110 pipeline) ---------------------


def cal_lock_path(ms):
    ms = ms.rstrip("/")
    stem = os.path.splitext(os.path.basename(ms))[0]
    return os.path.join(os.path.dirname(ms), f".{stem}.cal_lock")


class CalLock:
    """An advisory flock on `.{ms_stem}.cal_lock` next to the MS, held around solve and apply.

    flock locks belong to the open file and die with the process, so a killed task never
    leaves a stale lock; the lock file itself is left in place on purpose (removing it would
    let two holders lock different inodes).
    """

    def __init__(self, ms, timeout):
        self.path = cal_lock_path(ms)
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        waited = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
                    raise
            if not waited:
                log(f"waiting for the calibration lock {self.path}")
                waited = True
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise LockTimeout(
                    f"Cannot acquire calibration lock {self.path} within {self.timeout:g} s: "
                    "another worker is calibrating this MS"
                )
            time.sleep(0.2)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()} {os.environ.get('ABSURD_TASK_ID', '')}\n".encode())
        log(f"holding the calibration lock {self.path}")
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


# ---- helpers -------------------------------------------------------------------------------


def ms_from(params):
    inputs = params.get("inputs") or {}
    outputs = params.get("outputs") or {}
    ms = inputs.get("ms_path") or outputs.get("ms_path")
    if not ms or not isinstance(ms, str):
        raise InvalidParams("Validation failed: inputs.ms_path (or outputs.ms_path) is required")
    ms = os.path.abspath(ms.rstrip("/"))
    if not os.path.isdir(ms) or not os.path.exists(os.path.join(ms, "table.dat")):
        raise InvalidParams(f"Validation failed: {ms} is not a Measurement Set")
    return ms


def remove_table(path, ms):
    """Removes a calibration table directory next to the MS; refuses anything else."""
    path = os.path.abspath(path)
    if (
        path == ms
        or os.path.dirname(path) != os.path.dirname(ms)
        or not path.endswith(("_bpcal", "_gpcal"))
    ):
        raise RuntimeError(f"refusing to remove {path}: not a calibration table of {ms}")
    if os.path.lexists(path):
        log(f"removing {path} (left by an earlier attempt)")
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def antenna_names(tb, ms):
    tb.open(os.path.join(ms, "ANTENNA"))
    try:
        return list(tb.getcol("NAME"))
    finally:
        tb.close()


def resolve_refant(refant, names):
    refant = str(refant)
    if refant in names:
        return names.index(refant)
    if refant.isdigit() and int(refant) < len(names):
        return int(refant)
    raise InvalidParams(
        f"Validation failed: reference antenna {refant!r} is not in the MS (antennas: {', '.join(names)})"
    )


def check_caltable(tb, path, refant_id, kind):
    """The DSA-110 postconditions of a solve: exists, rows, not all flagged, refant present."""
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "table.dat")):
        raise CalibrationError(f"{kind} solve wrote no table ({path} does not exist)")
    tb.open(path)
    try:
        nrows = tb.nrows()
        if nrows == 0:
            raise CalibrationError(f"{kind} table {path} has no solutions")
        flags = tb.getcol("FLAG")
        ant1 = set(int(a) for a in tb.getcol("ANTENNA1"))
        viscal = tb.getkeyword("VisCal") if "VisCal" in tb.keywordnames() else ""
    finally:
        tb.close()
    flagged = float(flags.mean())
    if flagged >= 1.0:
        raise CalibrationError(f"{kind} table {path} is entirely flagged (no usable solution)")
    if refant_id not in ant1:
        raise CalibrationError(f"{kind} table {path} has no solutions for the reference antenna {refant_id}")
    return {"table": path, "rows": int(nrows), "flagged_fraction": round(flagged, 4), "viscal": viscal}


# ---- tasks ---------------------------------------------------------------------------------


def solve(params):
    ms = ms_from(params)
    cp = (params.get("inputs") or {}).get("calibration_params") or {}
    if not isinstance(cp, dict):
        raise InvalidParams("Validation failed: inputs.calibration_params must be an object")
    field = str(cp.get("field", "0"))
    flux = float(cp.get("cal_flux_jy", cp.get("flux_jy", 1.0)))
    bp_minsnr = float(cp.get("bp_minsnr", 3.0))
    gain_minsnr = float(cp.get("gain_minsnr", 3.0))
    gain_solint = str(cp.get("gain_solint", "int"))
    lock_timeout = float(cp.get("lock_timeout", 3600))
    # Tables live next to the MS (a table_prefix may only choose their base name).
    stem = os.path.basename(ms)[:-3] if ms.endswith(".ms") else os.path.basename(ms)
    prefix = os.path.join(os.path.dirname(ms), os.path.basename(str(cp.get("table_prefix") or f"{stem}_{field}")))
    bp_table = f"{prefix}_bpcal"
    gp_table = f"{prefix}_gpcal"

    import casatools
    from casatasks import bandpass, casalog, flagdata, gaincal, setjy

    casalog.origin("calibration-solve")
    tb = casatools.table()
    names = antenna_names(tb, ms)
    refant = str(cp.get("refant", names[0]))
    refant_id = resolve_refant(refant, names)
    if len(names) < 5:
        raise InvalidParams(f"Validation failed: {len(names)} antennas; bandpass needs at least 5 (minblperant=4)")

    with CalLock(ms, lock_timeout):
        # A retry starts from a clean slate: tables a failed attempt left are removed first.
        for t in (bp_table, gp_table):
            remove_table(t, ms)
        try:
            if cp.get("flag_autocorr", True):
                flagdata(vis=ms, mode="manual", autocorr=True, flagbackup=False)
            # MODEL_DATA: a point source of the calibrator's flux at the phase centre.
            setjy(vis=ms, field=field, standard="manual", fluxdensity=[flux, 0, 0, 0], usescratch=True)
            log(f"bandpass -> {bp_table} (refant {refant})")
            bandpass(
                vis=ms,
                caltable=bp_table,
                field=field,
                solint="inf",
                refant=refant,
                combine="scan",
                solnorm=True,
                bandtype="B",
                minsnr=bp_minsnr,
            )
            bp = check_caltable(tb, bp_table, refant_id, "bandpass")
            log(f"gaincal (phase-only) -> {gp_table}")
            gaincal(
                vis=ms,
                caltable=gp_table,
                field=field,
                solint=gain_solint,
                refant=refant,
                gaintype="G",
                calmode="p",
                gaintable=[bp_table],
                interp=["nearest"],
                minsnr=gain_minsnr,
            )
            gp = check_caltable(tb, gp_table, refant_id, "gain")
        except BaseException:
            # Never leave partial tables behind (the MS itself is never removed).
            for t in (bp_table, gp_table):
                try:
                    remove_table(t, ms)
                except Exception as e:  # noqa: BLE001
                    log(f"could not remove {t}: {e}")
            raise

    outputs = dict(params.get("outputs") or {})
    outputs.update({"ms_path": ms, "calibration_tables": [bp_table, gp_table]})
    return {
        "status": "success",
        "outputs": outputs,
        "message": f"Calibration solved: {os.path.basename(bp_table)}, {os.path.basename(gp_table)}",
        "metrics": {"bandpass": bp, "gain": gp, "refant": refant},
    }


def apply(params):
    ms = ms_from(params)
    inputs = params.get("inputs") or {}
    outputs = params.get("outputs") or {}
    tables = outputs.get("calibration_tables") or inputs.get("calibration_tables")
    if isinstance(tables, dict):  # the HEAD naming: {"BP": ..., "GP": ...}
        tables = [v for v in tables.values() if v]
    if not tables or not all(isinstance(t, str) for t in tables):
        raise InvalidParams("Validation failed: outputs.calibration_tables must list the tables to apply")
    for t in tables:
        if not os.path.exists(os.path.join(t, "table.dat")):
            raise InvalidParams(f"Validation failed: calibration table {t} does not exist")
    cp = inputs.get("calibration_params") or {}
    field = str(cp.get("apply_field", ""))
    lock_timeout = float(cp.get("lock_timeout", 3600))
    interp = ["nearest" if ("bpcal" in t or "bandpass" in t) else "linear" for t in tables]

    import casatools
    import numpy as np
    from casatasks import applycal, casalog

    casalog.origin("calibration-apply")
    with CalLock(ms, lock_timeout):
        log(f"applycal {tables} -> {ms}")
        applycal(vis=ms, field=field, gaintable=tables, interp=interp, calwt=False, flagbackup=False)
        tb = casatools.table()
        tb.open(ms)
        try:
            if "CORRECTED_DATA" not in tb.colnames():
                raise CalibrationError("applycal did not create CORRECTED_DATA")
            corrected = tb.getcol("CORRECTED_DATA")
            flags = tb.getcol("FLAG")
        finally:
            tb.close()
    nonzero = float(np.mean(np.abs(corrected) > 0))
    flagged = float(flags.mean())
    if nonzero < 0.01:
        raise CalibrationError(f"CORRECTED_DATA is not populated ({nonzero:.1%} non-zero)")
    if flagged >= 0.5:
        raise CalibrationError(f"{flagged:.1%} of the MS is flagged after applycal (an all-flagged table?)")
    out = dict(outputs)
    out.update({"ms_path": ms, "calibration_tables": list(tables)})
    return {
        "status": "success",
        "outputs": out,
        "message": f"Applied {len(tables)} calibration tables to {os.path.basename(ms)}",
        "metrics": {"corrected_nonzero_fraction": round(nonzero, 4), "flagged_fraction": round(flagged, 4)},
    }


def main(argv):
    ap = argparse.ArgumentParser(description="DSA-110 calibration tasks (CASA)")
    ap.add_argument("action", choices=["solve", "apply"])
    ap.add_argument("params_file")
    # casaconfig parses --noconfig/--configfile/--nositeconfig from sys.argv itself.
    args, _ = ap.parse_known_args(argv)
    casa_env.prepare(os.getcwd())
    with open(args.params_file) as f:
        doc = json.load(f)
    params = doc.get("params") if isinstance(doc, dict) and "task" in doc else doc
    params = params or {}
    try:
        if not isinstance(params, dict):
            raise InvalidParams("Validation failed: params must be an object")
        result = solve(params) if args.action == "solve" else apply(params)
    except InvalidParams as e:
        write_result({"status": "error", "message": str(e), "errors": [str(e)], "retryable": False})
        return 0
    except LockTimeout as e:
        write_result({"status": "error", "message": str(e), "errors": [str(e)]})
        return EXIT_RESOURCE
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"
        write_result({"status": "error", "message": message, "errors": [message]})
        return EXIT_CALIBRATION
    write_result(result)
    log(result["message"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
