"""A job's identity: one prompt id per TaskRun, whatever else shares the ComfyUI."""

from __future__ import annotations

from littlehorse.config import LHConfig
from littlehorse.model import TaskRunId, WfRunId

from comfyui_worker.comfyui.models import PromptTag, parse_history, parse_queue
from comfyui_worker.lh.identity import (
    JobIdentity,
    JobScope,
    given_digest,
    wf_run_name,
    wf_run_path,
)
from comfyui_worker.settings import Settings


def run_id(*wf_run: str, guid: str = "0-1") -> TaskRunId:
    """A TaskRunId whose WfRun is the last of `wf_run`, each a child of the one before."""
    wf = WfRunId(id=wf_run[0])
    for child in wf_run[1:]:
        wf = WfRunId(id=child, parent_wf_run_id=wf)
    return TaskRunId(wf_run_id=wf, task_guid=guid)


def pid(task_run: TaskRunId, tenant: str = "default", namespace: str = "") -> str:
    return JobIdentity.of(task_run, JobScope(tenant=tenant, namespace=namespace)).prompt_id


def test_every_attempt_of_a_task_run_has_one_prompt_id() -> None:
    a = pid(run_id("wf-1"))
    assert a == pid(run_id("wf-1"))
    assert len(a) == 36 and a[14] == "5"  # UUIDv5


def test_the_guid_alone_is_not_the_identity() -> None:
    """The real server's guid is "0-1" for the first task of every WfRun."""
    assert pid(run_id("wf-1")) != pid(run_id("wf-2"))
    assert pid(run_id("wf-1", guid="0-1")) != pid(run_id("wf-1", guid="0-2"))


def test_tenant_namespace_and_parents_each_count() -> None:
    base = pid(run_id("order-1"))
    assert base != pid(run_id("order-1"), tenant="acme")
    assert base != pid(run_id("order-1"), namespace="west")
    assert pid(run_id("p1", "child")) != pid(run_id("p2", "child")) != pid(run_id("child"))


def test_parts_cannot_run_into_each_other() -> None:
    # "_" joins the WfRun path for display; the prompt id keeps the parts apart.
    assert wf_run_name(run_id("a_b").wf_run_id) == wf_run_name(run_id("a", "b").wf_run_id)
    assert pid(run_id("a_b")) != pid(run_id("a", "b"))
    assert pid(run_id("x"), tenant="a", namespace="b") != pid(
        run_id("x"), tenant="b", namespace="a"
    )


def test_names_for_logs_and_operators() -> None:
    identity = JobIdentity.of(run_id("parent", "child", guid="2-5"), JobScope("acme", "east"))
    assert wf_run_path(run_id("parent", "child").wf_run_id) == ("parent", "child")
    assert identity.wf_run_id == "parent_child" and identity.task_guid == "2-5"
    assert identity.task_run == "parent_child/2-5"
    assert identity.describe() == "east:acme/parent_child/2-5"
    assert JobIdentity.of(run_id("w"), JobScope()).describe() == "default/w/0-1"


def test_scope_comes_from_the_tenant_and_the_namespace_setting() -> None:
    config = LHConfig()
    config._configs = {"LHC_TENANT_ID": "acme"}
    settings = Settings(_env_file=None, job_namespace="east")  # type: ignore[call-arg]
    assert JobScope.of(config, settings) == JobScope(tenant="acme", namespace="east")
    config._configs = {}
    assert JobScope.of(config, settings).tenant == "default"


def test_the_digest_is_of_what_the_task_was_given_in_any_key_order() -> None:
    given = {"workflow": {"1": {"class_type": "A", "inputs": {"x": 1, "y": "é"}}}}
    reordered = {"workflow": {"1": {"inputs": {"y": "é", "x": 1}, "class_type": "A"}}}
    assert given_digest("t", given) == given_digest("t", reordered)
    assert given_digest("t", given) != given_digest("u", given)
    changed = {"workflow": {"1": {"class_type": "A", "inputs": {"x": 2, "y": "é"}}}}
    assert given_digest("t", given) != given_digest("t", changed)


def test_the_tag_is_read_back_from_the_queue_and_the_history() -> None:
    tag = PromptTag(job="default/w/0-1", digest="d" * 64)
    extra = {"client_id": "c", **tag.as_extra_data()}
    item = [3, "p", {}, extra, ["2"]]
    queue = parse_queue({"queue_running": [item], "queue_pending": []})
    assert queue.tags == {"p": tag} and queue.client_ids == {"p": "c"}
    entry = parse_history({"p": {"prompt": item, "outputs": {}, "status": {}}}, "p")
    assert entry is not None and entry.tag == tag and entry.client_id == "c"
    untagged = parse_queue({"queue_running": [], "queue_pending": [[1, "q", {}, {}, []]]})
    assert untagged.tags == {"q": None}
    # Something else under our key is no tag.
    assert PromptTag.from_extra_data({"comfyui_worker": {"job": 1}}) is None
