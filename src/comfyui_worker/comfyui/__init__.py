"""Talking to ComfyUI: HTTP client, websocket events and the shapes they return."""

from .client import ComfyUIClient
from .models import HistoryEntry, QueueState, SubmitResult

__all__ = ["ComfyUIClient", "HistoryEntry", "QueueState", "SubmitResult"]
