"""An earlier prompt under a job's prompt_id: whether it is this job's, and what ComfyUI left
out of it.

A retry finds its earlier attempt's prompt by the prompt_id; the tag the prompt carries tells
that attempt's (same TaskRun, same inputs) from another job's that happens to share the id
(another LittleHorse cluster, a submitter that did not tag it). And a prompt whose POST answer
was never seen (attached to, reused, or an answer lost) has its node_errors rebuilt here from
the history entry.
"""

from __future__ import annotations

import logging
from typing import Any

from .comfyui.client import ComfyUIClient
from .comfyui.models import HistoryEntry, PromptTag
from .exceptions import NodeError, NodeInputError, PromptConflictError
from .outputs import node_order

log = logging.getLogger(__name__)


def check_tag(pid: str, ours: PromptTag | None, found: PromptTag | None) -> None:
    """Refuse a prompt under `pid` that is not this job's: a retry's earlier attempt carries
    the very same tag (same TaskRun, same inputs)."""
    if ours is None or found == ours:
        return
    log.error(
        "prompt %s in ComfyUI belongs to %s, not to this job %s (digests %s and %s); "
        "not using its outputs",
        pid,
        found.job if found else "an untagged submission",
        ours.job,
        found.digest[:12] if found else "none",
        ours.digest[:12],
    )
    raise PromptConflictError(pid, ours=ours.job, theirs=found.job if found else None)


async def refused_outputs(
    client: ComfyUIClient, prompt: dict[str, Any], entry: HistoryEntry
) -> tuple[NodeError, ...]:
    """The workflow's output nodes ComfyUI left out of `entry`'s run (refused at
    validation), for a prompt whose POST answer (and its node_errors) we never saw."""
    accepted = entry.outputs_to_execute
    if accepted is None:
        return ()
    classes = {str(node["class_type"]) for node in prompt.values()}
    output_classes = await client.output_classes(classes)
    return tuple(
        NodeError(
            node_id=node_id,
            class_type=str(prompt[node_id]["class_type"]),
            errors=(
                NodeInputError(
                    type="output_not_executed",
                    message="ComfyUI accepted the prompt without this output: it failed "
                    "validation when the prompt was submitted",
                ),
            ),
            dependent_outputs=(node_id,),
        )
        for node_id in sorted(prompt, key=node_order)
        if prompt[node_id]["class_type"] in output_classes and node_id not in accepted
    )
