"""Stand-in for componentize-py's runtime types module (the unit tests run under CPython)."""

from dataclasses import dataclass
from typing import Any


@dataclass
class Some:
    value: Any


@dataclass
class Ok:
    value: Any


@dataclass(frozen=True)
class Err(Exception):
    value: Any
