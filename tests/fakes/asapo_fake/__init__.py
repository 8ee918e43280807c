"""A FAKE of the ASAP::O Python clients for the tests: not the real service.

No ASAP::O service stack (broker, receiver, discovery, MongoDB, Docker) can run on the test
machines, so the tests of ``asapo_source``/``asapo_sink`` run against this fake. It implements
the documented semantics of the official client wheels ``asapo_consumer`` / ``asapo_producer``
25.3 (https://asapo.pages.desy.de/asapo/, the docstrings of the wheels, and the examples in
``docs/site/examples/python`` of the ASAP::O repository):

* :mod:`asapo_fake.broker`: one process holding the state of every beamtime (data sources,
  streams, messages, datasets, finished flags, consumer groups), served over ZeroMQ so that
  several node processes (source replicas) share it, as they would share the real broker.
* :mod:`asapo_fake.asapo_consumer` and :mod:`asapo_fake.asapo_producer`: modules with the same
  functions, classes, exceptions and constants as the wheels, talking to that broker.

The connectors pick these modules instead of the wheels when the environment variable
``BEAMPIPE_ASAPO_CLIENT`` is ``asapo_fake`` (and ``tests/fakes`` is on ``PYTHONPATH``).
"""
