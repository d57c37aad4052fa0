"""Messages of a given shape for the MIME walker and the rewriter tests."""

from __future__ import annotations


def nested_multipart(depth: int, leaf: bytes) -> bytes:
    """``leaf`` (a whole part: headers, blank line, body) inside ``depth`` levels of
    ``multipart/mixed`` (boundaries ``b0`` innermost … ``b<depth-1>`` outermost)."""
    data = leaf
    for i in range(depth):
        data = (
            f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode()
            + data
            + f"--b{i}--\r\n".encode()
        )
    return data
