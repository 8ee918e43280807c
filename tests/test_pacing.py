"""The pacer that every paced source uses (``beampipe.nodes.pacing``), on the tests' fake clock."""

from __future__ import annotations

import math

import pytest
from conftest import FakeClock


def test_a_schedule_starts_at_the_first_wait_and_keeps_its_deadlines():
    fake = FakeClock()
    pacer = fake.pacer()
    pacer.wait(5.0)  # starts the schedule at 100: no wait, the gap is not used
    assert (fake.sleeps, pacer.deadline) == ([], 100.0)
    fake.now += 0.25  # time spent elsewhere is not added to the gap
    pacer.wait(1.0)
    pacer.wait(0.5)
    assert fake.sleeps == pytest.approx([0.75, 0.5])
    fake.now += 3.0  # a stall: the next deadlines (102, 102.5) are overdue, sent at once
    pacer.wait(0.5)
    pacer.wait(0.5)
    pacer.wait(2.5)  # due at 105: the schedule has caught up
    assert fake.sleeps == pytest.approx([0.75, 0.5, 0.5])
    assert fake.now == pytest.approx(105.0)


@pytest.mark.parametrize("gap", [-1.0, math.nan, math.inf, -math.inf, 0.0])
def test_a_negative_or_non_finite_gap_counts_as_zero(gap):
    fake = FakeClock()
    pacer = fake.pacer()
    pacer.wait(1.0)
    pacer.wait(gap)
    pacer.wait(1.0)
    assert fake.sleeps == pytest.approx([1.0])
    assert pacer.deadline == pytest.approx(101.0)


def test_restart_begins_a_new_schedule():
    fake = FakeClock()
    pacer = fake.pacer()
    pacer.wait(0.0)
    pacer.wait(1.0)
    fake.now += 10.0
    pacer.restart()
    assert pacer.deadline is None
    pacer.wait(1.0)
    pacer.wait(1.0)
    assert fake.sleeps == pytest.approx([1.0, 1.0])
    assert pacer.deadline == pytest.approx(112.0)
