"""The .pgvc container, byte by byte: no model, no torch (streams are built from made-up chunks)."""
from __future__ import annotations

import dataclasses
import random
import struct
import subprocess
import sys
import binascii
import warnings

import pytest

from progvc_lab import bitstream
from progvc_lab.bitstream import (MAGIC, MAX_FRAMES, MAX_SIDE, VERSION, BitstreamError, Header, Reader, Stream,
                                  describe, pack_chunk, pack_header, put_varint, read_stream, scale_schedule,
                                  truncate, unpack_chunk, unpack_header, write_stream)



def make_header(**kw) -> Header:
    fields = dict(fingerprint=bytes(range(4)), width=48, height=32, fps_num=30000, fps_den=1001, num_frames=7,
                  gop=3, latent_hw=(4, 6), num_scales=6, scales_sent=6)
    fields.update(kw)
    return Header(**fields)


def make_stream(seed: int = 0, **kw) -> tuple[Stream, bytes]:
    """A stream with random chunk bytes (sizes grow with the scale, some chunks empty-ish)."""
    rng = random.Random(seed)
    h = make_header(**kw)
    stream = Stream(h)
    for s in range(h.scales_sent):
        for g in range(h.num_gops):
            n = rng.randint(1, 4 + 30 * s)
            stream.chunks[(g, s)] = bytes(rng.getrandbits(8) for _ in range(n))
            stream.crcs[(g, s)] = rng.getrandbits(16)
    return stream, write_stream(stream)


def data_offset(data: bytes) -> int:
    """Where the chunk data starts (after header and table)."""
    info = describe(data)
    return info["header_bytes"] + info["table_bytes"]


def craft_header(**kw) -> bytes:
    """A header with any field values and a *valid* CRC (what a malicious file could hold)."""
    return pack_header(make_header(**kw))


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


def test_header_is_compact():
    """Version 2: varints, derived schedule, 2-bit name ids, CRC-16 (version 1 took 85 bytes here)."""
    h = make_header(width=176, height=144, fps_num=30, fps_den=1, num_frames=30, gop=32, latent_hw=(18, 22),
                    copy_gate="context")
    assert len(pack_header(h)) <= 25
    assert h.schedule == scale_schedule((18, 22), 6)


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
    assert back.header.scales_sent == k
    assert back.chunks == {key: v for key, v in stream.chunks.items() if key[1] < k}
    assert back.crcs == {key: v for key, v in stream.crcs.items() if key[1] < k}
    assert truncate(cut, k) == cut
    if k:
        assert len(truncate(data, k - 1)) < len(cut)
    # truncating in two steps is the same as in one
    assert truncate(truncate(data, 6), k) == cut


def test_truncate_rejects_more_scales_than_sent():
    _, data = make_stream()
    with pytest.raises(BitstreamError, match="cannot keep 7 scales"):
        truncate(data, 7)
    with pytest.raises(BitstreamError):
        truncate(truncate(data, 2), 3)


def test_raw_cut_at_scale_boundary_reads_fewer_scales():
    stream, data = make_stream()
    h = stream.header
    start = data_offset(data)
    ends = [start]
    for s in range(h.scales_sent):
        ends.append(ends[-1] + sum(len(stream.chunks[(g, s)]) for g in range(h.num_gops)))
    assert ends[-1] == len(data)
    for k, end in enumerate(ends[:-1]):
        with pytest.warns(UserWarning, match=f"cut after scale {k} of 6"):
            back = read_stream(data[:end])
        assert back.header.scales_sent == k
        assert back.chunks == {key: v for key, v in stream.chunks.items() if key[1] < k}


def test_raw_cut_inside_a_scale_is_an_error():
    stream, data = make_stream()
    start = data_offset(data)
    boundaries = set(bitstream._boundaries(stream.header, {k: (len(v), 0) for k, v in stream.chunks.items()}))
    for end in range(start + 1, len(data)):
        if end - start in boundaries:
            continue
        with pytest.raises(BitstreamError, match="truncated"):
            read_stream(data[:end])
    for end in range(0, start):  # inside the header or the table
        with pytest.raises(BitstreamError, match="truncated"):
            read_stream(data[:end])


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
    assert describe(truncate(data, 2))["bytes_per_scale"] == info["bytes_per_scale"][:2]


# ---- bad input ----------------------------------------------------------------------------------------------
def test_not_a_stream():
    for junk in (b"", b"PGV", b"RIFF1234567890", b"\x00" * 100, b"YUV4MPEG2 W176 H144 F30:1\n"):
        with pytest.raises(BitstreamError):
            read_stream(junk)
    with pytest.raises(BitstreamError, match="not a .pgvc stream"):
        read_stream(b"GIF89a" + b"\x00" * 50)
    with pytest.raises(BitstreamError, match="expected the bytes"):
        read_stream("file.pgvc")


def test_newer_and_older_versions():
    _, data = make_stream()
    newer = data[:4] + bytes([VERSION + 1]) + data[5:]
    with pytest.raises(BitstreamError, match="newer"):
        read_stream(newer)
    older = data[:4] + bytes([1]) + data[5:]
    with pytest.raises(BitstreamError, match="older.*re-encode"):
        read_stream(older)


def test_every_flipped_header_byte_is_caught():
    _, data = make_stream()
    n = len(pack_header(make_header()))
    for pos in range(n):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        with pytest.raises(BitstreamError):
            read_stream(bytes(bad))


@pytest.mark.parametrize("kw,what", [
    ({"width": 0}, "frame size"), ({"width": MAX_SIDE + 1}, "frame size"), ({"height": 65535}, "frame size"),
    ({"num_frames": 0}, "frame count"), ({"num_frames": 2**32 - 1}, "frame count"),
    ({"gop": 0}, "GOP"), ({"fps_num": 0}, "frame rate"), ({"fps_den": 0}, "frame rate"),
    ({"num_scales": 0, "scales_sent": 0}, "scales"), ({"scales_sent": 7}, "scales"),
    ({"num_scales": 200, "latent_hw": (1, 1), "scales_sent": 200}, "scales"),
    ({"latent_hw": (0, 6)}, "latent size"), ({"latent_hw": (4, MAX_SIDE + 1)}, "latent size"),
])
def test_absurd_header_values(kw, what):
    with pytest.raises(BitstreamError, match=what):
        read_stream(craft_header(**kw) + b"\x00" * 64)


def test_absurd_table_lengths_fail_fast():
    # a valid header, then a table that claims chunks of ~2^40 bytes each
    entry = put_varint(2**40) + struct.pack("<H", 0)
    header = pack_header(make_header())            # 3 GOPs x 6 scales = 18 table entries
    with pytest.raises(BitstreamError, match="truncated"):
        read_stream(header + entry * 17)           # the table itself is cut
    with pytest.raises(BitstreamError, match="truncated"):
        read_stream(header + entry * 18 + b"\x00")  # a complete table, 1 of 2^40 data bytes


ABSURD_TABLE = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
from progvc_lab.bitstream import BitstreamError, Header, MAX_FRAMES, pack_header, read_stream
# 2^20 one-frame GOPs x 64 scales: a 351-byte file whose header promises 67 million chunks
h = Header(bytes(4), 16, 16, 25, 1, MAX_FRAMES, 1, (1, 1), 64, 64)
t0 = time.perf_counter()
try:
    read_stream(pack_header(h) + b"\\x05\\x00\\x00" * 10)
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


def test_header_crc_is_checked_before_fields():
    h = make_header()
    packed = bytearray(pack_header(h))
    packed[9] ^= 1  # the frame-width varint
    with pytest.raises(BitstreamError, match="corrupted"):
        unpack_header(Reader(bytes(packed)))
    # recompute the CRC: the same change is now a (valid) different header
    packed[-2:] = struct.pack("<H", binascii.crc_hqx(bytes(packed[:-2]), 0xFFFF))
    assert unpack_header(Reader(bytes(packed))) != h


def test_header_is_a_dataclass_with_gop_helpers():
    h = make_header(num_frames=7, gop=3)
    assert (h.num_gops, [h.gop_frames(g) for g in range(3)], h.num_scales) == (3, [3, 3, 1], 6)
    assert dataclasses.replace(h, gop=1).num_gops == 7


def test_bitstream_does_not_import_torch():
    code = ("import sys; import progvc_lab.bitstream as b; "
            "assert 'torch' not in sys.modules, 'bitstream imported torch'; "
            "assert 'numpy' not in sys.modules, 'bitstream imported numpy'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_warning_is_a_user_warning_not_an_error():
    stream, data = make_stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):
            read_stream(data[:data_offset(data)])
