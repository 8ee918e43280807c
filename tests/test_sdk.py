"""The SDK's classes: a source and a worker are siblings, stateful workers say so, and
``beampipe`` exports what a worker author uses."""

from __future__ import annotations

import importlib

import pytest

import beampipe
from beampipe.worker.base import Node
from beampipe.worker.registry import UnknownNodeType, resolve


def test_source_and_worker_are_siblings_on_node() -> None:
    assert issubclass(beampipe.Source, Node) and issubclass(beampipe.Worker, Node)
    assert not issubclass(beampipe.Source, beampipe.Worker)
    assert not hasattr(beampipe.Source, "process") and not hasattr(beampipe.Source, "on_finish")
    assert (beampipe.Source.inputs, beampipe.Source.outputs) == ((), ("out",))
    assert beampipe.Worker.inputs == ("in",) and issubclass(beampipe.Reducer, beampipe.Worker)


def test_a_use_naming_neither_a_worker_nor_a_source_is_refused() -> None:
    assert resolve("xdi_replay").__name__ == "XdiReplay"
    with pytest.raises(UnknownNodeType, match=r"'beampipe\.worker\.base:Node' is not a be"):
        resolve("beampipe.worker.base:Node")
    with pytest.raises(UnknownNodeType, match=r"'numpy:log' is not a beampipe\.Worker subclass"):
        resolve("numpy:log")


def test_a_stateful_worker_declares_it_and_defines_both_hooks() -> None:
    class Total(beampipe.Worker):
        stateful = True

        def snapshot(self):
            return 0.0

        def restore(self, state):
            pass

    class Forgetful(Total):
        stateful = False  # the same hooks, but not snapshotted

    assert Total.stateful and not Forgetful.stateful and not beampipe.Worker.stateful
    with pytest.raises(TypeError, match=r"test_sdk\..*Undeclared defines snapshot\(\) but does"):

        class Undeclared(beampipe.Worker):
            def snapshot(self):
                return 0.0

            def restore(self, state):
                pass

    with pytest.raises(TypeError, match=r"Half declares stateful = True but does not define re"):

        class Half(beampipe.Worker):
            stateful = True

            def snapshot(self):
                return 0.0

    with pytest.raises(TypeError, match=r"does not define snapshot\(\) and restore\(\)"):

        class Empty(beampipe.Worker):
            stateful = True


def test_the_sdk_exports_what_a_worker_author_uses() -> None:
    assert set(beampipe.__all__) == {
        "EndOfStream",
        "Event",
        "InputPath",
        "Message",
        "OutputPath",
        "Params",
        "Reducer",
        "ReducerParams",
        "ResultError",
        "Source",
        "StreamStart",
        "TransientError",
        "Worker",
        "worker",
    }
    sdk = importlib.import_module("beampipe.worker")  # beampipe.worker is the decorator
    assert set(sdk.__all__) == set(beampipe.__all__) - {
        "EndOfStream",
        "Event",
        "Message",
        "StreamStart",
    }
