#!/bin/sh
# A stand-in for the DSA-110 `calibration-solve` task, for the demo (examples/absurd-host.toml):
# it runs as a `native` task like the real one (examples/casa/calibrate.py, which needs CASA),
# but only pretends to calibrate. absurd-host runs it in a fresh work directory as
#   calibration-solve.sh PARAMS_JSON
# where PARAMS_JSON is {"params": {...}, "task": {...}}; it writes result.json there.
set -eu
params_file="$1"
# The MS path from the params (`inputs.ms_path`), without a JSON parser: good enough for a demo.
ms_path="$(tr -d '\n' <"$params_file" | sed -n 's/.*"ms_path"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p')"
ms_path="${ms_path:-unknown.ms}"
stem="${ms_path%.ms}"
echo "calibration-solve stand-in: pretending to calibrate $ms_path"
cat >result.json.tmp <<JSON
{
  "status": "success",
  "outputs": {
    "ms_path": "$ms_path",
    "calibration_tables": ["${stem}_0_bpcal", "${stem}_0_gpcal"]
  },
  "message": "stand-in: no CASA was run (see examples/casa for the real calibration)"
}
JSON
mv result.json.tmp result.json
