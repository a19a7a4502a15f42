"""The component's export. ``absurd-host build-py`` builds an entry module that imports the
app (registering its ``@task`` functions) and then this ``WitWorld``, the class componentize-py
looks for."""

import wit_world

import absurd_guest


class WitWorld(wit_world.WitWorld):
    def run(self, info, params: str) -> str:
        return absurd_guest.run(info, params)
