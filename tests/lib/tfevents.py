"""TFRecord framing of TensorBoard event files, read with an own CRC-32C
(independent of pstrain's C code): shared by the tests that decode events."""
import struct


def crc32c_table():
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(blob):
    """Yields each record's data; raises ValueError on any framing damage."""
    off = 0
    while off < len(blob):
        if len(blob) - off < 12:
            raise ValueError("truncated length at offset %d" % off)
        head = blob[off:off + 8]
        (length,) = struct.unpack("<Q", head)
        (length_crc,) = struct.unpack("<I", blob[off + 8:off + 12])
        if masked(head) != length_crc:
            raise ValueError("length CRC mismatch at offset %d" % off)
        end = off + 12 + length
        if end + 4 > len(blob):
            raise ValueError("truncated record at offset %d" % off)
        data = blob[off + 12:end]
        (data_crc,) = struct.unpack("<I", blob[end:end + 4])
        if masked(data) != data_crc:
            raise ValueError("data CRC mismatch at offset %d" % off)
        yield data
        off = end + 4


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]
