"""The journal: an append-only, fsynced log of the OTLP requests planoscope has accepted.

A request is acknowledged once its body is in the journal and the journal is fsynced; its spans
are inserted into DuckDB behind it, in large batches, and the journal position they reach is
committed in the same DuckDB transaction. On start, the records after that position are decoded
again and inserted, so a crash loses nothing acknowledged and stores nothing twice.

Why not acknowledge after the DuckDB commit, as planoscope first did: a DuckDB commit costs ~4 ms
of CPU whatever its size, plus a copy of every span in DuckDB's own write-ahead log, so commits
must be large to be cheap, and large commits are slow to wait for. With 8 clients of 512 spans a
request waited ~100 ms and ingest was latency-bound at ~39k spans/s with the CPU 30% idle. An
fsync of a few hundred kilobytes takes ~0.7 ms here.

Layout: ``<data_dir>/journal/<start offset, 20 digits>.log`` segments. A position is a byte offset
into the concatenation of all segments ever written, so it only grows. A record is a header
(body length u32, CRC-32 u32 of format byte + body, format byte) and the body. A segment holds
the positions up to the next segment's start; bytes beyond are a write that failed and could not
be cut off, after which appends went on in a new segment. A record cut short or failing its CRC
at the end of the newest segment is a write that was never acknowledged (the fsync did not
return) and is cut off; a bad record followed by intact ones is corruption, reported and skipped.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("planoscope.journal")

_HEADER = struct.Struct("<IIB")
FORMATS = ("protobuf", "json")
_FORMAT_CODE = {f: i for i, f in enumerate(FORMATS)}
SUFFIX = ".log"
_IOV_MAX = 1024


class JournalError(RuntimeError):
    """The journal cannot be written; nothing of the failed append was acknowledged."""


class Journal:
    """Append on one thread, ``release`` on another. Example::

    journal = Journal(data_dir / "journal")
    for end, fmt, body in journal.replay(after=applied):
        ...
    journal.open()
    end = journal.append([("protobuf", body)])   # durable once this returns
    journal.release(end)                         # once everything up to end is in DuckDB
    """

    def __init__(self, directory: Path, segment_bytes: int = 64 << 20):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards _segments (append rotates, release deletes)
        self._segments = sorted(self._scan())  # start offsets of the segment files
        self._fd: int | None = None
        self._start = 0  # start offset of the open segment
        self._size = 0  # bytes in the open segment
        self.position = 0  # end of the last record, over all segments
        self._replayed = False
        self._broken = False  # a failed write left bytes that could not be cut off

    def _scan(self) -> Iterator[int]:
        for p in self.directory.glob("*" + SUFFIX):
            try:
                yield int(p.stem)
            except ValueError:
                log.warning("ignoring %s: not a journal segment", p)

    def _path(self, start: int) -> Path:
        return self.directory / f"{start:020d}{SUFFIX}"

    def replay(self, after: int) -> Iterator[tuple[int, str, bytes]]:
        """(end position, format, body) of every intact record ending after ``after``, in order.

        Cuts a torn record off the end of the newest segment and sets ``position`` to the end of
        the last intact record (never below ``after``: the segments may all have been deleted).
        Iterate it to the end before ``open``.
        """
        self.position = max(self.position, after)
        return self._replay(after)

    def _replay(self, after: int) -> Iterator[tuple[int, str, bytes]]:
        segments = list(self._segments)
        for i, start in enumerate(segments):
            path = self._path(start)
            newest = i == len(segments) - 1
            data = path.read_bytes()
            if not newest and len(data) > segments[i + 1] - start:
                # A segment holds the positions up to the next one's start: beyond is a write
                # that failed and could not be cut off (appends went on in a new segment).
                log.warning(
                    "journal %s: ignoring %d bytes past the next segment's start (a failed write, never acknowledged)",
                    path.name,
                    len(data) - (segments[i + 1] - start),
                )
                data = data[: segments[i + 1] - start]
            offset = 0
            problem = None
            while offset < len(data):
                end, problem = _record_end(data, offset)
                if problem is None:
                    code = data[offset + _HEADER.size - 1]
                    if start + end > after:
                        yield start + end, FORMATS[code], data[offset + _HEADER.size : end]
                    offset = end
                elif end < len(data) and _record_end(data, end)[1] is None:
                    # Intact records follow: corruption (a bad disk), not a torn write. Only this
                    # record is lost; truncating here would destroy acknowledged ones after it.
                    log.error(
                        "journal %s: a corrupt record at byte %d (%d bytes) skipped; it is lost",
                        path.name,
                        offset,
                        end - offset,
                    )
                    offset, problem = end, None
                else:
                    break
            if problem is not None:
                if newest:  # what a crash cut short: never acknowledged (or a corrupt end)
                    log.warning(
                        "journal %s: cutting off %d bytes at its end (%s: a write cut short by a crash, "
                        "never acknowledged, or corruption)",
                        path.name,
                        len(data) - offset,
                        problem,
                    )
                    with open(path, "r+b") as f:
                        f.truncate(offset)
                        os.fsync(f.fileno())
                else:
                    log.error(
                        "journal %s: %s at byte %d; the %d bytes after it are lost",
                        path.name,
                        problem,
                        offset,
                        len(data) - offset,
                    )
            self.position = max(self.position, start + offset)
        self._replayed = True

    def open(self) -> None:
        """Start a new segment at ``position`` for the appends of this run."""
        if self._segments and not self._replayed:
            raise RuntimeError("replay the journal before appending to it")
        self._open_segment(self.position)

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:  # the descriptor that failed a write: nothing more to lose
                pass
            self._fd = None

    def _open_segment(self, start: int, truncate: bool = False) -> None:
        self._close_fd()
        path = self._path(start)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0), 0o644)
        self._size = os.fstat(self._fd).st_size
        self._start = start
        self.position = start + self._size
        with self._lock:
            if start not in self._segments:
                self._segments.append(start)
        _fsync_dir(self.directory)  # the new file's name is durable before anything in it is acknowledged

    def append(self, records: list[tuple[str, bytes]]) -> int:
        """Write ``records`` (format, body) and fsync; returns the end position of the last one.

        Raises ``JournalError`` if the write fails; nothing of it is then replayed, and the next
        append starts where this one did.
        """
        try:
            if self._broken:  # a failed write could not be cut off: continue in a fresh segment
                self._open_segment(self.position, truncate=self._start == self.position)
                self._broken = False
            elif self._fd is None:
                raise OSError("the journal is not open")
            elif self._size >= self.segment_bytes:
                self._open_segment(self.position)
        except OSError as e:
            self._broken = True
            raise JournalError(f"cannot open a journal segment in {self.directory}: {e}") from None
        parts = []
        for fmt, body in records:
            code = _FORMAT_CODE[fmt]
            parts.append(_HEADER.pack(len(body), zlib.crc32(body, zlib.crc32(bytes((code,)))), code))
            parts.append(body)
        size = sum(len(p) for p in parts)
        try:
            written = 0
            for i in range(0, len(parts), _IOV_MAX):  # writev takes at most IOV_MAX buffers
                chunk = parts[i : i + _IOV_MAX]
                n = os.writev(self._fd, chunk)
                if n != sum(len(p) for p in chunk):
                    raise OSError(f"short write ({written + n} of {size} bytes)")
                written += n
            os.fdatasync(self._fd)
        except OSError as e:
            try:  # cut the partial write off, so the next record starts where this one did
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = True
            raise JournalError(f"cannot write the journal {self._path(self._start)}: {e}") from None
        self._size += size
        self.position += size
        return self.position

    def release(self, applied: int) -> None:
        """Delete the segments whose records all end at or before ``applied``."""
        with self._lock:
            segments = sorted(self._segments)
            done = [s for s, nxt in zip(segments, segments[1:]) if nxt <= applied and s != self._start]
            for s in done:
                self._segments.remove(s)
        for s in done:
            try:
                self._path(s).unlink()
            except OSError as e:
                log.warning("cannot delete applied journal segment %s: %s", self._path(s), e)

    def close(self, applied: int | None = None) -> None:
        """Close; if everything is ``applied``, delete every segment."""
        self._close_fd()
        if applied is not None and applied >= self.position:
            with self._lock:
                segments, self._segments = self._segments, []
            for s in segments:
                self._path(s).unlink(missing_ok=True)


def _record_end(data: bytes, offset: int) -> tuple[int, str | None]:
    """The end of the record at ``offset`` (as its header says, when it has one) and what is wrong
    with it, or None if it is intact."""
    if offset + _HEADER.size > len(data):
        return len(data), "a record header cut short"
    length, crc, code = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if end > len(data):
        return end, "a record cut short"
    if code >= len(FORMATS) or zlib.crc32(data[offset + _HEADER.size : end], zlib.crc32(bytes((code,)))) != crc:
        return end, "a corrupt record"
    return end, None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
