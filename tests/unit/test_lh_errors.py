"""Which failures LittleHorse sees as business exceptions, and what they carry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from littlehorse.model import LHTaskError, ReportTaskRun
from littlehorse.model import LHTaskException as LHTaskExceptionModel
from littlehorse.utils import extract_value, to_variable_value

from comfyui_worker.bounds import MAX_ERROR_BYTES
from comfyui_worker.constants import ExceptionName
from comfyui_worker.exceptions import (
    BrokenTemplateError,
    ExecutionError,
    ExecutionInterrupted,
    InputFetchError,
    InvalidInputError,
    InvalidJobError,
    InvalidParamsError,
    InvalidWorkflowError,
    JobTimeoutError,
    MissingNodeError,
    NodeError,
    NodeInputError,
    OutputMissingError,
    OutputStoreDeniedError,
    OutputStoreError,
    OutputTooLargeError,
    PromptConflictError,
    PromptLostError,
    PromptValidationError,
    ServerError,
    TemplateProblem,
    TemplatesUnreadableError,
    TransportError,
    UnknownTemplateError,
    UnsafeOutputPathError,
)
from comfyui_worker.lh.errors import business_name, redact_report, to_lh_exception

NODE = NodeError(
    node_id="3",
    class_type="KSampler",
    errors=(
        NodeInputError(
            type="value_not_in_list",
            message="Value not in list",
            details="ckpt_name: 'x.safetensors'",
            input_name="ckpt_name",
        ),
    ),
)
CASES: list[tuple[Exception, ExceptionName]] = [
    (InvalidWorkflowError("workflow is empty"), ExceptionName.INVALID_WORKFLOW),
    (
        PromptValidationError(
            "Prompt outputs failed validation", error_type="x", node_errors=(NODE,)
        ),
        ExceptionName.VALIDATION_ERROR,
    ),
    (MissingNodeError("missing", error_type="invalid_prompt"), ExceptionName.MISSING_NODE),
    (
        ExecutionError(
            prompt_id="p",
            node_id="3",
            node_type="KSampler",
            exception_type="RuntimeError",
            exception_message="mat1 and mat2 shapes cannot be multiplied",
            traceback=[f"frame {i}" for i in range(20)],
        ),
        ExceptionName.EXECUTION_ERROR,
    ),
    (
        UnsafeOutputPathError("bad", node_id="9", filename="../x", subfolder=""),
        ExceptionName.UNSAFE_OUTPUT_PATH,
    ),
    (InvalidJobError("invalid job: foo: unknown key"), ExceptionName.INVALID_JOB),
    (
        InvalidInputError("not valid base64", input_name="photo.png", rule="base64"),
        ExceptionName.INVALID_INPUT,
    ),
    (OutputTooLargeError("too big", size=10, limit=5), ExceptionName.OUTPUT_TOO_LARGE),
    (
        OutputMissingError("gone", prompt_id="p", missing=["/comfyui/output/a.png"]),
        ExceptionName.OUTPUT_MISSING,
    ),
    (
        OutputStoreDeniedError("bucket 'b' does not exist", bucket="b"),
        ExceptionName.OUTPUT_STORE_DENIED,
    ),
    (
        PromptConflictError("p", ours="default/wf-2/0-1", theirs="default/wf-1/0-1"),
        ExceptionName.PROMPT_CONFLICT,
    ),
    (UnknownTemplateError("no template 'x'", template="x"), ExceptionName.UNKNOWN_TEMPLATE),
    (
        UnknownTemplateError.of("t", [TemplateProblem(None, "unknown-template", "no such one")]),
        ExceptionName.UNKNOWN_TEMPLATE,
    ),
    (
        InvalidParamsError.of("t", [TemplateProblem("seed", "type", "expected an integer")]),
        ExceptionName.INVALID_PARAMS,
    ),
    (
        BrokenTemplateError.of("t", [TemplateProblem("seed", "node", "no node 'KSampler'")]),
        ExceptionName.BROKEN_TEMPLATE,
    ),
]


@pytest.mark.parametrize(("exc", "name"), CASES)
def test_business_exceptions_have_stable_names_and_structured_content(
    exc: Any, name: ExceptionName
) -> None:
    assert business_name(exc) is name
    lh_exc = to_lh_exception(exc, name)
    assert lh_exc.exception_name == name.value
    content = extract_value(lh_exc.content)
    assert isinstance(content, dict) and content["message"] == str(exc)
    json.dumps(content)


def test_template_errors_name_the_template_the_parameter_and_the_rule() -> None:
    content = extract_value(to_lh_exception(CASES[-2][0], ExceptionName.INVALID_PARAMS).content)
    assert content == {
        "message": "template 't': expected an integer",
        "template": "t",
        "parameter": "seed",
        "rule": "type",
        "problems": [{"parameter": "seed", "rule": "type", "message": "expected an integer"}],
    }


def test_content_names_the_node() -> None:
    content = extract_value(to_lh_exception(CASES[1][0], ExceptionName.VALIDATION_ERROR).content)
    assert content["node_errors"][0]["node_id"] == "3"
    assert content["node_errors"][0]["errors"][0]["input_name"] == "ckpt_name"
    execution = extract_value(to_lh_exception(CASES[3][0], ExceptionName.EXECUTION_ERROR).content)
    assert execution["node_type"] == "KSampler" and len(execution["traceback"]) == 5


@pytest.mark.parametrize(
    "exc",
    [
        TransportError("unreachable"),
        ServerError("503", status_code=503),
        PromptLostError("p"),
        ExecutionInterrupted(prompt_id="p"),
        JobTimeoutError("p", 5),
        InputFetchError("HTTP 503", input_name="m.png", rule="fetch"),
        OutputStoreError("store unreachable", bucket="b"),
        TemplatesUnreadableError("workflows.yaml is not valid YAML", template="t"),
    ],
)
def test_technical_failures_stay_retryable(exc: Exception) -> None:
    assert business_name(exc) is None


def oom(exception_type: str, message: str) -> ExecutionError:
    return ExecutionError(
        prompt_id="p",
        node_id="3",
        node_type="KSampler",
        exception_type=exception_type,
        exception_message=message,
    )


@pytest.mark.parametrize(
    "exc",
    [
        oom("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
        oom("torch.cuda.OutOfMemoryError", "CUDA out of memory."),
        oom("RuntimeError", "CUDA error: out of memory"),
        oom("RuntimeError", "Allocation on device 0 would exceed allowed memory. (out of memory)"),
        oom("RuntimeError", "ALLOCATION ON DEVICE failed"),
    ],
)
def test_out_of_memory_execution_errors_are_retryable_by_default(exc: ExecutionError) -> None:
    assert business_name(exc) is None


def test_retryable_execution_errors_follow_the_configured_patterns() -> None:
    exc = oom("RuntimeError", "CUDA error: device-side assert triggered")
    assert business_name(exc) is ExceptionName.EXECUTION_ERROR
    assert business_name(exc, retryable_execution_errors=("device-side assert",)) is None
    # With no patterns every execution error is business, out-of-memory included.
    cuda = oom("torch.OutOfMemoryError", "CUDA out of memory")
    assert business_name(cuda, retryable_execution_errors=()) is ExceptionName.EXECUTION_ERROR


def test_worker_threads_default_to_the_in_flight_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from comfyui_worker.lh.config import lh_config
    from comfyui_worker.settings import Settings

    monkeypatch.delenv("LHW_NUM_WORKER_THREADS", raising=False)
    settings = Settings(_env_file=None, max_in_flight=3)  # type: ignore[call-arg]
    assert lh_config(settings).num_worker_threads == 3
    monkeypatch.setenv("LHW_NUM_WORKER_THREADS", "7")  # an explicit setting wins
    assert lh_config(settings).num_worker_threads == 7


def test_input_errors_name_the_input_and_the_rule() -> None:
    exc = InvalidInputError("not valid base64", input_name="photo.png", rule="base64")
    content = extract_value(to_lh_exception(exc, ExceptionName.INVALID_INPUT).content)
    assert content == {
        "message": "input 'photo.png': not valid base64",
        "input": "photo.png",
        "rule": "base64",
    }


def test_what_a_report_carries_is_redacted_as_log_lines_are() -> None:
    failed = ReportTaskRun(
        error=LHTaskError(message="Traceback ...\nError: at http://u:pw-9@comfy:1 (cause)"),
        log_output=to_variable_value("prompt p: websocket ws://u:pw-9@comfy:1/ws unavailable"),
    )
    business = ReportTaskRun(
        exception=LHTaskExceptionModel(
            message="refused http://u:pw-9@comfy:1",
            content=to_variable_value({"message": "see ws://u:pw-9@comfy:1/ws"}),
        )
    )
    for report in (failed, business):
        redact_report(report)
        assert "pw-9" not in str(report)
    assert failed.error.message.endswith("at http://***@comfy:1 (cause)")
    assert failed.log_output.str == "prompt p: websocket ws://***@comfy:1/ws unavailable"
    assert business.exception.message == "refused http://***@comfy:1"
    content = json.loads(business.exception.content.json_obj)
    assert content == {"message": "see ws://***@comfy:1/ws"}


def test_a_failures_traceback_is_cut_to_its_last_bytes() -> None:
    # The TaskRun's record keeps every attempt's error: each is bounded.
    frames = "".join(f'  File "x.py", line {n}, in f\n    call()\n' for n in range(5_000))
    failed = ReportTaskRun(
        error=LHTaskError(message=f"Traceback (most recent call last):\n{frames}OSError: gone")
    )
    redact_report(failed)
    assert len(failed.error.message.encode()) <= MAX_ERROR_BYTES
    assert failed.error.message.startswith("…[truncated ")
    assert failed.error.message.endswith("OSError: gone")
