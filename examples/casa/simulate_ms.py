"""Simulates a tiny DSA-110-like Measurement Set with casatools, with known gain corruptions.

    run-casa simulate_ms.py --out /data/sim.ms [--nant 6] [--nchan 16] [--seconds 180]
                            [--noise 0.01] [--flux 1.0] [--seed 42]

A 1 Jy (--flux) point source at the phase centre (0834+555) observed by --nant antennas
(DSA-000…, 4.65 m dishes, ~500 m across, at OVRO) in one 16-channel spectral window at
1.40 GHz with XX/YY, 10 s integrations around transit. DATA is then multiplied by known
per-antenna gains g_i g_j*:

  * a bandpass amplitude 1 + 0.2 sin(...) per (antenna, pol, channel), normalised to rms 1
    (what bandpass(solnorm=True) can recover);
  * a phase of 25 deg * ant + 10 deg * pol, plus a delay-like slope of 4 deg * ant per channel;
  * a phase drift of 3 deg * ant per minute.

CORRECTED_DATA (if present) is overwritten with the corrupted data, so only applycal can make
it right. Prints one line `RESULT {json}` with the MS path and the truth.
"""
import argparse
import json
import os
import shutil
import sys

import casa_env


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--nant", type=int, default=6)
    ap.add_argument("--nchan", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--flux", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    # casaconfig reads --noconfig/--configfile/--nositeconfig from sys.argv itself.
    args, _ = ap.parse_known_args(argv)

    ms = os.path.abspath(args.out)
    casa_env.prepare(os.getcwd())

    import numpy as np
    import casatools
    import casatasks  # noqa: F401  (creates the global casalog first: everything goes to the log)

    if os.path.exists(ms):
        shutil.rmtree(ms)
    me = casatools.measures()
    sm = casatools.simulator()
    cl = casatools.componentlist()
    tb = casatools.table()

    n = args.nant
    rng = np.random.default_rng(args.seed)
    # Local east/north offsets, about 500 m across, plus a little height.
    east = list(np.linspace(-250.0, 250.0, n) + rng.normal(0, 5, n))
    north = list(rng.normal(0, 60, n))
    up = list(rng.normal(0, 1, n))
    names = [f"DSA-{i:03d}" for i in range(n)]

    ra, dec = "08h34m54.9s", "+55d34m21s"
    sm.open(ms)
    sm.setconfig(
        telescopename="DSA_110",
        x=east,
        y=north,
        z=up,
        dishdiameter=[4.65] * n,
        mount=["alt-az"] * n,
        antname=names,
        padname=names,
        coordsystem="local",
        referencelocation=me.observatory("OVRO_MMA"),
    )
    sm.setspwindow(
        spwname="L",
        freq="1.40GHz",
        deltafreq="1MHz",
        freqresolution="1MHz",
        nchannels=args.nchan,
        stokes="XX YY",
    )
    sm.setfeed(mode="perfect X Y", pol=[""])
    sm.setfield(sourcename="J0834+555", sourcedirection=me.direction("J2000", ra, dec))
    sm.setlimits(shadowlimit=0.001, elevationlimit="8.0deg")
    sm.setauto(autocorrwt=0.0)
    sm.settimes(integrationtime="10s", usehourangle=True, referencetime=me.epoch("UTC", "2025/10/17/00:00:00"))
    half = args.seconds / 2.0
    sm.observe(sourcename="J0834+555", spwname="L", starttime=f"{-half}s", stoptime=f"{half}s")

    clpath = ms + ".cl"
    if os.path.exists(clpath):
        shutil.rmtree(clpath)
    cl.addcomponent(dir=f"J2000 {ra} {dec}", flux=args.flux, fluxunit="Jy", freq="1.4GHz", shape="point")
    cl.rename(clpath)
    cl.close()
    sm.setvp(dovp=False, usedefaultvp=False)
    sm.predict(complist=clpath)
    if args.noise > 0:
        sm.setseed(args.seed)
        sm.setnoise(mode="simplenoise", simplenoise=f"{args.noise}Jy")
        sm.corrupt()
    sm.close()
    shutil.rmtree(clpath, ignore_errors=True)

    # Known gains g[ant, pol, chan] (complex), plus a per-antenna phase drift in time.
    chans = np.arange(args.nchan)
    gains = np.zeros((n, 2, args.nchan), dtype=complex)
    for a in range(n):
        for p in range(2):
            amp = 1.0 + 0.2 * np.sin(2 * np.pi * (chans / args.nchan) * (1 + 0.3 * a) + 0.7 * p + a)
            amp = amp / np.sqrt(np.mean(amp**2))  # rms 1, as bandpass(solnorm=True) normalises
            phase = np.deg2rad(25.0 * a + 10.0 * p + 4.0 * a * chans)
            gains[a, p] = amp * np.exp(1j * phase)

    tb.open(ms, nomodify=False)
    data = tb.getcol("DATA")  # (ncorr, nchan, nrow)
    a1 = tb.getcol("ANTENNA1")
    a2 = tb.getcol("ANTENNA2")
    t = tb.getcol("TIME")
    minutes = (t - t.min()) / 60.0
    for r in range(data.shape[2]):
        i, j = a1[r], a2[r]
        drift_i = np.exp(1j * np.deg2rad(3.0 * i * minutes[r]))
        drift_j = np.exp(1j * np.deg2rad(3.0 * j * minutes[r]))
        for p in range(2):
            data[p, :, r] *= gains[i, p] * drift_i * np.conj(gains[j, p] * drift_j)
    tb.putcol("DATA", data)
    if "CORRECTED_DATA" in tb.colnames():
        tb.putcol("CORRECTED_DATA", data)
    nrows = tb.nrows()
    tb.close()

    result = {
        "ms_path": ms,
        "rows": int(nrows),
        "antennas": names,
        "nchan": args.nchan,
        "flux_jy": args.flux,
        "noise_jy": args.noise,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
