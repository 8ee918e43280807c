"""The built-in processing units (``use:`` names registered in the ``beampipe.nodes`` entry points).

* :mod:`beampipe.workers.xas`: ``xas.transmission`` (mu(E) from ion-chamber readings, per point)
  and ``xas.normalize`` (pre-edge subtraction and normalisation of a growing spectrum, with
  xraylarch; needs the ``xas`` extra).

Modules are imported on use, so a pipeline needs only the dependencies of the nodes it uses.
"""
