"""DSA-110 calibration tasks for the absurd-host `native` handler kind, with modular CASA, run by
absurd-native (python/absurd_native.py):

    run-casa -m absurd_native calibrate:solve [PARAMS_JSON] [--noconfig]
    run-casa -m absurd_native calibrate:apply [PARAMS_JSON] [--noconfig]

The params have the DSA-110 shape {"config": ..., "inputs": {"ms_path", "calibration_params"},
"outputs": {...}}. The result (written to result.json by absurd-native) is
{"status": "success", "outputs": {"ms_path", "calibration_tables": [...]}, "message", "metrics"}.

solve (`calibration-solve`): takes the MS's calibration lock, fills MODEL_DATA with the
calibrator's flux (setjy, manual), solves an optional delay (K, `solve_delay`), a bandpass
(B, solnorm) and phase-only gains (G, calmode p), and checks each table: it exists, has rows,
is not all flagged, and holds solutions for the reference antenna. Tables:
<ms without .ms>_<field>_kcal, _bpcal and _gpcal next to the MS.

Each solve is a checkpointed step (`ctx.step`): a retry (the worker killed, CASA crashed)
resumes after the last completed table, which it keeps, and solves only what is left. A solve
that has no checkpoint starts from a clean slate: a table a failed attempt left behind under its
name is removed first, and a solve that fails removes its own partial table. The MS is never
removed.

apply (`calibration-apply`): takes the lock, applies the tables (applycal) and checks that
CORRECTED_DATA is populated and the MS is not mostly flagged.

Failures: invalid params fail permanently (`InvalidParams` is a `PermanentError`); a calibration
failure exits 7 (the DSA-110 CALIBRATION code) and a lock not taken in time exits 6, each after
writing its error report. CASA solvers often fail without raising, hence the checks.
"""
import errno
import fcntl
import os
import shutil
import time

import casa_env
from absurd_native import PermanentError

EXIT_RESOURCE = 6
EXIT_CALIBRATION = 7


class InvalidParams(PermanentError):
    """The params cannot work, whatever the number of attempts."""


class CalibrationError(Exception):
    """A solve or apply did not produce what it must."""

    exit_code = EXIT_CALIBRATION


class LockTimeout(Exception):
    exit_code = EXIT_RESOURCE


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
        or not path.endswith(("_kcal", "_bpcal", "_gpcal"))
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
    return {
        "table": path,
        "rows": int(nrows),
        "flagged_fraction": round(flagged, 4),
        "viscal": viscal,
        "table_dat_mtime_ns": os.stat(os.path.join(path, "table.dat")).st_mtime_ns,
    }


# ---- tasks ---------------------------------------------------------------------------------


def solve(params, ctx):
    casa_env.prepare(os.getcwd())
    params = checked_params(params)
    ms = ms_from(params)
    cp = (params.get("inputs") or {}).get("calibration_params") or {}
    if not isinstance(cp, dict):
        raise InvalidParams("Validation failed: inputs.calibration_params must be an object")
    field = str(cp.get("field", "0"))
    flux = float(cp.get("cal_flux_jy", cp.get("flux_jy", 1.0)))
    solve_delay = bool(cp.get("solve_delay", False))
    bp_minsnr = float(cp.get("bp_minsnr", 3.0))
    gain_minsnr = float(cp.get("gain_minsnr", 3.0))
    gain_solint = str(cp.get("gain_solint", "int"))
    lock_timeout = float(cp.get("lock_timeout", 3600))
    # Tables live next to the MS (a table_prefix may only choose their base name).
    stem = os.path.basename(ms)[:-3] if ms.endswith(".ms") else os.path.basename(ms)
    prefix = os.path.join(os.path.dirname(ms), os.path.basename(str(cp.get("table_prefix") or f"{stem}_{field}")))
    k_table = f"{prefix}_kcal"
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

    def solved(step, table, kind, run_solver):
        """One checkpointed solve. Done in an earlier attempt: its table is kept and checked
        again. Otherwise: a clean slate, the solver, the checks; a failure removes the partial
        table before the exception goes on."""
        fresh = []

        def once():
            fresh.append(True)
            remove_table(table, ms)
            try:
                run_solver()
                metrics = check_caltable(tb, table, refant_id, kind)
            except BaseException:
                try:
                    remove_table(table, ms)
                except Exception as e:  # noqa: BLE001
                    log(f"could not remove {table}: {e}")
                raise
            metrics["attempt"] = ctx.attempt
            return metrics

        metrics = ctx.step(step, once)
        if not fresh:
            if not os.path.exists(os.path.join(table, "table.dat")):
                raise PermanentError(
                    f"{kind} table {table} was solved in attempt {metrics.get('attempt')} but is gone; "
                    "spawn the task again to solve from the start"
                )
            log(f"{kind}: kept {table} from attempt {metrics.get('attempt')} (checkpoint {step})")
        return metrics

    def model():
        if cp.get("flag_autocorr", True):
            flagdata(vis=ms, mode="manual", autocorr=True, flagbackup=False)
        # MODEL_DATA: a point source of the calibrator's flux at the phase centre.
        setjy(vis=ms, field=field, standard="manual", fluxdensity=[flux, 0, 0, 0], usescratch=True)
        return {"flux_jy": flux, "field": field}

    def solve_k():
        log(f"gaincal (delay, K) -> {k_table} (refant {refant})")
        gaincal(vis=ms, caltable=k_table, field=field, solint="inf", refant=refant, gaintype="K", minsnr=bp_minsnr)

    def solve_bp():
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
            gaintable=[k_table] if solve_delay else [],
        )

    def solve_gp():
        log(f"gaincal (phase-only) -> {gp_table}")
        pre = ([k_table] if solve_delay else []) + [bp_table]
        gaincal(
            vis=ms,
            caltable=gp_table,
            field=field,
            solint=gain_solint,
            refant=refant,
            gaintype="G",
            calmode="p",
            gaintable=pre,
            interp=["nearest"] * len(pre),
            minsnr=gain_minsnr,
        )

    metrics = {"refant": refant}
    with CalLock(ms, lock_timeout):
        ctx.step("model", model)
        tables = []
        if solve_delay:
            metrics["delay"] = solved("solve-delay", k_table, "delay", solve_k)
            tables.append(k_table)
        metrics["bandpass"] = solved("solve-bandpass", bp_table, "bandpass", solve_bp)
        metrics["gain"] = solved("solve-gain", gp_table, "gain", solve_gp)
        tables += [bp_table, gp_table]

    outputs = dict(params.get("outputs") or {})
    outputs.update({"ms_path": ms, "calibration_tables": tables})
    return {
        "status": "success",
        "outputs": outputs,
        "message": "Calibration solved: " + ", ".join(os.path.basename(t) for t in tables),
        "metrics": metrics,
    }


def checked_params(params):
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams("Validation failed: params must be an object")
    return params


def apply(params, ctx):
    casa_env.prepare(os.getcwd())
    params = checked_params(params)
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
