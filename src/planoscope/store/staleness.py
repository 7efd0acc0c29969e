"""Staleness markers: the NaN Prometheus stores when a series ends (a scrape target vanished, a
rule's output went away). An ordinary NaN is a value; this one, bit for bit, is not."""

from __future__ import annotations

import struct

import numpy as np

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def is_stale(values: np.ndarray) -> np.ndarray:
    """Which of ``values`` (float64) are staleness markers."""
    return np.ascontiguousarray(values, dtype=np.float64).view(np.uint64) == STALE_NAN_BITS
