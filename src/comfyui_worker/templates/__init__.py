"""Named workflow templates with typed parameters (`templates/` directory, hot reloaded)."""

from .binding import BoundTemplate
from .store import TemplateStore

__all__ = ["BoundTemplate", "TemplateStore"]
