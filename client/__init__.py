"""A small Python client for AgentTasks: `connect()` and one error type, `AgentTasksError`."""

from .channel import Client, connect
from .errors import AgentTasksError

__all__ = ["AgentTasksError", "Client", "connect"]
