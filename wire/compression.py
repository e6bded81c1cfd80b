"""Record batch compression codecs, as Kafka numbers them in the batch attributes.

0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd. All codecs go through ``cramjam`` except gzip, which uses the
standard library's streaming ``zlib`` so that its output can be bounded exactly.

Decompression is bounded: ``decompress(codec, data, max_size)`` never produces (nor allocates much more than)
``max_size`` bytes, and raises ``DecodeError`` when the payload would inflate beyond it.

Snappy comes in two shapes in Kafka: the Java client wraps it in xerial's block framing (``SnappyOutputStream``:
a 16-byte header ``0x82 'SNAPPY' 0x00``, int32 version, int32 compatible version, then repeated
``[int32 length][raw snappy block]``), librdkafka and others write one raw snappy block. ``decompress`` detects
which one it got; ``compress`` writes the xerial framing, as Kafka's own Java code does.

LZ4 is the standard LZ4 frame format (what Kafka uses for magic v2 batches).
"""

from __future__ import annotations

import struct
import zlib

import cramjam

from wire.errors import DecodeError

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

CODEC_NAMES = {NONE: "none", GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
CODEC_IDS = {name: codec for codec, name in CODEC_NAMES.items()}

MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024   # default bound on one decompressed batch payload

XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
XERIAL_BLOCK_SIZE = 32 * 1024              # xerial SnappyOutputStream's default block size

_INT32 = struct.Struct(">i")
_FIRST_GUESS = 64 * 1024                   # first output buffer tried for codecs without a size preamble


def codec_name(codec: int) -> str:
    return CODEC_NAMES.get(codec, f"unknown({codec})")


# --- compression ---------------------------------------------------------------------------------

def compress(codec: int, data, *, level: int | None = None, snappy_xerial: bool = True) -> bytes:
    """Compress ``data`` with Kafka codec ``codec``; codec 0 returns the bytes unchanged."""
    if codec == NONE:
        return bytes(data)
    if codec == GZIP:
        # zlib with wbits=31 writes a single gzip member, like java.util.zip.GZIPOutputStream
        c = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if codec == SNAPPY:
        return snappy_xerial_compress(data) if snappy_xerial else bytes(cramjam.snappy.compress_raw(bytes(data)))
    if codec == LZ4:
        return bytes(cramjam.lz4.compress(bytes(data)) if level is None else cramjam.lz4.compress(bytes(data), level))
    if codec == ZSTD:
        return bytes(cramjam.zstd.compress(bytes(data)) if level is None else cramjam.zstd.compress(bytes(data), level))
    raise ValueError(f"unknown compression codec {codec}")


def snappy_xerial_compress(data, block_size: int = XERIAL_BLOCK_SIZE) -> bytes:
    """Snappy in xerial's block framing, as the Java client's ``SnappyOutputStream`` writes it."""
    view = memoryview(data).cast("B")
    parts = [XERIAL_HEADER]
    for start in range(0, len(view), block_size):
        block = bytes(cramjam.snappy.compress_raw(bytes(view[start:start + block_size])))
        parts.append(_INT32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


# --- decompression -------------------------------------------------------------------------------

def decompress(codec: int, data, max_size: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Decompress a batch payload; raises ``DecodeError`` on corrupt input or output beyond ``max_size`` bytes."""
    if codec == NONE:
        if len(data) > max_size:
            raise _too_big(codec, max_size)
        return bytes(data)
    if codec == GZIP:
        return _gzip_decompress(data, max_size)
    if codec == SNAPPY:
        return snappy_decompress(data, max_size)
    if codec == LZ4:
        return _cramjam_decompress(cramjam.lz4, codec, data, max_size)
    if codec == ZSTD:
        return _cramjam_decompress(cramjam.zstd, codec, data, max_size)
    raise DecodeError(f"unknown compression codec {codec}", "RecordBatch.attributes")


def is_xerial(data) -> bool:
    """True when ``data`` starts with xerial's snappy stream header (version fields are ignored, as Kafka does)."""
    return len(data) >= len(XERIAL_HEADER) and bytes(data[:len(XERIAL_MAGIC)]) == XERIAL_MAGIC


def snappy_decompress(data, max_size: int = MAX_DECOMPRESSED_SIZE) -> bytes:
    """Raw snappy or xerial-framed snappy, detected from the first bytes."""
    if not is_xerial(data):
        return _snappy_raw(data, max_size, "snappy")
    view = memoryview(data).cast("B")
    pos = len(XERIAL_HEADER)
    end = len(view)
    parts = []
    total = 0
    while pos < end:
        if end - pos < 4:
            raise DecodeError(f"xerial block length needs 4 bytes, {end - pos} left", "snappy.xerial")
        (block_len,) = _INT32.unpack_from(view, pos)
        pos += 4
        if block_len < 0 or block_len > end - pos:
            raise DecodeError(f"xerial block length {block_len} with {end - pos} bytes left", "snappy.xerial")
        block = _snappy_raw(view[pos:pos + block_len], max_size - total, "snappy.xerial")
        total += len(block)
        parts.append(block)
        pos += block_len
    return b"".join(parts)


def _snappy_raw(data, budget: int, field: str) -> bytes:
    data = bytes(data)
    try:
        size = cramjam.snappy.decompress_raw_len(data)
    except cramjam.DecompressionError as e:
        raise DecodeError(f"corrupt snappy length preamble: {e}", field) from None
    if size > budget:
        raise DecodeError(f"snappy block inflates to {size} bytes, over the limit of {budget}", field)
    if size == 0:
        if data != b"\x00":
            raise DecodeError("corrupt snappy block", field)
        return b""
    out = bytearray(size)
    try:
        n = cramjam.snappy.decompress_raw_into(data, out)
    except cramjam.DecompressionError as e:
        raise DecodeError(f"corrupt snappy block: {e}", field) from None
    if n != size:
        raise DecodeError(f"snappy block produced {n} bytes, its preamble said {size}", field)
    return bytes(out)


def _gzip_decompress(data, max_size: int) -> bytes:
    """Gzip, possibly several concatenated members (as java.util.zip.GZIPInputStream reads them)."""
    data = bytes(data)
    if not data:
        raise DecodeError("empty gzip payload", "gzip")
    parts = []
    total = 0
    while True:
        d = zlib.decompressobj(31)
        try:
            chunk = d.decompress(data, max_size - total + 1)
        except zlib.error as e:
            raise DecodeError(f"corrupt gzip stream: {e}", "gzip") from None
        total += len(chunk)
        if total > max_size:
            raise _too_big(GZIP, max_size)
        parts.append(chunk)
        if not d.eof:
            if d.unconsumed_tail:   # stopped by max_length only when the output reached the limit
                raise _too_big(GZIP, max_size)
            raise DecodeError("truncated gzip stream", "gzip")
        data = d.unused_data
        if not data:
            return b"".join(parts)


def _cramjam_decompress(module, codec: int, data, max_size: int) -> bytes:
    """Decompress into a bounded output buffer, growing it geometrically up to ``max_size``.

    cramjam's ``decompress_into`` stops with an error when the output buffer is full, so no attempt
    writes more than the buffer holds; the total work is at most about twice the final size.
    """
    data = bytes(data)
    if not data:
        raise DecodeError(f"empty {codec_name(codec)} payload", codec_name(codec))
    size = min(max_size, max(_FIRST_GUESS, 4 * len(data)))
    while True:
        out = bytearray(size)
        try:
            n = module.decompress_into(data, out)
        except cramjam.DecompressionError as e:
            if "whole buffer" not in str(e):
                raise DecodeError(f"corrupt {codec_name(codec)} payload: {e}", codec_name(codec)) from None
            if size >= max_size:
                raise _too_big(codec, max_size) from None
            size = min(max_size, size * 4)
            continue
        return bytes(memoryview(out)[:n])


def _too_big(codec: int, max_size: int) -> DecodeError:
    return DecodeError(f"payload inflates beyond the limit of {max_size} bytes", codec_name(codec))
