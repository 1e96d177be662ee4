"""Progress figures from ComfyUI's events, the NodeRun log throttle and `/jobs` rows."""

from __future__ import annotations

from comfyui_worker.comfyui.events import Event
from comfyui_worker.constants import JobOutcome
from comfyui_worker.observability.progress import (
    JobBoard,
    JobState,
    JobView,
    LogThrottle,
    Progress,
)
from comfyui_worker.observability.recorder import RecordingObserver

NODES = {"1": "EmptyImage", "2": "KSampler", "3": "SaveImage", "4": "PreviewImage"}


def feed(progress: Progress, *events: tuple[str, dict[str, object]]) -> None:
    for kind, data in events:
        progress.update(Event(kind, {"prompt_id": "p", **data}))


def test_percent_counts_the_nodes_that_will_run_and_the_running_nodes_steps() -> None:
    progress = Progress(nodes=dict(NODES))
    feed(progress, ("execution_cached", {"nodes": ["1"]}))  # 3 nodes left to run
    assert progress.percent == 0.0
    feed(progress, ("executing", {"node": "2"}), ("progress", {"value": 5, "max": 20, "node": "2"}))
    assert progress.percent == round(100 * 0.25 / 3, 1)
    assert progress.describe() == "8%, node 2 (KSampler) step 5/20"
    feed(progress, ("executing", {"node": "3"}))
    assert progress.percent == round(100 / 3, 1)
    feed(progress, ("executing", {"node": "4"}), ("executing", {"node": None}))
    assert progress.finished and progress.percent == 100.0


def test_unrelated_events_do_not_count_as_changes() -> None:
    progress = Progress(nodes=dict(NODES))
    assert not progress.update(Event("executed", {"node": "3", "output": {}}))
    assert not progress.update(Event("status", {}))
    assert progress.update(Event("progress", {"value": "x", "max": None}))
    assert progress.percent == 0.0  # garbage numbers count as nothing, not as an error


def test_throttle_lets_a_line_through_every_10_percent_or_10_seconds() -> None:
    throttle = LogThrottle()
    assert throttle.due(1.0, now=0.0)  # the first figure
    assert not throttle.due(5.0, now=1.0)
    assert throttle.due(11.0, now=2.0)  # 10 % further
    assert not throttle.due(12.0, now=3.0)
    assert throttle.due(12.5, now=12.5)  # 10 s later
    assert not throttle.due(12.5, now=40.0)  # no movement, no line
    lines = sum(throttle.due(p / 10, now=13.0) for p in range(126, 1001))
    # 12.5 % to 100 % in steps of 0.1 % within one second: 22.5, 32.5 ... 92.5.
    assert lines == 8


def test_board_rows_say_where_the_job_is() -> None:
    board = JobBoard()
    board.add(JobView(prompt_id="p", wf_run_id="wf", task_run_id="guid", attempt=1))
    (row,) = board.snapshot()
    assert row["state"] == "waiting" and row["detail"] == "waiting for a slot"
    assert (row["wf_run_id"], row["task_run_id"], row["attempt"]) == ("wf", "guid", 1)
    board.update("p", state=JobState.QUEUED, queue_position=2)
    assert board.snapshot()[0]["detail"] == "queued in ComfyUI at position 2"
    view = board.get("p")
    assert view is not None
    view.progress.nodes = {"9": "KSampler"}
    assert board.apply("p", Event("executing", {"node": "9", "prompt_id": "p"})) is view
    assert board.apply("p", Event("progress", {"node": "9", "value": 1, "max": 4})) is view
    row = board.snapshot()[0]
    assert row["state"] == "running" and row["node"] == "9" and row["node_type"] == "KSampler"
    assert row["percent"] == 25.0 and row["detail"] == "running: 25%, node 9 (KSampler) step 1/4"
    assert row["elapsed_seconds"] >= 0
    board.remove("p")
    assert board.snapshot() == [] and board.apply("p", Event("progress", {})) is None


def test_two_attempts_of_one_prompt_each_keep_their_row_until_they_end() -> None:
    """A retry here while the earlier attempt still runs (LittleHorse timed it out) attaches
    to the same prompt: the earlier attempt ending must not take the retry's row off /jobs."""
    board = JobBoard()
    earlier = RecordingObserver(board, task_run_id="guid", attempt=0)
    retry = RecordingObserver(board, task_run_id="guid", attempt=1)
    earlier.waiting("p")
    retry.waiting("p")
    earlier.close(JobOutcome.FAILED, "DeadlineExceededError")
    (row,) = board.snapshot()
    assert row["attempt"] == 1
    retry.close(JobOutcome.SUCCESS)
    assert board.snapshot() == []
