"""The journal's records: their framing, their check, and how to find intact ones in damaged bytes.

A record is a header (body length u32, CRC-32 u32 of format byte + body, format byte; little-
endian) and the body: an OTLP request as a client sent it, protobuf or JSON.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

HEADER = struct.Struct("<IIB")
HEADER_BYTES = HEADER.size  # a record takes HEADER_BYTES + len(body) bytes of the journal
FORMATS = ("protobuf", "json")
FORMAT_CODE = {f: i for i, f in enumerate(FORMATS)}


def header(fmt: str, body: bytes) -> bytes:
    code = FORMAT_CODE[fmt]
    return HEADER.pack(len(body), zlib.crc32(body, zlib.crc32(bytes((code,)))), code)


def record_end(data: bytes, offset: int) -> tuple[int, str | None]:
    """The end of the record at ``offset`` (as its header says, when it has one) and what is wrong
    with it, or None if it is intact."""
    if offset + HEADER.size > len(data):
        return len(data), "a record header cut short"
    length, crc, code = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if end > len(data):
        return end, "a record cut short"
    if code >= len(FORMATS) or zlib.crc32(data[offset + HEADER.size : end], zlib.crc32(bytes((code,)))) != crc:
        return end, "a corrupt record"
    return end, None


def repaired(data: bytes, offset: int, stop: int) -> int | None:
    """The format code of the record at ``offset`` if its checksum verifies over exactly the bytes
    up to ``stop`` (its length field, or format byte, was what was corrupt), else None."""
    if stop - offset < HEADER.size:
        return None
    _, crc, _ = HEADER.unpack_from(data, offset)
    body = memoryview(data)[offset + HEADER.size : stop]
    for code in range(len(FORMATS)):
        if zlib.crc32(body, zlib.crc32(bytes((code,)))) == crc:
            return code
    return None


def torn(data: bytes, offset: int) -> bool:
    """Whether the bytes from ``offset`` to the end are what an interrupted append leaves: a
    header cut short, a record whose length runs past the end, or zeros (a file extended by the
    filesystem whose data never landed)."""
    tail = data[offset:]
    if len(tail) < HEADER.size or not tail.strip(b"\0"):
        return True
    length, _, code = HEADER.unpack_from(tail)
    return code < len(FORMATS) and HEADER.size + length > len(tail)


_SCAN_CHUNK = 1 << 16
_CHEAP = 1 << 16  # a candidate record this short is checked by its CRC straight away
_EMPTY_CRC = np.array([zlib.crc32(bytes((c,))) for c in range(len(FORMATS))], np.uint32)
# The first byte of a body: a protobuf tag (field number > 0, wire type 0, 1, 2, 3 or 5) or JSON's
# opening (whitespace, "{", or a byte-order mark or UTF-16/32 zero byte).
_FIRST_BYTE = np.zeros((len(FORMATS), 256), bool)
for _b in range(256):
    _FIRST_BYTE[0, _b] = (_b >> 3 > 0 or _b & 0x80) and _b & 7 in (0, 1, 2, 3, 5)
    _FIRST_BYTE[1, _b] = _b in b" \t\r\n{\x00\xef\xfe\xff"


def next_record(data: bytes, begin: int) -> int | None:
    """The offset of the first record at or after ``begin`` whose header and CRC verify, or None.

    Every byte offset is a candidate. Numpy rules out, a chunk at a time, those whose format byte
    or length (it must fit in the segment) cannot be a record's, and an empty body whose CRC is
    not the empty one. A long candidate must also look like what the journal holds, requests that
    decoded: a protobuf body framing as fields up to its exact end, a JSON one ending in "}". Only
    then does it cost a CRC, so 64 MB of random bytes or zeros is scanned in seconds, not hours."""
    arr = np.frombuffer(data, np.uint8)
    last = len(data) - HEADER.size  # the last offset a header fits at
    for lo in range(begin, last + 1, _SCAN_CHUNK):
        hi = min(lo + _SCAN_CHUNK, last + 1)
        code = arr[lo + 8 : hi + 8]
        ok = code < len(FORMATS)
        if not ok.any():
            continue
        u32 = [arr[lo + k : hi + k].astype(np.uint32) for k in range(8)]
        length = (u32[0] | u32[1] << 8 | u32[2] << 16 | u32[3] << 24).astype(np.int64)
        crc = u32[4] | u32[5] << 8 | u32[6] << 16 | u32[7] << 24
        offsets = np.arange(lo, hi, dtype=np.int64)
        ok &= length <= last - offsets  # the body fits in the segment
        safe_code = np.minimum(code, len(FORMATS) - 1)
        ok &= (length > 0) | (crc == _EMPTY_CRC[safe_code])
        first = arr[np.minimum(offsets + HEADER.size, len(data) - 1)]
        ok &= (length <= _CHEAP) | _FIRST_BYTE[safe_code, first]
        for k in np.flatnonzero(ok):
            p = lo + int(k)
            if (length[k] <= _CHEAP or _frames(data, p)) and record_end(data, p)[1] is None:
                return p
    return None


def _frames(data: bytes, offset: int) -> bool:
    """A cheap necessary condition for the body of the record at ``offset``: a protobuf body is a
    run of well-formed fields ending exactly at its end; a JSON body ends in "}"."""
    length, _, code = HEADER.unpack_from(data, offset)
    p, end = offset + HEADER.size, offset + HEADER.size + length
    if code == 1:
        return data[p:end].rstrip(b" \t\r\n\x00").endswith(b"}")
    depth = 0  # inside groups (wire type 3 ... 4)
    while p < end:
        tag, p = _varint(data, p, end)
        if tag is None or tag >> 3 == 0:
            return False
        wire = tag & 7
        if wire == 0:
            _, p = _varint(data, p, end)
            if p is None:
                return False
        elif wire == 1:
            p += 8
        elif wire == 5:
            p += 4
        elif wire == 2:
            n, p = _varint(data, p, end)
            if n is None:
                return False
            p += n
        elif wire == 3:
            depth += 1
        elif wire == 4 and depth:
            depth -= 1
        else:
            return False
    return p == end and depth == 0


def _varint(data: bytes, p: int, end: int) -> tuple[int | None, int | None]:
    value = shift = 0
    while p < end and shift < 64:
        b = data[p]
        p += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, p
        shift += 7
    return None, None
