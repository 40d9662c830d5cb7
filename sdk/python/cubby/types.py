"""Plain result types returned by both clients."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


class _DecodedOutput:
    """stdout/stderr as text (UTF-8, invalid bytes replaced) beside the exact bytes."""

    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ExecResult(_DecodedOutput):
    """How a process in a box ended, and what it wrote.

    ``status`` is "exited" (``exit_code`` is its code), "signaled"
    (``signal`` is the signal's number and ``exit_code`` 128+signal) or
    "timed_out" (the process outlived the exec's ``timeout`` and was killed).
    ``stdout``/``stderr`` are the output decoded as UTF-8 (invalid bytes
    replaced); ``stdout_bytes``/``stderr_bytes`` are the exact bytes.
    """

    exit_code: int
    status: str
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    duration: float = 0.0  # seconds
    signal: Optional[int] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    exec_id: Optional[int] = None
    error: Optional[str] = None  # why the command could not start (exit codes 126/127)

    @property
    def ok(self) -> bool:
        return self.status == "exited" and self.exit_code == 0


@dataclass(frozen=True)
class Logs(_DecodedOutput):
    """A box's output so far."""

    stdout_bytes: bytes
    stderr_bytes: bytes


@dataclass(frozen=True)
class LogChunk:
    """One piece of a followed log: which stream, and its bytes."""

    stream: str  # "stdout" or "stderr"
    data: bytes


@dataclass
class BoxInfo:
    """A box's record as the server last reported it (``inspect``'s keys)."""

    raw: Dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.raw.get("status", ""))

    @property
    def exit_code(self) -> Optional[int]:
        code = self.raw.get("exit_code")
        return code if isinstance(code, int) else None

    @property
    def paused(self) -> bool:
        """Whether a running box is paused (``Box.pause``)."""
        return self.raw.get("paused") is True

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)
