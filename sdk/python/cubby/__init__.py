"""cubby: run untrusted code in boxes, from Python.

``Client`` (synchronous) and ``AsyncClient`` (asyncio) have the same
methods; both talk to ``cubby serve`` (started for you on the local home
when none is running). Errors are subclasses of ``CubbyError``, one per
error code of the API.
"""
from .aio import AsyncBox, AsyncClient, AsyncExecStream, AsyncFiles, AsyncImages
from .client import Box, Client, ExecStream, Files, Images
from .errors import (BadRequest, Conflict, ConnectionFailed, CubbyError, ExecTimeout, Forbidden, InternalError,
                     NotFound, RequestTimeout, TooLarge, TooManyRequests, Unauthorized, Unavailable)
from .types import BoxInfo, ExecResult, LogChunk, Logs

__all__ = [
    "AsyncBox", "AsyncClient", "AsyncExecStream", "AsyncFiles", "AsyncImages", "Box", "BoxInfo", "Client",
    "ExecResult", "ExecStream", "Files", "Images", "LogChunk", "Logs",
    "BadRequest", "Conflict", "ConnectionFailed", "CubbyError", "ExecTimeout", "Forbidden", "InternalError",
    "NotFound", "RequestTimeout", "TooLarge", "TooManyRequests", "Unauthorized", "Unavailable",
]
__version__ = "0.1.0"
