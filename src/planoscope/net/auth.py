"""Access control: the credentials the UI/API port and the OTLP receivers accept.

The UI, the query API and ``/metrics`` take a bearer token (``auth_token``: scripts, Prometheus'
``authorization`` setting) and/or HTTP basic credentials (``auth_basic``: browsers prompt for
them); the OTLP receivers take a bearer token of their own (``otlp_token``). Every comparison is
constant-time (``hmac.compare_digest``), so a wrong guess learns nothing from the response time
beyond the length.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

REALM = "planoscope"


def _bearer(authorization: str) -> bytes | None:
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip().encode() if scheme.lower() == "bearer" else None


def _basic(authorization: str) -> bytes | None:
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class Credentials:
    """What an ``Authorization`` header must carry. Example::

    creds = Credentials(token="s3cret", basic="admin:pw")
    creds.check("Bearer s3cret")  # True
    creds.check(None)              # False (and always True when nothing is configured)
    """

    def __init__(self, token: str = "", basic: str = ""):
        self._token = token.encode()
        self._basic = basic.encode()

    @property
    def required(self) -> bool:
        return bool(self._token or self._basic)

    def check(self, authorization: str | None) -> bool:
        if not self.required:
            return True
        if not authorization:
            return False
        ok = False
        if self._token and (given := _bearer(authorization)) is not None:
            ok = hmac.compare_digest(given, self._token)
        if self._basic and (given := _basic(authorization)) is not None:
            ok = hmac.compare_digest(given, self._basic)
        return ok

    def challenges(self) -> list[str]:
        """``WWW-Authenticate`` values; Basic first, so a browser prompts for a user and password."""
        out = []
        if self._basic:
            out.append(f'Basic realm="{REALM}", charset="UTF-8"')
        if self._token:
            out.append(f'Bearer realm="{REALM}"')
        return out


class RequireAuth:
    """ASGI middleware: every HTTP request but those to ``open_paths`` must pass ``credentials``,
    else 401 with ``WWW-Authenticate`` (and the app behind is never called)."""

    def __init__(self, app, credentials: Credentials, open_paths: frozenset[str] = frozenset()):
        self.app = app
        self.credentials = credentials
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.credentials.required or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if self.credentials.check(header.decode("latin-1") if header is not None else None):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "authentication required" if header is None else "wrong credentials"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(b"www-authenticate", c.encode()) for c in self.credentials.challenges()]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
