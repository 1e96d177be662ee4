"""examples/wfspec.py compiles to the WfSpec the README promises and registers cleanly."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from littlehorse.model import PutWfSpecRequest, ThreadSpec, VariableType

from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wfspec.py"

EXCEPTION_NAMES = {
    "comfyui-invalid-workflow",
    "comfyui-validation-error",
    "comfyui-missing-node",
    "comfyui-execution-error",
    "comfyui-unsafe-output-path",
    "comfyui-prompt-conflict",
}
JOB_EXCEPTION_NAMES = EXCEPTION_NAMES | {
    "comfyui-invalid-job",
    "comfyui-invalid-input",
    "comfyui-unknown-template",
    "comfyui-output-too-large",
    "comfyui-output-store-denied",
}


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("comfyui_wfspec_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def compiled(example: ModuleType) -> PutWfSpecRequest:
    request: PutWfSpecRequest = example.build_workflow().compile()
    return request


def _task_node_name(entry: ThreadSpec, task_def: str = "execute-comfyui-workflow") -> str:
    (name,) = [
        name
        for name, node in entry.nodes.items()
        if node.HasField("task") and node.task.task_def_id.name == task_def
    ]
    return name


def test_entrypoint_takes_a_required_json_workflow(compiled: PutWfSpecRequest) -> None:
    assert compiled.name == "comfyui-generate"
    entry = compiled.thread_specs[compiled.entrypoint_thread_name]
    variables = {v.var_def.name: v for v in entry.variable_defs}
    assert variables["workflow"].var_def.type_def.primitive_type == VariableType.JSON_OBJ
    assert variables["workflow"].required
    assert variables["result"].var_def.type_def.primitive_type == VariableType.JSON_OBJ


def test_task_has_long_timeout_and_backoff_retries(compiled: PutWfSpecRequest) -> None:
    entry = compiled.thread_specs[compiled.entrypoint_thread_name]
    task = entry.nodes[_task_node_name(entry)].task
    assert task.task_def_id.name == "execute-comfyui-workflow"
    # Far above the server's 60 s default, which would cut most ComfyUI jobs short, and above
    # the worker's own default job deadline, so the worker gives up first.
    assert task.timeout_seconds == 2100
    assert task.timeout_seconds > Settings.model_fields["job_deadline"].default
    assert task.retries == 3
    assert task.HasField("exponential_backoff")
    assert task.exponential_backoff.base_interval_ms == 5_000
    assert task.exponential_backoff.max_delay_ms == 120_000
    assert task.exponential_backoff.multiplier == pytest.approx(3.0)
    # The workflow variable is the task's only input.
    assert [v.variable_name for v in task.variables] == ["workflow"]


@pytest.mark.parametrize(
    ("task_def", "names"),
    [("execute-comfyui-workflow", EXCEPTION_NAMES), ("run-comfyui-job", JOB_EXCEPTION_NAMES)],
)
def test_each_business_exception_has_a_failing_handler(
    compiled: PutWfSpecRequest, task_def: str, names: set[str]
) -> None:
    entry = compiled.thread_specs[compiled.entrypoint_thread_name]
    handlers = entry.nodes[_task_node_name(entry, task_def)].failure_handlers
    assert {h.specific_failure for h in handlers} == names
    for handler in handlers:
        thread = compiled.thread_specs[handler.handler_spec_name]
        exits = [n.exit for n in thread.nodes.values() if n.HasField("exit")]
        assert len(exits) == 1
        failure = exits[0].failure_def
        assert failure.failure_name == handler.specific_failure
        assert failure.message
        mutations = [
            m for n in thread.nodes.values() for e in n.outgoing_edges for m in e.variable_mutations
        ]
        assert [(m.lhs_name, m.rhs_assignment.literal_value.str) for m in mutations] == [
            ("failure", handler.specific_failure)
        ]


def test_task_output_lands_in_result(compiled: PutWfSpecRequest) -> None:
    entry = compiled.thread_specs[compiled.entrypoint_thread_name]
    task_name = _task_node_name(entry)
    mutations = [m for e in entry.nodes[task_name].outgoing_edges for m in e.variable_mutations]
    assert [(m.lhs_name, m.rhs_assignment.node_output.node_name) for m in mutations] == [
        ("result", task_name)
    ]


def test_a_given_job_passes_an_image_in_and_gets_a_url_out(compiled: PutWfSpecRequest) -> None:
    entry = compiled.thread_specs[compiled.entrypoint_thread_name]
    variables = {v.var_def.name: v for v in entry.variable_defs}
    assert variables["job"].var_def.type_def.primitive_type == VariableType.JSON_OBJ
    assert not variables["job"].required
    assert variables["image_url"].var_def.type_def.primitive_type == VariableType.STR
    job_task = _task_node_name(entry, "run-comfyui-job")
    node = entry.nodes[job_task].task
    assert [v.variable_name for v in node.variables] == ["job"]
    assert node.timeout_seconds == 2100 and node.retries == 3
    # Only when a job is given: the edge into the job step tests job != null.
    (guard,) = [
        e for n in entry.nodes.values() for e in n.outgoing_edges if e.sink_node_name == job_task
    ]
    assert guard.condition.expression.lhs.variable_name == "job"
    mutations = [m for e in entry.nodes[job_task].outgoing_edges for m in e.variable_mutations]
    assert [(m.lhs_name, m.rhs_assignment.json_path) for m in mutations] == [
        ("image_url", "$.files[0].url")
    ]


def test_main_registers_the_spec_using_lhc_env(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeLittleHorse() as fake:
        monkeypatch.setenv("LHC_API_HOST", fake.host)
        monkeypatch.setenv("LHC_API_PORT", str(fake.port))
        example.main()
        assert [spec.name for spec in fake.wf_specs] == ["comfyui-generate"]
        assert fake.wf_specs[0] == example.build_workflow().compile()
