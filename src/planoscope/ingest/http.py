"""OTLP/HTTP ``POST /v1/traces``: protobuf or JSON, optionally compressed (``Content-Encoding:
gzip`` or ``deflate``).

Responses follow the OTLP/HTTP spec: the body's encoding matches the request's; a bad request
is 400 with a ``google.rpc.Status``; a journal that cannot be written is 503 with ``Retry-After``.

A request holds one of ``max_concurrent_requests`` slots from its headers on, its body has
``otlp_request_timeout`` to arrive (else 408), and a request still waiting for its body gives the
slot to a newcomer when all are taken (503 with ``Retry-After``): see ``slots.py``. The token is
checked before a slot is taken.
"""

from __future__ import annotations

import json
import math
import zlib

from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..net.auth import Credentials
from .admission import Ingest, retry_status
from .decode import BadRequest
from .slots import Slots
from .writer import WriterUnavailable

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
GRPC_INVALID_ARGUMENT = 3
GRPC_DEADLINE_EXCEEDED = 4
GRPC_UNAUTHENTICATED = 16


class TooLarge(Exception):
    pass


# Content-Encoding → zlib's window bits: gzip's format, or zlib's for "deflate" (RFC 9110's
# deflate is the zlib format; the collector reads "deflate" and "zlib" with Go's zlib reader,
# which wants the zlib header, so a raw deflate stream is refused there and here).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "zlib": zlib.MAX_WBITS}


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decompressed, never past ``limit`` bytes (a bomb is refused, not inflated)."""
    d = zlib.decompressobj(_WBITS[encoding])
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"invalid {encoding} body: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge(f"decompressed body exceeds {limit} bytes")
    if not d.eof:
        raise BadRequest(f"invalid {encoding} body: truncated")
    return out


def _status(fmt: str, http_code: int, grpc_code: int, message: str, headers=None) -> Response:
    if fmt == "json":
        body = json.dumps({"code": grpc_code, "message": message}).encode()
        return Response(body, http_code, media_type=JSON, headers=headers)
    return Response(
        Status(code=grpc_code, message=message).SerializeToString(), http_code, media_type=PROTOBUF, headers=headers
    )


def _retry_later(request: Request, message: str, delay: float) -> Response:
    """503 with Retry-After and a google.rpc.Status carrying RetryInfo, in the request's encoding."""
    status, _ = retry_status(message, delay)
    headers = {"Retry-After": str(max(1, math.ceil(delay)))}  # whole seconds, as RFC 9110 has it
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == JSON:
        return Response(json.dumps(json_format.MessageToDict(status)).encode(), 503, media_type=JSON, headers=headers)
    return Response(status.SerializeToString(), 503, media_type=PROTOBUF, headers=headers)


def otlp_http_app(
    ingest: Ingest,
    max_request_bytes: int,
    credentials: Credentials | None = None,
    max_concurrent: int = 64,
    request_timeout: float = 30.0,
) -> Starlette:
    """The Starlette app for the OTLP/HTTP port."""
    credentials = credentials or Credentials()
    slots = Slots(max_concurrent, request_timeout)

    async def traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = {PROTOBUF: "protobuf", JSON: "json"}.get(ctype)
        if not credentials.check(request.headers.get("authorization")):
            # Checked first, before the body is read: an unauthenticated client costs nothing.
            ingest.refuse("unauthenticated")
            return _status(
                fmt or "json",
                401,
                GRPC_UNAUTHENTICATED,
                "missing or wrong token: send Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": ", ".join(credentials.challenges())},
            )
        if fmt is None:
            ingest.refuse("bad_request")
            return _status(
                "json", 415, GRPC_INVALID_ARGUMENT, f"unsupported Content-Type {ctype!r}: use {PROTOBUF} or {JSON}"
            )
        slot = slots.take()
        if slot is None:
            # Refused before the body is read: what is not yet admitted costs no memory.
            ingest.refuse("overloaded")
            return _retry_later(
                request,
                f"overloaded: {slots.held} requests in progress (max_concurrent_requests)",
                ingest.retry_after(),
            )
        try:
            try:
                async with slot.receiving():
                    body = await _read_body(request, max_request_bytes)
            except ClientDisconnect:  # nobody to answer
                return Response(status_code=400)
            except TimeoutError:
                # The body is left unread: the connection cannot serve another request.
                close = {"Connection": "close"}
                if slot.evicted:
                    ingest.refuse("evicted")
                    response = _retry_later(
                        request, "overloaded: the body was still not in when every slot was taken", ingest.retry_after()
                    )
                    response.headers.update(close)
                    return response
                ingest.refuse("timeout")
                message = f"the request body did not arrive within {request_timeout:g} s (otlp_request_timeout)"
                return _status(fmt, 408, GRPC_DEADLINE_EXCEEDED, message, headers=close)
            if body is None:
                ingest.refuse("too_large")
                return _status(fmt, 413, GRPC_INVALID_ARGUMENT, f"request body exceeds {max_request_bytes} bytes")
            return await _ingest(request, fmt, bytes(body))
        finally:
            slot.release()

    async def _ingest(request: Request, fmt: str, body: bytes) -> Response:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding in _WBITS:
                try:
                    data = _decompress(body, encoding, max_request_bytes)
                except BadRequest:
                    ingest.refuse("bad_request")  # (ingest counts the ones it raises itself)
                    raise
            elif encoding in ("identity", ""):
                data = body
            else:
                ingest.refuse("bad_request")
                return _status(
                    fmt, 415, GRPC_INVALID_ARGUMENT, f"unsupported Content-Encoding {encoding!r}: use gzip or deflate"
                )
            batch = await ingest(data, fmt)
        except TooLarge as e:
            ingest.refuse("too_large")
            return _status(fmt, 413, GRPC_INVALID_ARGUMENT, str(e))
        except BadRequest as e:
            return _status(fmt, 400, GRPC_INVALID_ARGUMENT, str(e))
        except WriterUnavailable as e:  # overloaded, or the store failed: retryable, with a delay
            return _retry_later(request, str(e), getattr(e, "retry_after", 1.0))
        if fmt == "json":
            out: dict = {}
            if batch.error_message:  # rejected spans, or (with none rejected) a warning of what was cut
                out["partialSuccess"] = {"rejectedSpans": str(batch.rejected), "errorMessage": batch.error_message}
            return Response(json.dumps(out).encode(), 200, media_type=JSON)
        resp = ExportTraceServiceResponse()
        if batch.error_message:
            resp.partial_success.rejected_spans = batch.rejected
            resp.partial_success.error_message = batch.error_message
        return Response(resp.SerializeToString(), 200, media_type=PROTOBUF)

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


async def _read_body(request: Request, limit: int) -> bytearray | None:
    """The body, or None once it is longer than ``limit``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body
