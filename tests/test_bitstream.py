"""The .pgvc container, byte by byte: no model, no torch (streams are built from made-up chunks)."""
from __future__ import annotations

import binascii
import dataclasses
import random
import struct
import subprocess
import sys
import warnings

import pytest

from progvc_lab import bitstream
from progvc_lab.bitstream import (MAGIC, MAX_FRAMES, MAX_SIDE, VERSION, BitstreamError, Header, LimitError, Limits,
                                  Reader, Stream, decode_memory, describe, pack_chunk, pack_header, put_varint,
                                  read_stream, scale_schedule, truncate, unpack_chunk, unpack_header, write_stream)


def make_header(**kw) -> Header:
    fields = dict(fingerprint=bytes(range(4)), width=48, height=32, fps_num=30000, fps_den=1001, num_frames=7,
                  gop=3, latent_hw=(4, 6), num_scales=6, scales_sent=6)
    fields.update(kw)
    return Header(**fields)


def make_stream(seed: int = 0, **kw) -> tuple[Stream, bytes]:
    """A stream with random chunk bytes (sizes grow with the scale; a chunk of an n-frame GOP holds at
    least n - 1 bytes, its string lengths, as a real one does)."""
    rng = random.Random(seed)
    h = make_header(**kw)
    stream = Stream(h)
    for s in range(h.scales_sent):
        for g in range(h.num_gops):
            n = h.gop_frames(g) - 1 + rng.randint(1, 4 + 30 * s)
            stream.chunks[(g, s)] = bytes(rng.getrandbits(8) for _ in range(n))
            stream.crcs[(g, s)] = rng.getrandbits(16)
    return stream, write_stream(stream)


def data_offset(data: bytes) -> int:
    """Where the chunk data starts (after header, table and checks)."""
    info = describe(data)
    return info["header_bytes"] + info["table_bytes"]


def reseal(h_bytes: bytes, table: bytes, chunks: bytes) -> bytes:
    """header | table | both CRCs recomputed | data: what a crafty editor can always make."""
    head = h_bytes + table
    head += struct.pack("<H", binascii.crc_hqx(head, 0xFFFF))
    return head + struct.pack("<I", binascii.crc32(chunks, binascii.crc32(head))) + chunks


def craft(**kw) -> bytes:
    """A stream with any header field values, a table of (at most 64) 1-byte chunks and *valid* CRCs."""
    kw.setdefault("scales_sent", 0)
    h = make_header(**kw)
    entries = min(64, max(0, h.scales_sent) * max(1, -(-h.num_frames // max(h.gop, 1))))
    return reseal(pack_header(h), (put_varint(1) + b"\x00\x00") * entries, b"\x00" * entries)


def split(data: bytes):
    """(header bytes, [(length, stored check)], data start) of a well-formed stream."""
    r = Reader(data)
    h = unpack_header(r)
    hdr = data[:r.pos]
    table = [(r.varint(), r.unpack("H")[0]) for _ in range(h.scales_sent * h.num_gops)]
    return h, hdr, table, r.pos + 6


def pack_table(table) -> bytes:
    return b"".join(put_varint(n) + struct.pack("<H", c) for n, c in table)


# ---- header and varints ------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"width": 1, "height": 1, "latent_hw": (1, 1), "num_scales": 1,
                                     "scales_sent": 0, "num_frames": 1, "gop": 1},
                                {"width": MAX_SIDE, "height": 7, "num_frames": MAX_FRAMES, "gop": 65535,
                                 "fps_num": 65535, "fps_den": 65535, "mask": "var", "window": 255,
                                 "coder": "constriction", "quantizer": "bsq", "copy_gate": "learned"},
                                {"copy_gate": "count"}, {"copy_gate": "context", "mask": "infinitystar"}])
def test_header_round_trip(kw):
    h = make_header(**kw)
    packed = pack_header(h)
    assert packed[:4] == MAGIC and packed[4] == VERSION
    r = Reader(packed + b"rest")
    assert unpack_header(r) == h
    assert r.pos == len(packed)


def test_container_overhead_is_compact():
    """QCIF, 30 frames in one GOP, 6 scales: header 24 bytes (with the coding threads); header + table + both CRCs 48 bytes
    (version 2: 25 + 18 = 43, with unbound chunk checks and no payload check)."""
    h = make_header(width=176, height=144, fps_num=30, fps_den=1, num_frames=30, gop=32, latent_hw=(18, 22),
                    copy_gate="count")
    assert len(pack_header(h)) <= 24
    assert h.schedule == scale_schedule((18, 22), 6)
    stream = Stream(h, {(0, s): b"\x01" * (29 + 15 * s) for s in range(6)}, {(0, s): s for s in range(6)})
    data = write_stream(stream)
    assert data_offset(data) == len(pack_header(h)) + 6 * 3 + 6 <= 48


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21, 2**28 + 5, 2**35])
def test_varint_round_trip(n):
    enc = put_varint(n)
    assert len(enc) == max(1, -(-n.bit_length() // 7))
    r = Reader(enc + b"\x00")
    assert r.varint() == n and r.pos == len(enc)


def test_varint_errors():
    with pytest.raises(BitstreamError, match="malformed"):
        Reader(b"\xff" * 12).varint()
    with pytest.raises(BitstreamError, match="truncated"):
        Reader(b"\x80\x80").varint()
    with pytest.raises(ValueError):
        put_varint(-1)


@pytest.mark.parametrize("strings", [[b""], [b"abc"], [b"", b"", b"x"], [b"a" * 200, b"", b"bc", b"\x00" * 3]])
def test_chunk_round_trip(strings):
    assert unpack_chunk(pack_chunk(strings), len(strings), "chunk") == strings


# ---- whole streams -------------------------------------------------------------------------------------
def test_stream_round_trip():
    stream, data = make_stream()
    back = read_stream(data)
    assert back.header == stream.header
    assert back.chunks == stream.chunks and back.crcs == stream.crcs
    assert read_stream(bytearray(data)).chunks == stream.chunks
    assert back.report.complete and not back.report.salvaged and back.report.scales_per_gop == [6, 6, 6]
    assert "complete stream (payload CRC-32 verified)" in back.report.summary()


def test_chunks_are_stored_scale_major():
    stream, data = make_stream()
    h = stream.header
    body = b"".join(stream.chunks[(g, s)] for s in range(h.scales_sent) for g in range(h.num_gops))
    assert data.endswith(body)


@pytest.mark.parametrize("k", range(0, 7))
def test_truncate_to_every_k(k):
    stream, data = make_stream(seed=k)
    cut = truncate(data, k)
    back = read_stream(cut)
    assert back.header.scales_sent == k and back.report.complete
    assert back.chunks == {key: v for key, v in stream.chunks.items() if key[1] < k}
    assert back.crcs == {key: v for key, v in stream.crcs.items() if key[1] < k}
    assert truncate(cut, k) == cut
    if k:
        assert len(truncate(data, k - 1)) < len(cut)
    # truncating in two steps is the same as in one
    assert truncate(truncate(data, 6), k) == cut
    # the checks of the kept chunks do not change: truncation rewrites only the header and CRCs
    assert split(cut)[2] == split(data)[2][:3 * k]


def test_truncate_rejects_more_scales_than_sent():
    _, data = make_stream()
    with pytest.raises(BitstreamError, match="cannot keep 7 scales"):
        truncate(data, 7)
    with pytest.raises(BitstreamError):
        truncate(truncate(data, 2), 3)


def chunk_ends(stream: Stream) -> list[tuple[int, int, int]]:
    """(data offset where chunk (g, s) ends, g, s) in stream order."""
    h, out, acc = stream.header, [], 0
    for s in range(h.scales_sent):
        for g in range(h.num_gops):
            acc += len(stream.chunks[(g, s)])
            out.append((acc, g, s))
    return out


def test_raw_cut_at_scale_boundary_reads_fewer_scales():
    stream, data = make_stream()
    h = stream.header
    start = data_offset(data)
    ends = [start] + [start + e for e, g, s in chunk_ends(stream) if g == h.num_gops - 1]
    assert ends[-1] == len(data)
    for k, end in enumerate(ends[1:-1], start=1):
        with pytest.warns(UserWarning, match=f"cut after scale {k} of 6"):
            back = read_stream(data[:end])
        assert back.header.scales_sent == k and back.report.scales_per_gop == [k] * 3
        assert back.chunks == {key: v for key, v in stream.chunks.items() if key[1] < k}
        assert not back.report.complete and back.report.salvaged


def test_raw_cut_anywhere_keeps_every_complete_chunk():
    """Salvage: at every cut offset in the data, GOP g keeps exactly its complete chunks (a prefix of
    its scales); the dropped ones are named; a cut with no complete chunk is an error."""
    stream, data = make_stream(seed=3)
    start = data_offset(data)
    ends = chunk_ends(stream)
    for end in range(start, len(data)):
        have = [(g, s) for e, g, s in ends if start + e <= end]
        if not have:
            with pytest.raises(BitstreamError, match="no scale of any GOP is complete"):
                read_stream(data[:end])
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = read_stream(data[:end])
        assert set(back.chunks) == set(have) and all(back.chunks[k] == stream.chunks[k] for k in have)
        assert all(back.crcs[k] == stream.crcs[k] for k in have)
        per_gop = back.report.scales_per_gop
        assert all((g, s) in have for g in range(3) for s in range(per_gop[g]))
        assert max(per_gop) - min(per_gop) <= 1 and per_gop == sorted(per_gop, reverse=True)
        assert set(back.report.dropped()) == {(g, s) for g in range(3) for s in range(6)} - set(have)
        assert "dropped" in back.report.summary() and back.header.scales_sent == max(per_gop)
        with pytest.raises(BitstreamError, match="strict"):
            read_stream(data[:end], strict=True)
    for end in range(0, start):  # inside the header, the table or the checks
        with pytest.raises(BitstreamError, match="truncated|cut"):
            read_stream(data[:end])


def test_cut_right_after_the_table_says_so():
    _, data = make_stream()
    with pytest.raises(BitstreamError, match="cut right after its chunk table: no scale"):
        read_stream(data[:data_offset(data)])
    with pytest.raises(BitstreamError, match="inside its first chunk"):
        read_stream(data[:data_offset(data) + 1])
    # a deliberate 0-scale stream is complete and valid
    assert read_stream(truncate(data, 0)).report.complete


def test_truncate_of_a_cut_stream():
    stream, data = make_stream()
    ends = chunk_ends(stream)
    end = data_offset(data) + ends[7][0]          # chunk (1, 2) complete: GOPs 0-1 keep 3 scales, GOP 2 two
    with pytest.warns(UserWarning, match="inside scale 2"):
        assert read_stream(data[:end]).report.scales_per_gop == [3, 3, 2]
    assert truncate(data[:end], 2) == truncate(data, 2)
    with pytest.raises(BitstreamError, match="cut stream holds 2"):
        truncate(data[:end], 3)


def test_trailing_bytes_are_an_error():
    _, data = make_stream()
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        read_stream(data + b"\x00")


def test_describe():
    stream, data = make_stream()
    info = describe(data)
    h = stream.header
    assert info["total_bytes"] == len(data)
    assert info["header_bytes"] == len(pack_header(h))
    assert info["header_bytes"] + info["table_bytes"] + sum(info["bytes_per_scale"]) == len(data)
    assert sum(info["bytes_per_gop"]) == sum(info["bytes_per_scale"])
    assert info["bytes_per_scale"] == [sum(len(stream.chunks[(g, s)]) for g in range(3)) for s in range(6)]
    assert (info["num_frames"], info["gop"], info["num_gops"]) == (7, 3, 3)
    assert info["schedule"] == [list(x) for x in scale_schedule((4, 6), 6)] and info["fps"] == "30000/1001"
    assert info["bpp"] == pytest.approx(len(data) * 8 / (7 * 48 * 32))
    assert info["fingerprint"] == bytes(range(4)).hex() and info["copy_gate"] == "none"
    assert info["complete"] and "verified" in info["integrity"]
    assert describe(truncate(data, 2))["bytes_per_scale"] == info["bytes_per_scale"][:2]
    cut = describe(data[:-5])
    assert not cut["complete"] and cut["scales_per_gop"] == [6, 6, 5] and "cut inside scale 5" in cut["integrity"]
    assert cut["table_bytes"] == info["table_bytes"] and cut["incomplete_bytes"] == len(stream.chunks[(2, 5)]) - 5
    assert cut["header_bytes"] + cut["table_bytes"] + sum(cut["bytes_per_scale"]) + cut["incomplete_bytes"] == len(data) - 5


# ---- integrity: positions, header, splices ------------------------------------------------------------------
def test_every_flipped_header_or_table_byte_is_caught():
    _, data = make_stream()
    for pos in range(data_offset(data)):
        for bit in (0x01, 0x80, 0x5A):
            bad = bytearray(data)
            bad[pos] ^= bit
            with pytest.raises(BitstreamError):
                read_stream(bytes(bad))


def test_every_flipped_data_byte_of_a_complete_stream_is_caught():
    _, data = make_stream()
    for pos in range(data_offset(data), len(data)):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(BitstreamError, match="payload CRC-32"):
            read_stream(bytes(bad))


def unmasked(data: bytes) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_stream(data).crcs


def test_moved_and_duplicated_gops_fail_their_chunk_checks():
    """Swap the chunks (and table entries) of GOPs 0 and 1, or copy GOP 0 over GOP 1, and reseal both
    CRCs: the stream parses, but the check the decoder compares for each moved chunk is not the CRC of
    the tokens the chunk holds, so decoding fails at that chunk."""
    stream, data = make_stream(seed=5)
    h, hdr, table, start = split(data)
    G = h.num_gops
    chunks = [stream.chunks[(g, s)] for s in range(6) for g in range(G)]
    for kind in ("swap", "duplicate"):
        tab, ch = list(table), list(chunks)
        for s in range(6):
            i, j = s * G, s * G + 1
            if kind == "swap":
                tab[i], tab[j], ch[i], ch[j] = tab[j], tab[i], ch[j], ch[i]
            else:
                tab[j], ch[j] = tab[i], ch[i]
        crcs = unmasked(reseal(hdr, pack_table(tab), b"".join(ch)))
        for s in range(6):   # chunk now at GOP 1 holds GOP 0's tokens (CRC stream.crcs[(0, s)])
            assert crcs[(1, s)] != stream.crcs[(0, s)]
        # without resealing the payload CRC, the reader itself refuses
        with pytest.raises(BitstreamError, match="CRC"):
            read_stream(hdr + pack_table(tab) + data[len(hdr) + len(pack_table(table)):start] + b"".join(ch))


def test_edited_header_with_recomputed_crcs_fails_every_chunk_check():
    """Change the width (a crop) and recompute both CRCs: every chunk check now expects other tokens."""
    stream, data = make_stream(seed=6)
    h, hdr, table, start = split(data)
    for change in ({"width": 47}, {"fps_num": 25, "fps_den": 1}, {"gop": 3, "num_frames": 8},
                   {"copy_gate": "count"}, {"fingerprint": b"abcd"}):
        h2 = dataclasses.replace(h, **change)
        crcs = unmasked(reseal(pack_header(h2), pack_table(table), data[start:]))
        assert all(crcs[key] != stream.crcs[key] for key in crcs), change


def test_spliced_gop_from_another_stream_fails_its_chunk_check():
    """Two streams with the same header: put B's chunk (GOP 1, scale 2) and its table entry into A."""
    a, data_a = make_stream(seed=7)
    b, data_b = make_stream(seed=8)
    h, hdr, ta, start_a = split(data_a)
    _, _, tb, start_b = split(data_b)
    i = 2 * 3 + 1
    ch = [a.chunks[(g, s)] for s in range(6) for g in range(3)]
    ta[i], ch[i] = tb[i], b.chunks[(1, 2)]
    crcs = unmasked(reseal(hdr, pack_table(ta), b"".join(ch)))
    assert crcs[(1, 2)] != b.crcs[(1, 2)]                 # B's tokens do not pass in A
    assert crcs[(2, 2)] != a.crcs[(2, 2)]                 # nor does the next chunk (the checks are chained)
    assert all(crcs[(g, s)] == a.crcs[(g, s)] for g in range(3) for s in range(6) if s * 3 + g < i)
    # ... unless the two streams agree on every chunk check before it (the same video up to there)
    c = Stream(a.header, dict(a.chunks), dict(a.crcs))
    c.crcs[(1, 2)], c.chunks[(1, 2)] = b.crcs[(1, 2)], b.chunks[(1, 2)]
    tc = split(write_stream(c))[2]
    ta2 = list(split(data_a)[2])
    ta2[i] = tc[i]
    assert unmasked(reseal(hdr, pack_table(ta2), b"".join(ch)))[(1, 2)] == b.crcs[(1, 2)]


# ---- bad input ----------------------------------------------------------------------------------------------
def test_not_a_stream():
    for junk in (b"", b"PGV", b"RIFF1234567890", b"\x00" * 100, b"YUV4MPEG2 W176 H144 F30:1\n"):
        with pytest.raises(BitstreamError):
            read_stream(junk)
    with pytest.raises(BitstreamError, match="not a .pgvc stream"):
        read_stream(b"GIF89a" + b"\x00" * 50)
    with pytest.raises(BitstreamError, match="expected the bytes"):
        read_stream("file.pgvc")


def test_version_range():
    _, data = make_stream()
    with pytest.raises(BitstreamError, match="newer.*upgrade"):
        read_stream(data[:4] + bytes([VERSION + 1]) + data[5:])
    with pytest.raises(BitstreamError, match="newer.*damaged"):
        read_stream(data[:4] + bytes([255]) + data[5:])
    for v in (1, 2):
        with pytest.raises(BitstreamError, match="older.*re-encode"):
            read_stream(data[:4] + bytes([v]) + data[5:])
    with pytest.raises(BitstreamError, match="version 0 does not exist"):
        read_stream(data[:4] + bytes([0]) + data[5:])


@pytest.mark.parametrize("kw,what", [
    ({"width": 0}, "frame size"), ({"width": MAX_SIDE + 1}, "frame size"), ({"height": 65535}, "frame size"),
    ({"num_frames": 0}, "frame count"), ({"num_frames": 2**32 - 1}, "frame count"),
    ({"gop": 0}, "GOP"), ({"gop": 65536}, "GOP"), ({"fps_num": 0}, "frame rate"), ({"fps_den": 0}, "frame rate"),
    ({"fps_num": 65536}, "frame rate"), ({"fps_den": 2**34}, "frame rate"),
    ({"num_scales": 0, "scales_sent": 0}, "scales"), ({"scales_sent": 7}, "scales"),
    ({"num_scales": 200, "latent_hw": (1, 1), "scales_sent": 0}, "scales"),
    ({"latent_hw": (0, 6)}, "latent size"), ({"latent_hw": (4, MAX_SIDE + 1)}, "latent size"),
    ({"latent_hw": (33, 6)}, "latent size"), ({"window": 256}, "attention window"),
])
def test_absurd_header_values(kw, what):
    """Headers with valid CRCs (what a crafted file holds) and impossible values."""
    with pytest.raises(BitstreamError, match=what):
        read_stream(craft(**kw))


@pytest.mark.parametrize("kw,limit", [
    ({"width": MAX_SIDE, "height": MAX_SIDE, "latent_hw": (2048, 2048)}, "max_pixels"),
    ({"width": 3840, "height": 2160, "latent_hw": (270, 480)}, "max_pixels"),
    ({"num_frames": (1 << 16) + 1, "gop": 32}, "max_frames"), ({"num_frames": MAX_FRAMES, "gop": 1}, "max_frames"),
    ({"num_frames": 8000, "gop": 8000}, "max_gop"), ({"num_frames": 2000, "gop": 65535}, "max_gop"),
])
def test_limits_are_named(kw, limit):
    with pytest.raises(LimitError, match=rf"limit {limit}=.*raise the limit.*--limit {limit}=N"):
        read_stream(craft(**kw))
    # the same stream is well-formed: raising the limit lets the parser through
    read_stream(craft(**kw), limits=Limits(max_pixels=MAX_SIDE ** 2, max_frames=MAX_FRAMES, max_gop=65535))


def test_limits_at_the_edge():
    read_stream(craft(width=2048, height=2048, latent_hw=(256, 256)))          # 2^22 pixels: allowed
    read_stream(craft(num_frames=1 << 16, gop=32))
    read_stream(craft(num_frames=2048, gop=1024))
    read_stream(craft(num_frames=5, gop=60000))                                # GOP longer than the clip
    with pytest.raises(LimitError, match="max_frames=10"):
        read_stream(craft(num_frames=11), limits=Limits(max_frames=10))
    with pytest.raises(ValueError, match="unknown limit 'max_pxels'"):
        Limits().replace(max_pxels=1)
    assert Limits().replace(max_gop=3).max_gop == 3


def test_memory_estimate_and_its_limit():
    """The block mask is quadratic in GOP x scales, the attention cache linear in GOP x tokens, the
    video linear in frames x pixels: the estimate grows so, and ``check_memory`` names the biggest."""
    small = decode_memory(make_header(num_frames=30, gop=32))
    big_gop = decode_memory(make_header(num_frames=4000, gop=4000, width=176, height=144, latent_hw=(18, 22)))
    assert big_gop["block mask"] == (4000 * 6) ** 2
    assert big_gop["attention cache"] == 4000 * sum(a * b for a, b in scale_schedule((18, 22), 6)) * 4096
    assert sum(small.values()) < 50 << 20
    h = make_header(width=2048, height=2048, latent_hw=(256, 256), num_frames=600, gop=32)
    assert decode_memory(h)["video"] == 2 * 600 * 3 * 2048 * 2048 * 4
    with pytest.raises(LimitError, match="attention cache.*limit max_memory_bytes="):
        Limits().check_memory(big_gop)
    Limits().check_memory(small)
    hd = make_header(width=1920, height=1080, latent_hw=(135, 240), num_frames=32, gop=32)
    Limits().check_memory(decode_memory(hd))      # a 32-frame 1080p GOP fits the default budget
    assert bitstream.decode_batch(hd) == 1 and bitstream.decode_batch(make_header()) == 16
    with pytest.raises(LimitError, match="video"):
        Limits().check_memory(decode_memory(h))


def test_absurd_table_lengths_fail_fast():
    # a valid header, then a table that claims chunks of ~2^40 bytes each
    entry = put_varint(2**40) + struct.pack("<H", 0)
    header = pack_header(make_header())            # 3 GOPs x 6 scales = 18 table entries
    with pytest.raises(BitstreamError, match="truncated"):
        read_stream(header + entry * 17)           # the table itself is cut
    with pytest.raises(BitstreamError, match="CRC"):
        read_stream(header + entry * 18 + b"\x00" * 7)   # a complete table without a valid index CRC
    # resealed: a stream whose chunks are promised but absent is a cut with nothing complete
    with pytest.raises(BitstreamError, match="no scale of any GOP is complete"):
        read_stream(reseal(header, entry * 18, b"\x00"))


def test_chunks_too_short_for_their_frames_are_refused():
    """Each torchac chunk of an n-frame GOP holds n - 1 string lengths: a header promising 1000 frames
    per GOP in a 1-byte chunk is refused before any decoding (the work a short stream can ask for is
    bounded)."""
    h = make_header(num_frames=1000, gop=1000, scales_sent=1)
    with pytest.raises(BitstreamError, match=r"chunk \(GOP 0, scale 0\) is 1 bytes, too short to hold 1000"):
        read_stream(reseal(pack_header(h), put_varint(1) + b"\x00\x00", b"\x00"))
    # a constriction chunk has no length fields: one range-coder message may code them all
    h = make_header(num_frames=1000, gop=1000, scales_sent=1, coder="constriction")
    assert read_stream(reseal(pack_header(h), put_varint(1) + b"\x00\x00", b"\x00")).report.complete


ABSURD_TABLE = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
from progvc_lab.bitstream import BitstreamError, Header, Limits, MAX_FRAMES, pack_header, read_stream
# 2^20 one-frame GOPs x 64 scales: a 351-byte file whose header promises 67 million chunks
h = Header(fingerprint=bytes(4), width=16, height=16, fps_num=25, fps_den=1, num_frames=MAX_FRAMES, gop=1,
           latent_hw=(1, 1), num_scales=64, scales_sent=64)
t0 = time.perf_counter()
try:
    read_stream(pack_header(h) + b"\\x05\\x00\\x00" * 10, limits=Limits(max_frames=MAX_FRAMES))
except BitstreamError as e:
    print("ok", round(time.perf_counter() - t0, 3), e)
    sys.exit(0)
except MemoryError:
    print("MemoryError: read_stream allocates a table for the header's promise before checking the bytes")
    sys.exit(1)
"""


def test_absurd_frame_and_scale_counts_do_not_allocate():
    """Each table entry takes >= 3 bytes, so the reader must refuse a table the file cannot hold
    before it builds per-chunk lists (run under a 512 MiB address-space limit)."""
    res = subprocess.run([sys.executable, "-c", ABSURD_TABLE], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert float(res.stdout.split()[1]) < 1.0


def test_header_is_a_dataclass_with_gop_helpers():
    h = make_header(num_frames=7, gop=3)
    assert (h.num_gops, [h.gop_frames(g) for g in range(3)], h.num_scales) == (3, [3, 3, 1], 6)
    assert dataclasses.replace(h, gop=1).num_gops == 7


def test_header_takes_keywords_only():
    fields = [getattr(make_header(), f.name) for f in dataclasses.fields(Header)]
    with pytest.raises(TypeError):
        Header(*fields)


def test_bitstream_does_not_import_torch():
    code = ("import sys; import progvc_lab.bitstream as b; "
            "assert 'torch' not in sys.modules, 'bitstream imported torch'; "
            "assert 'numpy' not in sys.modules, 'bitstream imported numpy'")
    subprocess.run([sys.executable, "-c", code], check=True)


INFO_WITHOUT_TORCH = """
import sys
from progvc_lab.cli import main
rc = main(["info", sys.argv[1]]) + main(["info", "--json", sys.argv[1]])
assert rc == 0, rc
assert "torch" not in sys.modules, "progvc-lab info imported torch"
"""


def test_info_does_not_import_torch(tmp_path):
    _, data = make_stream()
    (tmp_path / "a.pgvc").write_bytes(data)
    res = subprocess.run([sys.executable, "-c", INFO_WITHOUT_TORCH, str(tmp_path / "a.pgvc")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "payload CRC-32 verified" in res.stdout


def test_warning_is_a_user_warning_not_an_error():
    stream, data = make_stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):
            read_stream(data[:-1])
