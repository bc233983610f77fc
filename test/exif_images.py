"""JPEG and PNG data carrying an EXIF Orientation tag, as phones and some cameras write them.

The EXIF block (a TIFF IFD) comes from Pillow; it is placed where the formats keep it: a JPEG
APP1 segment right after the start-of-image marker, a PNG eXIf chunk right after IHDR.
"""
from __future__ import annotations

import struct
import zlib

from PIL import Image

ORIENTATION_TAG = 0x0112
_EXIF_PREFIX = b'Exif\x00\x00'
_PNG_IHDR_END = 8 + 25  # signature, then the IHDR chunk: length, type, 13 bytes, CRC


def exif_orientation_block(orientation: int) -> bytes:
    """'Exif\\0\\0' and a TIFF IFD holding Orientation = `orientation` (1..8)."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    block = exif.tobytes()
    assert block.startswith(_EXIF_PREFIX)
    return block


def with_exif_orientation(data: bytes, orientation: int) -> bytes:
    """`data` (JPEG or PNG, as cv2.imencode writes it) with an EXIF Orientation added."""
    block = exif_orientation_block(orientation)
    if data.startswith(b'\xff\xd8'):
        segment = b'\xff\xe1' + struct.pack('>H', len(block) + 2) + block
        return data[:2] + segment + data[2:]
    assert data[12:16] == b'IHDR', 'neither JPEG nor PNG'
    tiff = block[len(_EXIF_PREFIX):]
    chunk = (struct.pack('>I', len(tiff)) + b'eXIf' + tiff
             + struct.pack('>I', zlib.crc32(b'eXIf' + tiff)))
    return data[:_PNG_IHDR_END] + chunk + data[_PNG_IHDR_END:]
