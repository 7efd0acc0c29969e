"""The one enqueue step both OTLP transports share: decode, then commit through the writer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .decode import SpanBatch, decode_json, decode_request
from .writer import SpanWriter

DECODERS: dict[str, Callable[[bytes], SpanBatch]] = {"protobuf": decode_request, "json": decode_json}


class Ingest:
    """``await ingest(body, "protobuf")`` → the decoded batch, once its good spans are durable.

    Raises ``decode.BadRequest`` (the client's fault, not retryable) or
    ``writer.WriterUnavailable`` (retryable).
    """

    def __init__(self, writer: SpanWriter):
        self.writer = writer

    async def __call__(self, body: bytes, fmt: str) -> SpanBatch:
        # Decoding is CPU work; off the event loop it cannot stall other connections.
        batch = await asyncio.to_thread(DECODERS[fmt], body)
        await self.writer.write(batch)
        return batch
