"""The one enqueue step both OTLP transports share: decode, then commit through the writer."""

from __future__ import annotations

import asyncio

from .decode import Decoder, SpanBatch
from .writer import SpanWriter


class Ingest:
    """``await ingest(body, "protobuf" | "json")`` → the decoded batch, once its good spans are
    durable. Raises ``decode.BadRequest`` (the client's fault, not retryable) or
    ``writer.WriterUnavailable`` (retryable).
    """

    def __init__(self, writer: SpanWriter, decoder: Decoder):
        self.writer = writer
        self._decode = {"protobuf": decoder.decode_protobuf, "json": decoder.decode_json}

    async def __call__(self, body: bytes, fmt: str) -> SpanBatch:
        # Decoding is CPU work; off the event loop it cannot stall other connections.
        batch = await asyncio.to_thread(self._decode[fmt], body)
        await self.writer.write(batch)
        return batch
