"""Environment for running modular CASA offline inside a native task's work directory.

Import this module BEFORE casatools/casatasks: casaconfig reads its configuration when
casatools is first imported. Everything it sets is a default; the host's `env` wins.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def prepare(workdir=None):
    workdir = os.path.abspath(workdir or os.getcwd())
    # casaconfig site config: measures/data from the casadata wheel, no auto-updates.
    os.environ.setdefault("CASASITECONFIG", os.path.join(HERE, "casasiteconfig.py"))
    # Logs and caches in the work directory, never in $HOME or the MS directory.
    os.environ.setdefault("CASA_LOGFILE", os.path.join(workdir, "casa.log"))
    os.environ.setdefault("CASA_CACHEDIR", os.path.join(workdir, ".casa-cache"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(workdir, ".mpl"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    # casatasks segfaults at import when HOME is unset or empty (casatools.ms()).
    if not os.environ.get("HOME"):
        os.environ["HOME"] = workdir
    return workdir
