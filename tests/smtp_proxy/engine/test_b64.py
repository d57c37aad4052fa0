"""Base64 bodies: strict decoding, the original line length, encoding in slices."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_proxy.engine import b64
from smtp_proxy.engine.mime_parts import MimeError

PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_b64_decode_is_strict() -> None:
    assert b64.b64_decode(b"aGVs\r\nbG8=\r\n") == b"hello"
    assert b64.b64_decode(b"  \r\n") == b""
    for bad in (b"aGVsbG8", b"aGVs!G8=", b"aGVsbG8=aGVs", b"\xff\xfe"):
        with pytest.raises(MimeError) as info:
            b64.b64_decode(bad)
        assert info.value.reason == "bad-base64"


@pytest.mark.parametrize(
    ("body", "length"),
    [
        (b"QUJD" * 19 + b"\r\n" + b"QUJD\r\n", 76),
        (b"QUJD" * 16 + b"\r\n" + b"QUJD\r\n", 64),
        (b"QUJD" * 30 + b"\r\n", 76),  # one line: nothing to imitate
        (b"QUJDR" + b"\r\nQUJD\r\n", 76),  # not a multiple of 4
    ],
)
def test_b64_line_length_imitates_the_original(body: bytes, length: int) -> None:
    assert b64.b64_line_length(body) == length


@PROFILE
@given(
    data=st.binary(max_size=2000),
    length=st.sampled_from([4, 64, 76, 996]),
    size=st.integers(1, 5000),
)
def test_b64_encode_in_slices_is_the_same_as_whole(data: bytes, length: int, size: int) -> None:
    encoded = base64.b64encode(data)
    expected = (
        b"\r\n".join(encoded[i : i + length] for i in range(0, len(encoded), length)) + b"\r\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(b64, "_ENCODE_SLICE", size)
        assert b64.b64_encode(data, length, b"\r\n", b"\r\n") == expected
    assert b64.b64_encode(data, length, b"\r\n", b"\r\n") == expected
