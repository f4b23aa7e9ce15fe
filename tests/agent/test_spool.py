"""At-least-once delivery without running anything twice: the run record
is on disk before the job runs; a re-delivered run gets its stored result
with the same key; a run the agent began and never finished is reported
failed, never run again."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from provisiond.agent import runners, spool
from provisiond.agent.spool import Spool, SpoolError


def delivered(run_id: Any = 7, **extra: Any) -> dict[str, Any]:
    return {"run_id": run_id, "job_id": 3, "type": "script", "payload": {"script": "true"},
            "timeout_seconds": 60, "lease_seconds": 120, "attempt": 1, **extra}


def test_a_new_run_is_recorded_before_it_runs(tmp_path: Path):
    store = Spool(tmp_path)
    record, fresh = store.prepare(delivered())
    assert fresh and record.state == "started" and len(record.key) == 32 and record.key.isalnum()
    path = tmp_path / "runs" / "7.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["state"] == "started" and on_disk["key"] == record.key and on_disk["result"] is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "runs").stat().st_mode) == 0o700


def test_a_finished_run_delivered_again_gets_the_same_result_and_key(tmp_path: Path):
    store = Spool(tmp_path)
    record, _ = store.prepare(delivered())
    finished = store.finish(record, runners.result("succeeded", exit_code=0, output="done"))
    again, fresh = Spool(tmp_path).prepare(delivered(attempt=2))  # a new agent process, the same spool
    assert not fresh and again.key == record.key and again.result == finished.result
    body = again.body()
    assert body["key"] == record.key and body["status"] == "succeeded" and body["output"] == "done"


def test_a_run_begun_by_an_agent_that_died_is_never_run_again(tmp_path: Path):
    record, fresh = Spool(tmp_path).prepare(delivered())
    assert fresh
    # The agent dies here, mid-run. The run comes again after its lease:
    again, fresh = Spool(tmp_path).prepare(delivered(attempt=2))
    assert not fresh
    assert again.key == record.key and again.state == "finished"
    assert again.result is not None and again.result["status"] == "failed"
    assert again.result["error"] == spool.INTERRUPTED == "the agent stopped while this run was under way"
    third, fresh = Spool(tmp_path).prepare(delivered(attempt=3))
    assert not fresh and third.result == again.result and third.key == record.key


def test_recover_at_startup_reports_interrupted_runs(tmp_path: Path):
    store = Spool(tmp_path)
    store.prepare(delivered(1))
    done, _ = store.prepare(delivered(2))
    store.finish(done, runners.result("succeeded"))
    assert Spool(tmp_path).recover() == 1
    pending = Spool(tmp_path).pending()
    assert sorted(r.run_id for r in pending) == [1, 2]
    assert {r.run_id: r.result["status"] for r in pending if r.result} == {1: "failed", 2: "succeeded"}


def test_acknowledged_results_are_not_pending_and_are_deleted_after_seven_days(tmp_path: Path):
    store = Spool(tmp_path)
    old, _ = store.prepare(delivered(1))
    store.acknowledge(store.finish(old, runners.result("succeeded")), "recorded")
    new, _ = store.prepare(delivered(2))
    store.acknowledge(store.finish(new, runners.result("succeeded")), "recorded")
    unacked, _ = store.prepare(delivered(3))
    store.finish(unacked, runners.result("failed"))
    assert [r.run_id for r in store.pending()] == [3]
    # run 1 was acknowledged eight days ago
    path = tmp_path / "runs" / "1.json"
    data = json.loads(path.read_text())
    data["acknowledged_at"] = "2000-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))
    (tmp_path / "runs" / ".2.json.abc.tmp").write_text("left by a crash")
    assert store.cleanup(now=time.time()) == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["2.json", "3.json"]
    assert store.cleanup(now=time.time() + 8 * 86400) == 1  # run 2's turn; run 3 is not acknowledged
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["3.json"]


def test_an_unreadable_record_counts_as_begun(tmp_path: Path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "9.json").write_text("{broken")
    record, fresh = Spool(tmp_path).prepare(delivered(9))
    assert not fresh and record.result is not None and record.result["error"] == spool.INTERRUPTED


@pytest.mark.parametrize("run_id", ["../etc/passwd", "a/b", "", None, True, 1.5, "x" * 200])
def test_run_ids_that_are_not_file_names_are_refused(tmp_path: Path, run_id: Any):
    with pytest.raises(SpoolError):
        Spool(tmp_path).prepare(delivered(run_id))
    assert not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


def test_one_agent_per_spool(tmp_path: Path):
    first = Spool(tmp_path)
    first.lock()
    try:
        with pytest.raises(SpoolError, match="another provisiond-agent"):
            Spool(tmp_path).lock()
    finally:
        first.unlock()
    second = Spool(tmp_path)
    second.lock()
    second.unlock()


def test_writes_are_atomic(tmp_path: Path):
    store = Spool(tmp_path)
    record, _ = store.prepare(delivered())
    inode = os.stat(tmp_path / "runs" / "7.json").st_ino
    store.finish(record, runners.result("succeeded"))
    assert os.stat(tmp_path / "runs" / "7.json").st_ino != inode
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["7.json"]
