"""meshtrace.httpbody's Inflater: every supported coding round-trips, in any chunking, and the
output never passes the limit (a bomb is 413 after at most limit + 1 bytes of output)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshtrace.httpbody import STEP, BodyError, Inflater


def raw_deflate(data: bytes) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "zlib": zlib.compress,
    "deflate": zlib.compress,
    "identity": lambda data: data,
    "": lambda data: data,
}


def inflate(encoding: str, wire: bytes, limit: int, chunk: int) -> bytes:
    inflater = Inflater(encoding, limit)
    out = b"".join(b"".join(inflater.feed(wire[i : i + chunk])) for i in range(0, len(wire), chunk))
    inflater.finish()
    return out


@given(st.binary(max_size=5000), st.sampled_from(sorted(ENCODERS)), st.integers(1, 600))
def test_round_trip_in_any_chunking(data: bytes, encoding: str, chunk: int) -> None:
    assert inflate(encoding, ENCODERS[encoding](data), 5000, chunk) == data


@given(st.binary(min_size=2, max_size=3000), st.integers(1, 600))
def test_raw_deflate_is_accepted_as_deflate(data: bytes, chunk: int) -> None:
    assert inflate("deflate", raw_deflate(data), 5000, chunk) == data


def test_output_comes_in_steps() -> None:
    pieces = list(Inflater("gzip", 10 * STEP).feed(gzip.compress(bytes(3 * STEP + 5))))
    assert [len(p) for p in pieces] == [STEP, STEP, STEP, 5]


def test_multi_member_gzip() -> None:
    assert inflate("gzip", gzip.compress(b"abc") + gzip.compress(b"def"), 100, 7) == b"abcdef"


@given(st.integers(1, 4096), st.sampled_from(["gzip", "zlib", "deflate", ""]))
def test_bomb_stops_at_the_limit(limit: int, encoding: str) -> None:
    wire = ENCODERS[encoding](bytes(limit + 1))
    inflater = Inflater(encoding, limit)
    with pytest.raises(BodyError) as info:
        b"".join(inflater.feed(wire))
    assert info.value.status == 413 and f"limit of {limit} bytes" in str(info.value)
    assert inflater.size <= limit + 1


@given(st.binary(max_size=300), st.sampled_from(["gzip", "zlib", "deflate"]))
def test_garbage_is_400_never_a_crash(data: bytes, encoding: str) -> None:
    inflater = Inflater(encoding, 10_000)
    try:  # random bytes can be a valid (raw deflate) stream: then any output is fine
        b"".join(inflater.feed(data))
        inflater.finish()
    except BodyError as exc:
        assert exc.status in (400, 413)


def test_truncated_stream_is_400() -> None:
    inflater = Inflater("gzip", 1000)
    b"".join(inflater.feed(gzip.compress(b"x" * 100)[:-10]))
    with pytest.raises(BodyError, match="truncated") as info:
        inflater.finish()
    assert info.value.status == 400


@pytest.mark.parametrize("encoding", ["zstd", "snappy", "lz4", "br", "compress"])
def test_unsupported_codings_are_415_naming_the_supported(encoding: str) -> None:
    with pytest.raises(BodyError, match="supported: \\[gzip, deflate, zlib, identity\\]") as info:
        Inflater(encoding, 10)
    assert info.value.status == 415
