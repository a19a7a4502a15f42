"""`echo`, the Python twin of examples/echo: returns its params. The benchmark's trivial
Python task (absurd-host bench --only python)."""

from absurd_guest import task


@task("echo")
def echo(params, ctx):
    return params
