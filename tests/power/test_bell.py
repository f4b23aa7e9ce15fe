"""The power worker's doorbell: a ring wakes one wait, also from a forked
process (the HTTP workers fork from the process that runs the worker)."""

from __future__ import annotations

import os

from provisiond.power.bell import Bell


def test_a_ring_wakes_the_wait_and_an_unrung_wait_times_out():
    bell = Bell()
    try:
        assert bell.wait(0.01) is False
        bell.ring()
        assert bell.wait(30) is True
        assert bell.wait(0.01) is False  # answered: the next wait sleeps again
    finally:
        bell.close()


def test_many_rings_never_block_and_one_wait_answers_them_all():
    bell = Bell()
    try:
        for _ in range(100_000):  # far more than the socket buffer holds
            bell.ring()
        assert bell.wait(0) is True
        assert bell.wait(0.01) is False
    finally:
        bell.close()


def test_a_forked_child_rings_the_parents_bell():
    bell = Bell()
    try:
        child = os.fork()
        if child == 0:  # an HTTP worker
            bell.ring()
            os._exit(0)
        os.waitpid(child, 0)
        assert bell.wait(30) is True
    finally:
        bell.close()


def test_a_closed_bell_does_not_raise_when_rung():
    bell = Bell()
    bell.close()
    bell.ring()
