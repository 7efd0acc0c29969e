"""The one enqueue step both OTLP transports share: decode, then commit through the writer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from .decode import Decoder, SpanBatch
from .spanmetrics import SpanMetrics
from .writer import SpanWriter


class Ingest:
    """``await ingest(body, "protobuf" | "json")`` → the decoded batch, once its good spans are
    durable. Raises ``decode.BadRequest`` (the client's fault, not retryable) or
    ``writer.WriterUnavailable`` (retryable).

    Decoding runs on its own small thread pool, off the event loop. One thread is the measured
    optimum on a 2-core machine: the native parse releases the GIL, but the Arrow assembly
    around it does not, and more decoding threads only queue for the GIL in front of the writer.
    """

    def __init__(self, writer: SpanWriter, decoder: Decoder, metrics: SpanMetrics, threads: int = 1):
        self.writer = writer
        self.metrics = metrics
        self._decode = {"protobuf": decoder.decode_protobuf, "json": decoder.decode_json}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="planoscope-decode")

    async def __aenter__(self) -> Ingest:
        return self

    async def __aexit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)

    def _prepare(self, body: bytes, fmt: str) -> SpanBatch:
        batch = self._decode[fmt](body)
        # Aggregated here, beside decoding, so the single writer only adds up a few series.
        batch.metric_deltas = self.metrics.deltas(batch.table, batch.dimensions)
        return batch

    async def __call__(self, body: bytes, fmt: str) -> SpanBatch:
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._pool, self._prepare, body, fmt)
        await self.writer.write(batch)
        return batch
