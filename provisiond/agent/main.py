"""``provisiond-agent``: enroll with provisiond, then long-poll for runs, run
them one at a time, and upload their results until acknowledged.

Exit codes: 0 stopped (SIGTERM/SIGINT, or ``--once`` done); 2 the
configuration, the CA file or the state directory cannot be used; 3
provisiond refused this agent (rejected, denied or revoked: an operator
must act; the systemd unit does not restart it, ``RestartPreventExitStatus=3``).

Connection failures, 5xx, 429 and 503 are waited out with exponential
backoff and full jitter (``Retry-After`` honoured); any success resets it.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from provisiond import __version__
from provisiond.agent import config as agent_config
from provisiond.agent import identity as agent_identity
from provisiond.agent import runners
from provisiond.agent.backoff import Backoff
from provisiond.agent.client import Client, ClientError, ConnectionFailed, HTTPError
from provisiond.agent.spool import Record, Spool, SpoolError

log = logging.getLogger("provisiond.agent")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_REFUSED = 3
#: The 403 codes after which provisiond will never take this agent's calls.
REFUSED = ("agent_rejected", "agent_denied", "agent_revoked")
#: A pending agent asks again this often when provisiond does not say.
PENDING_POLL_SECONDS = 15.0
#: Polls that bring no runs are at least this many seconds apart.
MIN_POLL_INTERVAL = 1.0


class Refused(Exception):
    """provisiond refused this agent for good (an operator must act)."""


class StopRequested(BaseException):
    """SIGTERM or SIGINT while the agent was only waiting. A BaseException
    so that no ``except Exception`` on the way swallows it."""


class Stopper:
    """SIGTERM and SIGINT stop the agent between runs: a job that runs is
    finished and its result upload tried once; a wait (a long-poll, a
    backoff) is abandoned at once.

    The signal handler only sets a flag, and raises :class:`StopRequested`
    when the agent is inside :meth:`interruptible` (it takes no lock: a
    handler that did could deadlock on one the interrupted code holds).
    ``event`` lets a thread (a test) stop the agent too."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._signalled = False
        self._interruptible = False

    @property
    def stopping(self) -> bool:
        return self._signalled or self.event.is_set()

    def handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self._signalled = True
        if self._interruptible:
            self._interruptible = False
            raise StopRequested()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        self._interruptible = True
        try:
            if self.stopping:  # a signal that came just before
                raise StopRequested()
            yield
        finally:
            self._interruptible = False

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if asked to stop (then StopRequested)."""
        end = time.monotonic() + seconds
        with self.interruptible():
            while not self.stopping:
                left = end - time.monotonic()
                if left <= 0:
                    return
                time.sleep(min(left, 0.5))
            raise StopRequested()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers for SIGTERM and SIGINT while the agent runs (only the
        main thread can have signal handlers; elsewhere ``event`` stops it)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class Agent:
    """The agent's loop, for one configuration, identity and credential."""

    def __init__(self, config: agent_config.AgentConfig, identity: agent_identity.Identity, client: Client,
                 spool: Spool, *, stopper: Optional[Stopper] = None, backoff: Optional[Backoff] = None,
                 sleep: Optional[Callable[[float], None]] = None) -> None:
        self.config = config
        self.identity = identity
        self.client = client
        self.spool = spool
        self.stopper = stopper or Stopper()
        self.backoff = backoff or Backoff()
        self.sleep = sleep or self.stopper.sleep
        self.ticket = config.ticket
        self.context = runners.Context(state_dir=config.state_dir, hostname=identity.hostname,
                                       machine_id=identity.machine_id, serial=identity.serial)
        self.pending: Dict[str, Record] = {}
        self._delay = 0.0
        self._awaiting_acceptance = False
        self._unknown = False

    # ------------------------------------------------------------ the loop

    def run(self, once: bool = False) -> int:
        """Enroll, then poll and run until stopped (``once``: until one poll's
        runs are run and their results delivered)."""
        try:
            self.enroll()
            for record in self.spool.pending():
                self.pending[str(record.run_id)] = record
            if self.pending:
                log.info("%d result(s) not yet acknowledged by provisiond: sending them", len(self.pending))
            return self._loop(once)
        except Refused as exc:
            log.error("provisiond refused this agent: %s. It stops; an operator must decide "
                      "(provctl agents list), then restart provisiond-agent", exc)
            return EXIT_REFUSED
        except StopRequested:
            log.info("stopping, as asked")
            return EXIT_OK

    def _loop(self, once: bool) -> int:
        polled = False
        while True:
            if once and polled and not self.pending:
                return EXIT_OK
            self._wait()  # after a failure, or what provisiond asked for
            if self.stopper.stopping:
                break
            if self._unknown:
                self.enroll()
            if self.pending and not self.flush():
                continue
            if once and polled:
                return EXIT_OK
            runs = self.poll()
            if runs is None:
                if once and self._awaiting_acceptance:
                    log.warning("--once: this agent waits for an operator's acceptance; nothing to run")
                    return EXIT_OK
                continue
            polled = True
            for run in runs:
                if self.stopper.stopping:
                    log.info("stopping: the %d run(s) not begun are delivered again later", len(runs))
                    break
                self.handle(run)
        log.info("stopping, as asked")
        return EXIT_OK

    def _wait(self) -> None:
        delay, self._delay = self._delay, 0.0
        if delay > 0:
            self.sleep(delay)

    # ------------------------------------------------------------ enrollment

    def enroll(self) -> str:
        """Introduce this agent until provisiond answers; returns its state
        (accepted or pending). A refused ticket is dropped and the agent
        enrolls without one, as a pending agent an operator must accept."""
        while True:
            if self.stopper.stopping:
                raise StopRequested()
            try:
                answer = self.client.enroll(hostname=self.identity.hostname, machine_id=self.identity.machine_id,
                                            serial=self.identity.serial, ticket=self.ticket)
            except HTTPError as exc:
                if exc.status == 403 and exc.error in REFUSED:
                    raise Refused(str(exc)) from None
                if self.ticket and _ticket_refused(exc):
                    log.error("provisiond refused the enrollment ticket (%s: %s); enrolling without it: an "
                              "operator must accept this agent (provctl agents accept)", exc.error or exc.status,
                              exc.message)
                    self._forget_ticket()
                    continue
                self._failed("enrollment", exc)
                self._wait()
                continue
            except ConnectionFailed as exc:
                self._failed("enrollment", exc)
                self._wait()
                continue
            self.backoff.reset()
            self._unknown = False
            if self.ticket:
                self._forget_ticket()
            state = str(answer.body.get("state") or "")
            self._awaiting_acceptance = state == "pending"
            log.info("enrolled with %s as agent %s: %s%s (HTTP %d)", self.client.server_url,
                     answer.body.get("agent_id"), state or "?",
                     f" for host {answer.body['host']}" if answer.body.get("host") else "", answer.status)
            return state

    def _forget_ticket(self) -> None:
        """The ticket is single-use (and a secret): gone from memory and from
        the configuration file once used or refused."""
        self.ticket = None
        try:
            agent_config.drop_ticket(self.config.path)
        except (agent_config.ConfigError, OSError) as exc:
            log.warning("could not remove the used enrollment ticket from %s: %s", self.config.path, exc)

    # ------------------------------------------------------------ polling

    def poll(self) -> Optional[List[Dict[str, Any]]]:
        """One long-poll: the runs it answered, or None after a failure
        (``_delay`` then says how long to wait)."""
        began = time.monotonic()
        try:
            with self.stopper.interruptible():
                answer = self.client.poll(self.config.poll_wait)
        except HTTPError as exc:
            if exc.status == 403 and exc.error == "agent_pending":
                if not self._awaiting_acceptance:
                    log.info("this agent waits for an operator's acceptance (provctl agents accept)")
                self._awaiting_acceptance = True
                self.backoff.reset()
                self._delay = _seconds(exc.body.get("poll_after"), PENDING_POLL_SECONDS)
                return None
            self._refused_or_unknown(exc)
            self._failed("poll", exc)
            return None
        except ConnectionFailed as exc:
            self._failed("poll", exc)
            return None
        self.backoff.reset()
        if self._awaiting_acceptance:
            log.info("an operator accepted this agent")
            self._awaiting_acceptance = False
        runs = answer.body.get("runs")
        if not isinstance(runs, list):
            log.error("provisiond's poll answer has no list of runs; asking again")
            self._delay = self.backoff.next_delay()
            return None
        if not runs:
            # provisiond's hint, and never faster than MIN_POLL_INTERVAL (a
            # poll_wait of 0, or a server that answers at once, must not
            # make a busy loop).
            self._delay = max(_seconds(answer.body.get("poll_after"), 0.0),
                              MIN_POLL_INTERVAL - (time.monotonic() - began))
        return [run for run in runs if isinstance(run, dict)]

    # ------------------------------------------------------------ runs

    def handle(self, run: Dict[str, Any]) -> None:
        """Run one delivered run (unless this agent began it before: then
        its stored result is sent again) and try to upload its result."""
        try:
            record, fresh = self.spool.prepare(run)
        except SpoolError as exc:
            log.error("a run provisiond delivered cannot be kept: %s; it is ignored", exc)
            return
        what = f"run {run.get('run_id')} (job {run.get('job_id')}, {run.get('type')}, attempt {run.get('attempt')})"
        if fresh:
            log.info("%s: starting", what)
            result = runners.run_job(run, self.context)
            record = self.spool.finish(record, result)
            log.info("%s: %s%s%s", what, result["status"],
                     f", exit code {result['exit_code']}" if result.get("exit_code") is not None else "",
                     f": {result['error']}" if result.get("error") else "")
        else:
            log.info("%s was delivered again: this agent began it before, so it is not run again; its result "
                     "(%s) is sent again with the same key", what, (record.result or {}).get("status"))
        self.pending[str(record.run_id)] = record
        self.deliver(record)

    def flush(self) -> bool:
        """Try to upload every result not yet acknowledged; False when one
        failed (``_delay`` says how long to wait)."""
        for run_id in list(self.pending):
            if self.stopper.stopping or not self.deliver(self.pending[run_id]):
                return False
        return True

    def deliver(self, record: Record) -> bool:
        """One upload attempt; True once provisiond has the result (or said
        it never will take it)."""
        try:
            answer = self.client.send_result(record.run_id, record.body())
        except HTTPError as exc:
            if _never_accepted(exc):
                log.error("provisiond will not take the result of run %s (%s); it is not sent again",
                          record.run_id, exc)
                self._settled(record, f"refused: {exc}")
                return True
            self._refused_or_unknown(exc)
            self._failed(f"result of run {record.run_id}", exc)
            return False
        except ConnectionFailed as exc:
            self._failed(f"result of run {record.run_id}", exc)
            return False
        self.backoff.reset()
        recorded = answer.body.get("recorded")
        self._settled(record, "recorded" if recorded else "recorded already")
        log.info("run %s: result %s by provisiond", record.run_id,
                 "recorded" if recorded else "already recorded (sent again)")
        return True

    def _settled(self, record: Record, how: str) -> None:
        self.spool.acknowledge(record, how)
        self.pending.pop(str(record.run_id), None)

    # ------------------------------------------------------------ failures

    def _refused_or_unknown(self, exc: HTTPError) -> None:
        if exc.status == 403 and exc.error in REFUSED:
            raise Refused(str(exc))
        if exc.status == 401:
            # provisiond does not know this credential (an operator deleted
            # the agent): enroll again, as a pending agent.
            log.warning("provisiond does not know this agent's credential (%s): enrolling again", exc.message)
            self._unknown = True

    def _failed(self, what: str, exc: ClientError) -> None:
        retry_after = exc.retry_after if isinstance(exc, HTTPError) else None
        self._delay = self.backoff.next_delay(retry_after)
        level = logging.WARNING if self.backoff.failures <= 3 else logging.ERROR
        log.log(level, "%s failed: %s; trying again in %.1f s", what, exc, self._delay)


def _ticket_refused(exc: HTTPError) -> bool:
    """An enrollment ticket provisiond will never take: unknown (404), used
    or expired (410), or its install's agent enrolled already (409); not
    ``ticket_not_yet`` (the install has not finished: try again later)."""
    if exc.status in (404, 410):
        return True
    return exc.status == 409 and exc.error != "ticket_not_yet"


def _never_accepted(exc: HTTPError) -> bool:
    """A result answer meaning provisiond will never record this result:
    another result is there (409), the run is not this agent's or is gone
    (404), or the body is refused (other 4xx but auth and throttling)."""
    return 400 <= exc.status < 500 and exc.status not in (401, 403, 408, 425, 429)


def _seconds(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return default
    return float(min(value, 3600))


# ---------------------------------------------------------------- the program


class _JournalFormatter(logging.Formatter):
    """Under systemd, a ``<N>`` syslog priority prefix: journald files each
    line at its level (and adds the time itself)."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def setup_logging(level: str = "INFO") -> None:
    """Logs to stderr: journald keeps them under systemd."""
    if os.environ.get("JOURNAL_STREAM"):
        formatter: logging.Formatter = _JournalFormatter("%(name)s: %(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    if not root.handlers:  # a host program (a test) may have its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.getLogger("provisiond").setLevel(level)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="provisiond-agent",
                                     description="Runs provisiond's jobs on this host: enrolls with provisiond, "
                                                 "long-polls it for work over HTTPS and uploads the results.")
    parser.add_argument("--config", help=f"the configuration file (default: ${agent_config.ENV_VAR}, else "
                                         f"{agent_config.DEFAULT_PATH})")
    parser.add_argument("--once", action="store_true",
                        help="poll once, run what came, upload the results and exit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, *, stopper: Optional[Stopper] = None,
         sleep: Optional[Callable[[float], None]] = None) -> int:
    """The ``provisiond-agent`` program (``stopper`` and ``sleep``: for tests)."""
    args = parse_args(argv)
    if args.version:
        print(f"provisiond-agent {__version__}")
        return EXIT_OK
    setup_logging()
    path = agent_config.config_path(args.config)
    try:
        config = agent_config.load(path)
        setup_logging(config.log_level)
        agent_config.check_ca(config)
        identity = agent_identity.read_identity()
        credential = agent_identity.load_or_create_credential(config.state_dir)
        client = Client(config.server_url, config.ca_file, credential)
    except (agent_config.ConfigError, agent_identity.CredentialError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a CA file the TLS library refuses
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    spool = Spool(config.state_dir)
    try:
        spool.lock()
    except (SpoolError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    try:
        interrupted = spool.recover()
        if interrupted:
            log.warning("%d run(s) were under way when the agent stopped: reported failed, not run again",
                        interrupted)
        spool.cleanup()
        log.info("provisiond-agent %s starting: server %s, host %s, machine id %s, serial %s", __version__,
                 config.server_url, identity.hostname, identity.machine_id or "(none)", identity.serial or "(none)")
        stopper = stopper or Stopper()
        agent = Agent(config, identity, client, spool, stopper=stopper, sleep=sleep)
        with stopper.installed():
            return agent.run(once=args.once)
    finally:
        spool.unlock()


if __name__ == "__main__":
    sys.exit(main())
