"""OTLP receivers: thin transports over one shared ``Ingest`` callable."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

GRPC_UNAVAILABLE = 14


def retry_status(message: str, delay_s: float) -> tuple[Status, RetryInfo]:
    """A retryable ``google.rpc.Status`` (UNAVAILABLE) carrying ``RetryInfo``: the OTLP spec's
    answer to overload, on gRPC and HTTP alike."""
    info = RetryInfo(retry_delay=Duration(seconds=int(delay_s), nanos=int(delay_s % 1 * 1e9)))
    status = Status(code=GRPC_UNAVAILABLE, message=message)
    status.details.add().Pack(info)
    return status, info
