"""Prints statistics of a calibrated MS as one line `RESULT {json}` (used by the tests).

    run-casa inspect_ms.py /data/sim.ms

On unflagged cross-correlations: mean and standard deviation of |CORRECTED_DATA| and
|DATA|, the rms of their phases (degrees), and the flagged fraction.
"""
import json
import os
import sys

import casa_env


def main(argv):
    ms = os.path.abspath(argv[0])
    casa_env.prepare(os.getcwd())
    import casatools
    import numpy as np

    tb = casatools.table()
    tb.open(ms)
    try:
        a1 = tb.getcol("ANTENNA1")
        a2 = tb.getcol("ANTENNA2")
        flags = tb.getcol("FLAG")
        data = tb.getcol("DATA")
        corrected = tb.getcol("CORRECTED_DATA") if "CORRECTED_DATA" in tb.colnames() else None
    finally:
        tb.close()
    cross = a1 != a2
    ok = ~flags[:, :, cross]

    def stats(col):
        v = col[:, :, cross][ok]
        ph = np.angle(v, deg=True)
        return {
            "amp_mean": float(np.mean(np.abs(v))),
            "amp_std": float(np.std(np.abs(v))),
            "phase_rms_deg": float(np.sqrt(np.mean(ph**2))),
        }

    out = {
        "ms_path": ms,
        "flagged_fraction": float(flags.mean()),
        "data": stats(data),
        "corrected": stats(corrected) if corrected is not None else None,
    }
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
