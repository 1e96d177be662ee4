"""What a job ended with: the `JobResult` of a success, or the typed error a failed history
entry describes (`raise_for_outcome`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .bounds import MAX_LOG_LINE_BYTES, MAX_MESSAGE_BYTES, truncate
from .comfyui.models import HistoryEntry
from .constants import JobStatus
from .exceptions import ExecutionError, ExecutionInterrupted, NodeError, ProtocolError
from .outputs import FileDigest, OutputFile, OutputText

# The last frames say where it broke; the whole traceback can be huge.
MAX_TRACEBACK_FRAMES = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    prompt_id: str
    status: JobStatus
    files: list[OutputFile] = field(default_factory=list)
    texts: list[OutputText] = field(default_factory=list)
    node_errors: tuple[NodeError, ...] = ()
    # True when an earlier attempt's prompt was attached to or reused instead of resubmitted.
    reused: bool = False
    # Size and sha256 by path, when the run was asked to read them (`digest_files`).
    digests: dict[str, FileDigest] = field(default_factory=dict)
    # Paths of files not on disk that the caller holds elsewhere (`Executor.run`'s `kept`).
    kept: frozenset[str] = frozenset()
    # The graph ComfyUI ran for these outputs, when its history entry says.
    prompt: dict[str, Any] | None = None

    @property
    def outputs(self) -> list[str]:
        return [f.path for f in self.files]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable result: the LittleHorse task output and the CLI's print-out."""
        return {
            "prompt_id": self.prompt_id,
            "status": self.status.value,
            "outputs": self.outputs,
            "files": [f.as_dict() for f in self.files],
            "texts": [t.as_dict() for t in self.texts],
            "node_errors": [n.as_dict() for n in self.node_errors],
            "reused": self.reused,
        }


def raise_for_outcome(entry: HistoryEntry) -> None:
    """Raise the typed error a failed history entry describes."""
    if entry.succeeded:
        return
    if (err := entry.message("execution_error")) is not None:
        # ComfyUI's message and traceback go into logs and the LittleHorse report: bounded
        # here, once, so every copy is (a custom node can raise with megabytes of text).
        frames = [str(line) for line in err.get("traceback") or []][-MAX_TRACEBACK_FRAMES:]
        raise ExecutionError(
            prompt_id=entry.prompt_id,
            node_id=str(err.get("node_id", "")),
            node_type=str(err.get("node_type", "")),
            exception_type=truncate(str(err.get("exception_type", "")), MAX_LOG_LINE_BYTES),
            exception_message=truncate(str(err.get("exception_message", "")), MAX_MESSAGE_BYTES),
            traceback=[truncate(frame, MAX_LOG_LINE_BYTES) for frame in frames],
        )
    if (err := entry.message("execution_interrupted")) is not None:
        raise ExecutionInterrupted(
            prompt_id=entry.prompt_id,
            node_id=None if err.get("node_id") is None else str(err.get("node_id")),
            node_type=None if err.get("node_type") is None else str(err.get("node_type")),
        )
    raise ProtocolError(
        f"prompt {entry.prompt_id} ended with status {entry.status_str!r} "
        "but its history gives no execution_error or execution_interrupted"
    )
