"""Prometheus metrics: the one place they are defined.

Two kinds:

* **Counted where it happens** (counters, a histogram): DHCP packets, TFTP
  requests, BMC operations, hook runs, work items. Under ``provisiond
  serve``/``worker``/``netboot``/``run`` every process writes them to its own
  file in the machine's metrics directory (prometheus_client's multiprocess
  mode, set up by :mod:`provisiond.metric_files` before this module is
  imported), and a scrape adds up the files of every process there: one
  scrape shows the whole machine. Elsewhere (tests, one-off commands) they
  live in this process's default registry.
* **Read from the database at scrape time** (:class:`DatabaseCollector`):
  hosts per state, install slots and queues per cap, installs started and
  finished. Exact, and the same from every instance that shares the
  database; ``provisiond serve`` exposes them, the health listeners do not.

The labelled children of the hot paths (DHCP, TFTP) are resolved here, once:
a packet costs one increment, not a label lookup.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from provisiond.db import Database
from provisiond.install.slots import Limits
from provisiond.metric_files import MULTIPROC_ENV
from provisiond.models import utcnow

log = logging.getLogger("provisiond.metrics")

# --------------------------------------------------------------------------- netboot

_DHCP = Counter("provisiond_dhcp_packets", "DHCP packets received, by what became of them: answered (a reply was "
                "sent), ignored (decided: no answer), malformed (not a DHCP request), shed (a DISCOVER dropped "
                "unanswered under overload), failed (an error while answering or sending)", ["outcome"])
DHCP_ANSWERED = _DHCP.labels(outcome="answered")
DHCP_IGNORED = _DHCP.labels(outcome="ignored")
DHCP_MALFORMED = _DHCP.labels(outcome="malformed")
DHCP_SHED = _DHCP.labels(outcome="shed")
DHCP_FAILED = _DHCP.labels(outcome="failed")

_TFTP = Counter("provisiond_tftp_requests", "TFTP read and write requests, by how each ended: completed (the "
                "client acknowledged the last block), failed (the transfer broke off, or the server could not "
                "prepare the file), timeout (the client went silent), refused (answered with a TFTP error: a "
                "write, a bad name, no such file), dropped (tftp_max_transfers reached; the client retries), "
                "malformed (not a request)", ["outcome"])
TFTP_COMPLETED = _TFTP.labels(outcome="completed")
TFTP_FAILED = _TFTP.labels(outcome="failed")
TFTP_TIMEOUT = _TFTP.labels(outcome="timeout")
TFTP_REFUSED = _TFTP.labels(outcome="refused")
TFTP_DROPPED = _TFTP.labels(outcome="dropped")
TFTP_MALFORMED = _TFTP.labels(outcome="malformed")

# --------------------------------------------------------------------------- worker

BMC_OPERATION_SECONDS = Histogram(
    "provisiond_bmc_operation_seconds", "Time one power operation took, from its claim to its outcome: every "
    "attempt, the pauses between attempts and the gap kept between commands to one BMC",
    ["action", "argument", "driver"], buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0))
BMC_OPERATIONS = Counter("provisiond_bmc_operations", "Power operations carried out, by outcome: ok, timeout (the "
                         "BMC did not answer within the budget), failed (it refused, or the host has no usable "
                         "BMC)", ["action", "argument", "driver", "outcome"])

HOOK_RUNS = Counter("provisiond_hook_runs", "Hook runs (each attempt), by how they ended: ok (exit status 0), "
                    "failed (another exit status), timeout (killed after hook_timeout_seconds), error (could not "
                    "be run, or no longer there)", ["event", "hook", "outcome"])
WORK_ITEMS = Counter("provisiond_work_items", "Durable work items (kind: hook) carried out, by what the queue made "
                     "of each attempt: done, retry (failed, queued again after a backoff), failed (its last "
                     "attempt failed: given up)", ["kind", "outcome"])


# --------------------------------------------------------------------------- read from the database


class DatabaseCollector:
    """Metrics of the shared state, read when scraped: a handful of GROUP BY
    queries through the same functions as ``/api/v1/status`` and
    ``/api/v1/queue``. If the database does not answer, the scrape still
    succeeds with ``provisiond_database_up 0``."""

    def __init__(self, db: Database, limits: Limits, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.limits = limits
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("provisiond_database_up", "1 if the database answered this scrape's queries")
        try:
            families = list(self._read())
        except Exception:  # noqa: BLE001 - a scrape still shows the process counters
            log.exception("metrics: the database could not be read")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Metric]:
        from provisiond.install import timeline

        now = self.clock()
        with self.db.read() as session:
            status = timeline.status_view(session, now, self.limits)
            queue = timeline.queue_view(session, now, self.limits)
            outcomes = timeline.install_outcomes(session)
        yield from _hosts(status["states"])
        yield from _slots(queue)
        yield from _installs(outcomes)


def _hosts(states: dict[str, int]) -> Iterator[Metric]:
    hosts = GaugeMetricFamily("provisiond_hosts", "Hosts in the data source, per install state", labels=["state"])
    for state, count in states.items():
        hosts.add_metric([state], count)
    yield hosts


def _cap_labels(group: str | None) -> list[str]:
    return ["global", ""] if group is None else ["group", group]


def _slots(queue: dict[str, Any]) -> Iterator[Metric]:
    """Per cap (cap="global", or cap="group" with the group's name): its
    size, its slots in use, and the waiting hosts it holds back."""
    labels = ["cap", "group"]
    size = GaugeMetricFamily("provisiond_install_slots", "Install slots of a cap (install_cap, or a group's own "
                             "install_cap)", labels=labels)
    in_use = GaugeMetricFamily("provisiond_install_slots_in_use", "Install slots of a cap in use (hosts installing "
                               "under it)", labels=labels)
    length = GaugeMetricFamily("provisiond_install_queue_length", "Waiting hosts held back by a cap (full); waiters "
                               "next in line and stale ones are in provisiond_hosts{state=\"queued\"} only",
                               labels=labels)
    held: dict[str | None, int] = {}
    for waiter in queue["waiting"]:
        if "held_by" in waiter:
            held[waiter["held_by"]] = held.get(waiter["held_by"], 0) + 1
    for cap in queue["caps"]:
        values = _cap_labels(cap["group"])
        size.add_metric(values, cap["cap"])
        in_use.add_metric(values, cap["in_use"])
        length.add_metric(values, held.get(cap["group"], 0))
    yield from (size, in_use, length)


def _installs(outcomes: dict[str | None, int]) -> Iterator[Metric]:
    """Installs on record, by outcome: ``active`` (armed, waiting or
    installing), ``installed``, or ``failed`` with its reason. A gauge, not a
    counter: it is read from the installs table (every instance's installs,
    surviving restarts), and removing a host removes its installs, so it can
    go down. ``delta(provisiond_installs{outcome="failed"}[1h])`` is how
    many failed in the last hour (less any removed)."""
    from provisiond.install.lifecycle import FAIL_REASONS

    installs = GaugeMetricFamily("provisiond_installs", "Installs on record, by outcome (active, installed, failed) "
                                 "and, for failed ones, reason (hw_mismatch, timeout, installer_error, cancelled)",
                                 labels=["outcome", "reason"])
    installs.add_metric(["active", ""], outcomes.get(None, 0))
    installs.add_metric(["installed", ""], outcomes.get("installed", 0))
    for reason in sorted({*FAIL_REASONS, *(o for o in outcomes if o not in (None, "installed"))}):
        installs.add_metric(["failed", reason], outcomes.get(reason, 0))
    yield installs


# --------------------------------------------------------------------------- exposition


class _Everything:
    """A collector yielding every metric of another registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def registry() -> CollectorRegistry:
    """This machine's counters: with a metrics directory (multiprocess mode),
    a fresh registry adding up the files of every process there; else this
    process's default registry."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    collected = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(collected, directory)
    return collected


def exposition(accept: str | None, database: DatabaseCollector | None = None) -> tuple[bytes, str]:
    """The scrape's body and content type: the Prometheus text format, or
    OpenMetrics when ``accept`` asks for it; with ``database``, its metrics too."""
    encoder, content_type = choose_encoder(accept or "")
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Everything(registry()))
    if database is not None:
        combined.register(database)
    return encoder(combined), content_type
