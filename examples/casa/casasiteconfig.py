# casaconfig site configuration for running modular CASA offline, without touching $HOME.
#
# Select it with the environment only:  CASASITECONFIG=/abs/path/to/casasiteconfig.py
# casaconfig executes this file as plain Python (with its defaults as globals) when casatools is
# imported. Everything here is our own; see docs/native-tasks.md ("Running CASA").
#
# - measures and reference data come from the `casadata` wheel installed in the same venv;
# - neither the measures nor the data are ever auto-updated (no network, no ~/.casa/data);
# - the log file and cache directory follow the per-run environment (CASA_LOGFILE,
#   CASA_CACHEDIR) so that every run writes into its own work directory.
import os as _os

import casadata as _casadata

measurespath = _casadata.datapath
datapath = [_casadata.datapath]
measures_auto_update = False
data_auto_update = False
casaconfig_verbose = 0

if _os.environ.get("CASA_LOGFILE"):
    logfile = _os.environ["CASA_LOGFILE"]
if _os.environ.get("CASA_CACHEDIR"):
    cachedir = _os.environ["CASA_CACHEDIR"]
