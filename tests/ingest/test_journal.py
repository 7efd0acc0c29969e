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
    corrupt = first.read_bytes()[:-1] + b"X"
    first.write_bytes(corrupt)
    with caplog.at_level(logging.ERROR):
        assert [body for _, _, body in _records(Journal(tmp_path))] == [b"b", b"c"]
    assert "not inserted" in caplog.text and first.name in caplog.text
    assert (tmp_path / f"{first.name}.0.corrupt").read_bytes() == corrupt  # kept, not destroyed


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


def _segment_of(tmp_path, bodies, fmt="protobuf"):
    """A journal in ``tmp_path`` holding ``bodies``, closed; its one segment and the records' ends."""
    j = Journal(tmp_path)
    j.open()
    ends = [j.append([(fmt, body)]) for body in bodies]
    j.close()
    (segment,) = tmp_path.glob("*.log")
    return segment, ends


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda length: 0xFFFFFFFF,  # says the record runs past the end: once taken for a torn write
        lambda length: length + 1,  # runs into the next record's header
        lambda length: length - 1,  # ends inside its own body
    ],
    ids=["length ffffffff", "length + 1", "length - 1"],
)
def test_a_corrupt_length_field_in_a_segments_first_record_costs_nothing(tmp_path, caplog, corrupt):
    """Four bytes of a length field once cost the whole segment (cut off as a torn tail): the
    record's CRC still verifies over the bytes up to the next intact record, so it is kept."""
    bodies = [b"first " * 50, b"second", b"third"]
    segment, ends = _segment_of(tmp_path, bodies)
    data = bytearray(segment.read_bytes())
    length = int.from_bytes(data[:4], "little")
    data[:4] = corrupt(length).to_bytes(4, "little")
    segment.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        got = _records(Journal(tmp_path))
    assert [body for _, _, body in got] == bodies and [end for end, _, _ in got] == ends
    assert "the record at byte 0 has a corrupt header" in caplog.text and "kept" in caplog.text
    assert segment.read_bytes() == bytes(data)  # nothing cut off, nothing rewritten
    assert not list(tmp_path.glob("*.corrupt"))  # nothing unreadable


def test_garbage_between_records_is_copied_aside_and_every_record_around_it_replays(tmp_path, caplog):
    segment, _ = _segment_of(tmp_path, [b"one", b"two", b"three"])
    data = segment.read_bytes()
    cut = len(data) - (9 + len(b"three"))  # before the last record
    garbage = os.urandom(4096)
    segment.write_bytes(data[:cut] + garbage + data[cut:])
    j = Journal(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert [body for _, _, body in _records(j)] == [b"one", b"two", b"three"]
    assert f"bytes {cut} to {cut + 4096} (4096 bytes) cannot be read" in caplog.text
    assert (tmp_path / f"{segment.name}.{cut}.corrupt").read_bytes() == garbage
    assert j.corrupt_bytes == 4096 and j.corrupt_files() == [tmp_path / f"{segment.name}.{cut}.corrupt"]
    # A second replay finds the same and copies nothing again.
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"one", b"two", b"three"]
    assert len(list(tmp_path.glob("*.corrupt"))) == 1


def test_a_corrupt_last_record_is_copied_before_it_is_cut_off(tmp_path, caplog):
    """A complete record failing its CRC at the end of the newest segment is no torn write (the
    write finished): its bytes are kept in a .corrupt file, and appends go on after the record before."""
    segment, ends = _segment_of(tmp_path, [b"kept", b"corrupt at the end"])
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    j = Journal(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert [body for _, _, body in _records(j)] == [b"kept"]
    last = ends[0]
    assert (tmp_path / f"{segment.name}.{last}.corrupt").read_bytes() == bytes(data[last:])
    assert "none follows" in caplog.text and segment.stat().st_size == last
    j.open()
    j.append([("protobuf", b"after")])
    j.close()
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"kept", b"after"]


def test_a_zero_filled_tail_is_a_torn_write(tmp_path, caplog):
    """A file the filesystem extended before the data landed: cut off, no .corrupt copy."""
    segment, ends = _segment_of(tmp_path, [b"acknowledged"])
    with open(segment, "ab") as f:
        f.write(bytes(4096))
    with caplog.at_level(logging.WARNING):
        assert [body for _, _, body in _records(Journal(tmp_path))] == [b"acknowledged"]
    assert "cutting off 4096 bytes" in caplog.text and segment.stat().st_size == ends[0]
    assert not list(tmp_path.glob("*.corrupt"))


def test_a_scan_through_megabytes_of_garbage_finds_the_record_after_it(tmp_path):
    """The scan for the next intact record is byte by byte, yet cheap: 8 MB of random bytes."""
    segment, _ = _segment_of(tmp_path, [b"first", b"last"])
    data = segment.read_bytes()
    first_end = 9 + len(b"first")
    garbage = os.urandom(8 << 20)
    segment.write_bytes(data[:first_end] + garbage + data[first_end:])
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"first", b"last"]
    assert (tmp_path / f"{segment.name}.{first_end}.corrupt").read_bytes() == garbage


def test_a_directory_with_a_segments_name_refuses_the_journal(tmp_path):
    (tmp_path / "00000000000000000000.log").mkdir()
    with pytest.raises(JournalError, match="00000000000000000000.log is not a file"):
        Journal(tmp_path)


def test_a_quarantined_record_keeps_its_body_as_received(tmp_path):
    j = Journal(tmp_path)
    j.open()
    first = j.append([("protobuf", b"pb body")])
    j.append([("json", b'{"resourceSpans": []}')])
    assert j.read(0) == ("protobuf", b"pb body") and j.read(first) == ("json", b'{"resourceSpans": []}')
    path = j.quarantine(first, "json", b'{"resourceSpans": []}', "the store refused it")
    assert path == tmp_path / "quarantine" / f"{first:020d}.json"
    assert path.read_bytes() == b'{"resourceSpans": []}' and j.quarantined() == [path]
    assert "the store refused it" in (tmp_path / "quarantine" / "reasons.txt").read_text()
    j.close()
    assert [body for _, _, body in _records(Journal(tmp_path))] == [b"pb body", b'{"resourceSpans": []}']
