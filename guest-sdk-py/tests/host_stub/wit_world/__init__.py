"""Stand-in for the generated `wit_world` package of the `absurd:task@0.2.0` world."""

from typing import Protocol

from .imports import types  # noqa: F401


class WitWorld(Protocol):
    def run(self, info, params: str) -> str:
        raise NotImplementedError
