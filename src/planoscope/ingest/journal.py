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
be cut off, after which appends went on in a new segment.

Replay never destroys an intact record. After a record that does not verify, it scans forward,
byte by byte within the segment, for the next record whose header and CRC verify, and goes on
from there. If the bad record's checksum verifies over exactly the bytes up to that next record,
only its header was corrupt (four flipped bytes of a length field must not cost the segment
behind them) and the record is kept. What cannot be read is copied, before anything is changed,
to ``<segment>.<byte offset>.corrupt`` beside the segment and reported at ERROR. The one thing
cut off without a copy is a torn tail: bytes after the last intact record of the newest segment
that are a record cut short (or zeros), with no intact record after them. That is a write a
crash interrupted before its fsync returned, so it was never acknowledged; a copy of every
crash's torn write would only pile up.

A record the writer cannot insert because of what it holds goes to ``quarantine/`` (``quarantine``):
the request body as it was received, which can be sent again once the cause is fixed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from .records import FORMATS, HEADER, HEADER_BYTES, header, next_record, record_end, repaired, torn

log = logging.getLogger("planoscope.journal")

_FILE_SUFFIX = {"protobuf": "pb", "json": "json"}
SUFFIX = ".log"
CORRUPT_SUFFIX = ".corrupt"
QUARANTINE = "quarantine"
_IOV_MAX = 1024


class JournalError(RuntimeError):
    """The journal cannot be read, kept aside or written; nothing of a failed append was acknowledged."""


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
        self.corrupt_bytes = 0  # found unreadable by replay, kept in .corrupt files

    def _scan(self) -> Iterator[int]:
        for p in self.directory.glob("*" + SUFFIX):
            try:
                start = int(p.stem)
            except ValueError:
                start = -1
            if start < 0 or p.name != self._path(start).name:
                log.warning("ignoring %s: not a journal segment", p)
                continue
            if not p.is_file():
                raise JournalError(f"{p} is not a file but has a journal segment's name: move it out of the journal")
            yield start

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
            while offset < len(data):
                end, problem = record_end(data, offset)
                if problem is None:
                    if start + end > after:
                        yield start + end, FORMATS[data[offset + HEADER_BYTES - 1]], data[offset + HEADER_BYTES : end]
                    offset = end
                    continue
                found = next_record(data, offset + 1)
                stop = len(data) if found is None else found
                code = repaired(data, offset, stop)
                if code is not None:
                    log.error(
                        "journal %s: the record at byte %d has a corrupt header (%s) but its checksum verifies "
                        "over the %d bytes up to %s: kept",
                        path.name,
                        offset,
                        problem,
                        stop - offset - HEADER_BYTES,
                        "the next record" if found is not None else "the end",
                    )
                    if start + stop > after:
                        yield start + stop, FORMATS[code], data[offset + HEADER_BYTES : stop]
                    offset = stop
                    continue
                if found is None and newest and torn(data, offset):
                    log.warning(
                        "journal %s: cutting off %d bytes at its end, from byte %d (%s: a write a crash cut short "
                        "before its fsync returned, never acknowledged)",
                        path.name,
                        len(data) - offset,
                        offset,
                        problem,
                    )
                    self._cut(path, offset)
                    break
                kept = self._keep_corrupt(path, offset, data[offset:stop])
                log.error(
                    "journal %s: bytes %d to %d (%d bytes) cannot be read as records (%s at byte %d; %s); "
                    "they are copied to %s and are not inserted",
                    path.name,
                    offset,
                    stop,
                    stop - offset,
                    problem,
                    offset,
                    f"replay goes on with the intact record at byte {found}" if found is not None else "none follows",
                    kept.name,
                )
                if found is None:
                    if newest:  # appends go on from the last intact record (the bytes are copied)
                        self._cut(path, offset)
                    break
                offset = found
            self.position = max(self.position, start + offset)
        self._replayed = True

    def _cut(self, path: Path, offset: int) -> None:
        try:
            with open(path, "r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())
        except OSError as e:
            raise JournalError(f"cannot cut the journal segment {path} at byte {offset}: {e.strerror}") from None

    def _keep_corrupt(self, path: Path, offset: int, blob: bytes) -> Path:
        """Copy unreadable bytes beside their segment (once: a later replay of the same segment
        finds the copy there)."""
        self.corrupt_bytes += len(blob)
        target = path.with_name(f"{path.name}.{offset}{CORRUPT_SUFFIX}")
        n = 1
        try:
            while target.is_file() and target.read_bytes() != blob:  # other bytes there once: keep both
                n += 1
                target = path.with_name(f"{path.name}.{offset}.{n}{CORRUPT_SUFFIX}")
            if not target.is_file():
                _write_file(target, blob)
        except OSError as e:
            raise JournalError(
                f"cannot copy the unreadable bytes {offset} to {offset + len(blob)} of the journal segment {path} "
                f"to {target.name} ({e.strerror}); nothing was changed"
            ) from None
        return target

    def corrupt_files(self) -> list[Path]:
        """The copies of unreadable journal bytes (``.corrupt``) in the journal directory."""
        try:
            return sorted(self.directory.glob("*" + CORRUPT_SUFFIX))
        except OSError:  # /healthz asks: a failing disk must not fail it
            return []

    def quarantined(self) -> list[Path]:
        """The record bodies kept in ``quarantine/``."""
        try:
            return sorted(p for p in (self.directory / QUARANTINE).glob("*") if p.suffix in (".pb", ".json"))
        except OSError:
            return []

    def quarantine(self, start: int, fmt: str, body: bytes, reason: str) -> Path:
        """Keep the record that begins at position ``start`` as ``quarantine/<start>.pb`` (or
        ``.json``): its body as received, durably, before the writer commits a position past it.
        The file is an OTLP request as a client sent it; ``curl --data-binary @FILE -H
        'Content-Type: application/x-protobuf' http://HOST:4318/v1/traces`` sends it again.
        ``reasons.txt`` beside it says why each was kept. Raises ``OSError``."""
        directory = self.directory / QUARANTINE
        directory.mkdir(exist_ok=True)
        target = directory / f"{start:020d}.{_FILE_SUFFIX[fmt]}"
        _write_file(target, body)
        reason = " ".join(reason.split())  # one line per record
        line = f"{target.name}\t{datetime.now(UTC).isoformat(timespec='seconds')}\t{reason}\n"
        with open(directory / "reasons.txt", "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(directory)
        return target

    def read(self, start: int) -> tuple[str, bytes]:
        """The (format, body) of the record that begins at position ``start`` (still in a
        segment: not yet released). Raises ``OSError`` or ``JournalError``."""
        with self._lock:
            segment = max((s for s in self._segments if s <= start), default=None)
        if segment is None:
            raise JournalError(f"no journal segment holds position {start}")
        with open(self._path(segment), "rb") as f:
            f.seek(start - segment)
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES:
                raise JournalError(f"no record at position {start}")
            data = head + f.read(HEADER.unpack(head)[0])
        end, problem = record_end(data, 0)
        if problem is not None:
            raise JournalError(f"the record at position {start}: {problem}")
        return FORMATS[data[HEADER_BYTES - 1]], data[HEADER_BYTES:]

    def check_writable(self, size: int = 64 << 10) -> None:
        """Write, fsync and remove a scratch file of ``size`` bytes beside the segments; raises
        ``OSError`` (a full disk, a read-only or failing one) as an append would."""
        probe = self.directory / ".writable"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, [bytes(size)])
            os.fsync(fd)
        finally:
            os.close(fd)
            try:
                probe.unlink()
            except OSError:  # the next check truncates it
                pass

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
            parts.append(header(fmt, body))
            parts.append(body)
        size = sum(len(p) for p in parts)
        try:
            for i in range(0, len(parts), _IOV_MAX):  # writev takes at most IOV_MAX buffers
                _write_all(self._fd, parts[i : i + _IOV_MAX])
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


def _write_all(fd: int, chunk: list[bytes]) -> None:
    """writev the whole chunk. A short write is legal: the rest is written again, and what stopped
    it (ENOSPC on a full disk) is raised then with its own errno."""
    views = [memoryview(p) for p in chunk if p]
    while views:
        n = os.writev(fd, views)
        if n == 0:
            raise OSError("the journal write made no progress")
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _write_file(path: Path, blob: bytes) -> None:
    """Write ``path`` whole and durably: a temporary file, fsynced, renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
