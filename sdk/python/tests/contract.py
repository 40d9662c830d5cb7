"""Checks HTTP exchanges against the OpenAPI document (docs/openapi.json).

Every response any test receives (through the SDK or raw httpx) is
recorded and, when the test ends, matched to its route in the document:
the route and method must be there, the status must be one the document
lists for it (or its `default`), and a JSON body must validate against the
schema the document gives for that status.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import httpx
import jsonschema

from cubby import _async_http, _sync_http

DOC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "openapi.json")


class Contract:
    def __init__(self, doc: Dict[str, Any]) -> None:
        self.doc = doc
        self.routes: List[Tuple[re.Pattern[str], str]] = []
        for template in doc.get("paths", {}):
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.routes.append((re.compile(rx), template))
        # Longer literal templates first, so /v1/boxes/{ref}/exec wins over {ref}.
        self.routes.sort(key=lambda r: -len(r[1].replace("{", "").replace("}", "")))
        self.resolver = jsonschema.RefResolver.from_schema(doc)

    @classmethod
    def load(cls) -> Optional["Contract"]:
        if not os.path.exists(DOC_PATH):
            return None
        with open(DOC_PATH) as f:
            return cls(json.load(f))

    def template(self, path: str) -> Optional[str]:
        for rx, t in self.routes:
            if rx.match(path):
                return t
        return None

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> Optional[str]:
        """None when the exchange matches the document, else why not."""
        t = self.template(path)
        if t is None:
            # An unknown route must get the 404 envelope; nothing else.
            return None if status == 404 else f"{method} {path}: route not in the OpenAPI document"
        op = self.doc["paths"][t].get(method.lower())
        if op is None:
            return None if status in (404, 405) else f"{method} {t}: method not in the OpenAPI document"
        responses = op.get("responses", {})
        resp = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if resp is None:
            return f"{method} {t}: status {status} is not documented (has {sorted(responses)})"
        if "$ref" in resp:
            _, resp = self.resolver.resolve(resp["$ref"])
        media = (resp.get("content") or {})
        if "application/json" in content_type and body:
            schema = (media.get("application/json") or {}).get("schema")
            if schema is None:
                return f"{method} {t} {status}: JSON body but no JSON schema documented"
            try:
                jsonschema.Draft202012Validator(schema, resolver=self.resolver).validate(json.loads(body))
            except jsonschema.ValidationError as e:
                return f"{method} {t} {status}: body does not match the schema: {e.message} at {list(e.absolute_path)}"
        return None


_recorded: List[Tuple[str, str, int, str, bytes]] = []
_installed = False


def install() -> None:
    """Wraps httpx's send (sync and async) and the SDK's own transports to
    record every exchange."""
    global _installed
    if _installed:
        return
    _installed = True
    orig_async = httpx.AsyncClient.send
    orig_sync = httpx.Client.send

    async def async_send(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        resp = await orig_async(self, request, **kw)
        _record(request, resp, streamed=kw.get("stream", False))
        return resp

    def sync_send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        resp = orig_sync(self, request, **kw)
        _record(request, resp, streamed=kw.get("stream", False))
        return resp

    httpx.AsyncClient.send = async_send  # type: ignore[method-assign]
    httpx.Client.send = sync_send  # type: ignore[method-assign]

    # The SDK's own request/response transports (http.client and h11).
    orig_exchange = _sync_http.SyncTransport.exchange
    orig_aexchange = _async_http.AsyncTransport.exchange

    def exchange(self: Any, method: str, path: str, **kw: Any) -> Tuple[int, str, bytes]:
        got = orig_exchange(self, method, path, **kw)
        _recorded.append((method, path, *got))
        return got

    async def aexchange(self: Any, method: str, path: str, **kw: Any) -> Tuple[int, str, bytes]:
        got = await orig_aexchange(self, method, path, **kw)
        _recorded.append((method, path, *got))
        return got

    _sync_http.SyncTransport.exchange = exchange  # type: ignore[method-assign]
    _async_http.AsyncTransport.exchange = aexchange  # type: ignore[method-assign]


def _record(request: httpx.Request, resp: httpx.Response, streamed: bool) -> None:
    ctype = resp.headers.get("content-type", "")
    body = b"" if streamed else resp.content
    _recorded.append((request.method, request.url.path, resp.status_code, ctype, body))


def take() -> List[Tuple[str, str, int, str, bytes]]:
    out = list(_recorded)
    _recorded.clear()
    return out
