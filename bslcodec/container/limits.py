"""Documented limits of the v1 format (spec/bsl-v1.md, section 5).

A reader checks every length against these and against the file size before it allocates.
"""

MAX_HEADER_BYTES = 100_000_000  # like safetensors: the header is read whole before anything is trusted
# A compressed header (spec 2.1, .bsl 1.2) may expand at most this much: real headers compress 5-15x (their
# checksums and steps are incompressible), so 64 rejects no header a writer makes, and a hostile file can make
# a reader allocate and parse at most 64x its own size of JSON, checked before anything is decompressed.
MAX_HEADER_RATIO = 64
MAX_NAME_BYTES = 1024
MAX_JSON_DEPTH = 64  # nested arrays/objects in a header (the top-level object is depth 1); real headers use 3
MAX_NUMBER_CHARS = 1024  # characters of one JSON number token; shortest round-trip forms need at most 24
MAX_RANK = 32
MAX_ELEMENTS = 1 << 48  # keeps N * itemsize and bit counts far from int64 overflow
MAX_ZSTD_CHUNK_ELEMS = 1 << 28
# A zstd block regenerates at most 128 KiB and costs at least 4 bytes (an RLE block: 3-byte header + 1), so
# no valid frame expands more than 32768x. A reader rejects a chunk whose declared size exceeds this times
# its frame size before allocating: this rejects no valid file, and bounds a zstd payload's output.
ZSTD_MAX_RATIO = 1 << 15
MAX_SYMBOL_MAGNITUDE = 1 << 24  # |q| < 2^24: q converts exactly to binary32
MAX_EG_ORDER = 24
MAX_CODE_BITS = 51  # 2*25 + 1: the longest exp-Golomb code word a v1 file may hold
LANES = 32  # lanes per group in the `eg` codec
MIN_LANE_SYMBOLS = 16
MAX_LANE_SYMBOLS = 1024  # 1024 * 51 bits < 2^16: a lane length always fits its uint16
