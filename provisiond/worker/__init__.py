"""The worker role (``provisiond worker``): durable background work.

- :mod:`.queue`: the database-backed work queue (hooks now; agent jobs and
  schedules next): claimed with a lease, retried with backoff, every attempt
  and outcome an event, surviving restarts of every process;
- :mod:`.runner`: the loop that carries out work items;
- :mod:`.process`: the role itself: the power worker, the reaper and the
  work runner in one process, with its health listener.
"""
