"""The component's export. ``absurd-host build-py`` builds an entry module that imports the
app (registering its ``@task`` functions) and then this ``WitWorld``, the class componentize-py
looks for.

This module is imported last, while componentize-py pre-initialises the component, so the
interpreter's state at the end of the import is the memory image every run starts from."""

import gc

import wit_world

import absurd_guest


class WitWorld(wit_world.WitWorld):
    def run(self, info, params: str) -> str:
        return absurd_guest.run(info, params)


# Everything made while importing the app lives as long as the instance: moving it out of the
# collector's generations means a collection during a run does not walk (and write to) it, so
# those pages of the memory image stay shared instead of being copied into every instance.
gc.collect()
gc.freeze()
