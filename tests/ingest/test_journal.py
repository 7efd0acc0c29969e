"""The journal on a real directory: what a crash can leave in it, and what replay makes of that."""

from __future__ import annotations

import logging
import os

import pytest

from planoscope.ingest.journal import Journal, JournalError


def _records(journal: Journal, after: int = 0) -> list[tuple[int, str, bytes]]:
    return list(journal.replay(after=after))


def test_records_replay_in_order_with_their_format_and_end(tmp_path):
    j = Journal(tmp_path)
    j.open()
    a = j.append([("protobuf", b"first"), ("json", b'{"resourceSpans": []}')])
    b = j.append([("protobuf", b"")])
    j.close()
    got = _records(Journal(tmp_path))
    assert [(fmt, body) for _, fmt, body in got] == [
        ("protobuf", b"first"),
        ("json", b'{"resourceSpans": []}'),
        ("protobuf", b""),
    ]
    assert [end for end, _, _ in got][1:] == [a, b]
    assert [body for _, _, body in _records(Journal(tmp_path), after=a)] == [b""]


def test_a_torn_last_write_is_cut_off_and_appends_continue_after_it(tmp_path, caplog):
    j = Journal(tmp_path)
    j.open()
    end = j.append([("protobuf", b"acknowledged")])
    j.close()
    (segment,) = tmp_path.glob("*.log")
    full = segment.read_bytes()
    with open(segment, "ab") as f:  # a crash mid-write: the header and half a body
        f.write(full[:9] + b"ack")
    j = Journal(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert [body for _, _, body in _records(j)] == [b"acknowledged"]
    assert "cutting off 12 bytes" in caplog.text and "never acknowledged" in caplog.text
    assert segment.read_bytes() == full and j.position == end
    j.open()
    j.append([("json", b"{}")])
    j.close()
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"acknowledged", b"{}"]


def test_a_flipped_byte_fails_the_crc(tmp_path, caplog):
    j = Journal(tmp_path)
    j.open()
    j.append([("protobuf", b"one")])
    j.append([("protobuf", b"two")])
    j.close()
    (segment,) = tmp_path.glob("*.log")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert [body for _, _, body in _records(Journal(tmp_path))] == [b"one"]
    assert "corrupt" in caplog.text


def test_corruption_in_an_older_segment_is_reported_and_the_newer_ones_still_replay(tmp_path, caplog):
    j = Journal(tmp_path, segment_bytes=1)  # a new segment for every append
    j.open()
    for body in (b"a", b"b", b"c"):
        j.append([("protobuf", body)])
    j.close()
    first = sorted(tmp_path.glob("*.log"))[0]
    first.write_bytes(first.read_bytes()[:-1] + b"X")
    with caplog.at_level(logging.ERROR):
        assert [body for _, _, body in _records(Journal(tmp_path))] == [b"b", b"c"]
    assert "lost" in caplog.text and first.name in caplog.text


def test_release_deletes_the_segments_applied_and_keeps_the_rest(tmp_path):
    j = Journal(tmp_path, segment_bytes=10)
    j.open()
    ends = [j.append([("protobuf", b"x" * 20)]) for _ in range(4)]  # one segment each
    assert len(list(tmp_path.glob("*.log"))) == 4
    j.release(ends[1])
    assert [body for end, _, body in _records(Journal(tmp_path))] == [b"x" * 20] * 2
    j.release(ends[3])  # the open segment is kept
    assert len(list(tmp_path.glob("*.log"))) == 1
    j.close(applied=ends[3])
    assert not list(tmp_path.glob("*.log"))


def test_positions_continue_from_what_was_applied_when_the_journal_is_gone(tmp_path):
    j = Journal(tmp_path)
    j.replay(after=5_000)  # DuckDB has the journal applied up to 5,000; its segments were deleted
    j.open()
    assert j.append([("protobuf", b"new")]) > 5_000
    j.close()
    assert [body for _, _, body in _records(Journal(tmp_path), after=5_000)] == [b"new"]


def test_after_a_failed_write_appends_continue_in_a_fresh_segment(tmp_path):
    j = Journal(tmp_path)
    j.open()
    j.append([("protobuf", b"before")])
    os.close(j._fd)  # the next write fails (EBADF) and cannot be cut off, as on a dead disk
    with pytest.raises(JournalError, match="cannot write the journal"):
        j.append([("protobuf", b"lost, never acknowledged")])
    j.append([("protobuf", b"after")])
    j.close()
    assert len(list(tmp_path.glob("*.log"))) == 2
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"before", b"after"]


def test_a_failed_write_left_on_disk_is_never_replayed(tmp_path, monkeypatch):
    """The fsync fails after the records were written, and they cannot be cut off: appends go on in
    a fresh segment at the same position, and the old segment's bytes past it are dead."""
    j = Journal(tmp_path)
    j.open()
    j.append([("protobuf", b"A")])

    def eio(*args):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:  # fault injection: a dead disk cannot be had on demand
        m.setattr("planoscope.ingest.journal.os.fdatasync", eio)
        m.setattr("planoscope.ingest.journal.os.ftruncate", eio)
        with pytest.raises(JournalError):
            j.append([("protobuf", b"B, refused")])
    end_c = j.append([("protobuf", b"C")])
    j.close()
    got = _records(Journal(tmp_path))
    assert [body for _, _, body in got] == [b"A", b"C"]
    assert got[-1][0] == end_c and [e for e, _, _ in got] == sorted(e for e, _, _ in got)


def test_a_corrupt_record_before_intact_ones_costs_only_itself(tmp_path, caplog):
    j = Journal(tmp_path)
    j.open()
    for body in (b"first", b"second", b"third"):
        j.append([("protobuf", body)])
    j.close()
    (segment,) = tmp_path.glob("*.log")
    data = bytearray(segment.read_bytes())
    data[10] ^= 0xFF  # inside the first record's body
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        assert [body for _, _, body in _records(Journal(tmp_path))] == [b"second", b"third"]
    assert "corrupt record at byte 0" in caplog.text
    assert segment.stat().st_size == len(data)  # nothing cut off
