"""Deprecated: the built-in workers moved to :mod:`beampipe.nodes` (one package per technique).
``beampipe.workers.MODULE`` still imports, for one release, with a ``DeprecationWarning`` naming
the new path (see :mod:`beampipe._moved`); ``use:`` names are unchanged.
"""

from beampipe._moved import alias_modules

alias_modules(
    __name__,
    {
        "_columns": ["beampipe.nodes.columns"],
        "reduce": ["beampipe.nodes.reduce.sum"],
        "xas": [
            "beampipe.nodes.xas.transmission",
            "beampipe.nodes.xas.normalize",
            "beampipe.nodes.xas.merge",
        ],
    },
)
