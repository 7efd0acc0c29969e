"""The one enqueue step both OTLP transports share: admit, decode, then journal through the writer.

Admission bounds what ingest holds: the bytes of the requests accepted and not yet in DuckDB
(waiting to be decoded, waiting for the journal, or journaled and waiting to be inserted). Beyond
``max_queued_bytes`` a request is refused at once with ``Overloaded``, which the receivers turn
into the OTLP spec's retryable answers with a retry delay; nothing of it was accepted, so nothing
is dropped.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .decode import BadRequest, Decoder, SpanBatch
from .writer import SpanWriter, WriterUnavailable

GRPC_UNAVAILABLE = 14


class Overloaded(WriterUnavailable):
    """More is queued than ``max_queued_bytes``: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def retry_status(message: str, delay_s: float, code: int = GRPC_UNAVAILABLE) -> tuple[Status, RetryInfo]:
    """A retryable ``google.rpc.Status`` (UNAVAILABLE, or ``code``: RESOURCE_EXHAUSTED) carrying
    ``RetryInfo``: the OTLP spec's answer to overload, on gRPC and HTTP alike."""
    info = RetryInfo(retry_delay=Duration(seconds=int(delay_s), nanos=int(delay_s % 1 * 1e9)))
    status = Status(code=code, message=message)
    status.details.add().Pack(info)
    return status, info


class Ingest:
    """``await ingest(body, "protobuf" | "json")`` → the decoded batch, once its good spans are
    durable (in the journal). Raises ``decode.BadRequest`` (the client's fault, not retryable) or
    ``writer.WriterUnavailable`` (retryable).

    Decoding runs on its own small thread pool, off the event loop. One thread is the measured
    optimum on a 2-core machine: the native parse releases the GIL, but the Arrow assembly
    around it does not, and more decoding threads only queue for the GIL in front of the writer.
    Decoding is the busiest stage, so the span metrics are aggregated by the writer, once per
    DuckDB commit, rather than here once per request.
    """

    def __init__(
        self,
        writer: SpanWriter,
        decoder: Decoder,
        threads: int = 1,
        max_queued_bytes: int = 256 << 20,
        retry_delay: float = 1.0,
    ):
        self.writer = writer
        self.max_queued_bytes = max_queued_bytes
        self.retry_delay = retry_delay
        self.queued_bytes = 0  # of requests admitted and not yet answered (touched on the event loop only)
        self._decode = {"protobuf": decoder.decode_protobuf, "json": decoder.decode_json}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="planoscope-decode")
        self.truncated = self.dropped = 0
        self.refused: Counter[str] = Counter()  # requests answered with an error, by reason

    async def __aenter__(self) -> Ingest:
        return self

    async def __aexit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)

    async def __call__(self, body: bytes, fmt: str) -> SpanBatch:
        size = len(body)
        queued = self.queued_bytes + self.writer.backlog_bytes
        # One request is always admitted into an empty queue, whatever its size (max_request_bytes bounds it).
        if queued and queued + size > self.max_queued_bytes:
            self.refuse("overloaded")
            delay = self.retry_after()
            raise Overloaded(
                f"overloaded: {queued} bytes of requests queued (max_queued_bytes "
                f"{self.max_queued_bytes}); retry in {delay:.1f} s",
                delay,
            )
        self.queued_bytes += size
        try:
            return await self._ingest(body, fmt)
        finally:
            self.queued_bytes -= size

    async def _ingest(self, body: bytes, fmt: str) -> SpanBatch:
        loop = asyncio.get_running_loop()
        try:
            batch = await loop.run_in_executor(self._pool, self._decode[fmt], body)
        except BadRequest:
            self.refuse("bad_request")
            raise
        self.truncated += batch.truncated
        self.dropped += batch.dropped
        try:
            await self.writer.write(batch, body, fmt)
        except WriterUnavailable:
            self.refuse("unavailable")
            raise
        return batch

    def retry_after(self) -> float:
        """The delay suggested to a refused client: jittered, so they do not all come back at once."""
        return self.retry_delay * random.uniform(0.5, 1.5)

    def refuse(self, reason: str) -> None:
        """Count a request a receiver answered with an error (``too_large``, ``bad_request``, …)."""
        self.refused[reason] += 1

    def collect(self) -> Iterable[Metric]:
        """A prometheus-client Collector: what ingest cut, dropped and refused."""
        yield CounterMetricFamily(
            "planoscope_ingest_attributes_truncated",
            "Attribute values cut to max_attribute_value_bytes",
            value=self.truncated,
        )
        yield CounterMetricFamily(
            "planoscope_ingest_attributes_dropped",
            "Attributes dropped beyond max_attributes_per_span",
            value=self.dropped,
        )
        refused = CounterMetricFamily(
            "planoscope_ingest_requests_refused", "OTLP requests answered with an error, by reason", labels=["reason"]
        )
        for reason, n in sorted(self.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        yield GaugeMetricFamily(
            "planoscope_ingest_queued_bytes",
            "Bytes of OTLP requests accepted and not yet in the store (bounded by max_queued_bytes)",
            value=self.queued_bytes + self.writer.backlog_bytes,
        )
