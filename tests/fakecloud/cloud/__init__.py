"""fakecloud's modules, one per concern (see ../fakecloud.py for the
command line and the start-up contract).

Importing the package registers every endpoint: each module adds its
routes to wire.ROUTES (and its cmdlets to exchange.CMDLETS) as it is
imported (opath.py and mailbox.py register nothing).  The order below is
the order routes are tried in within a service, which matters where two
patterns match one path: users/delta before users/{id}, groups/delta
before any groups/{id},
deletedItems/microsoft.graph.user before deletedItems/{id}.
"""

from . import (login, delta, groups_delta, users, batch, exchange, cmdlets,
               orgconfig, migration, objects, policy, admin, managers, photos)

__all__ = ["login", "delta", "groups_delta", "users", "batch", "exchange",
           "cmdlets", "orgconfig", "migration", "objects", "policy", "admin",
           "managers", "photos"]
