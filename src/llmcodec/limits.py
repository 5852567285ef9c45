"""Fixed limits on what an artifact header or a model's metadata can make llmcodec do.

Every size and time that untrusted input can influence is bounded by one of these constants,
never by a number taken from that input alone (docs/guarantees.md lists them for users).
"""

from __future__ import annotations

# The safetensors header (JSON) of an artifact: far above any real model's index.
MAX_HEADER_BYTES = 100 * 2**20

# No real tensor has a side this long; bigger numbers in a header are damage.
MAX_DIM = 2**31

# Frame padding beyond the tile (alignment, minimum frame size) is far smaller than this.
MAX_PAD = 4096

# A coded matrix has at most this many elements (rows x columns): 2^32, above any real weight
# matrix (a 256k vocabulary x 16k hidden size is 2^32).
MAX_TENSOR_ELEMENTS = 2**32

# All coded matrices of one artifact together: 2^40 weights, above any model that exists.
MAX_TOTAL_ELEMENTS = 2**40

# Luma samples of all frames of one coded matrix (the matrix plus padding to whole frames).
MAX_FRAME_SAMPLES = 2 * MAX_TENSOR_ELEMENTS

# Bytes one decoder run may write (raw frames of 16-bit samples with two full chroma planes).
# The decoder is also stopped as soon as it writes more than the header's layout asks for.
MAX_DECODED_BYTES = 6 * MAX_FRAME_SAMPLES

# A decoder run is stopped after at most this many seconds, whatever its size.
MAX_DECODE_SECONDS = 3600.0

# An encoder run is stopped after at most this many seconds.
MAX_ENCODE_SECONDS = 4 * 3600.0

# Quick FFmpeg queries (-encoders, -decoders, -version) must answer within this many seconds.
PROBE_SECONDS = 30.0

# Decoder output is read in chunks of this many bytes (never the whole stream at once).
READ_CHUNK = 1 << 20

# The last bytes of an FFmpeg process's stderr kept for error messages.
STDERR_TAIL = 4000

# A stored file name (tokenizer, generation config, ...) has at most this many UTF-8 bytes.
MAX_FILE_NAME_BYTES = 255

# A GGUF source must hold at least this fraction of the parameters its metadata implies.
MIN_GGUF_COVERAGE = 0.5

# A GGUF file may declare at most this many blocks (layers) in its metadata.
MAX_GGUF_BLOCKS = 4096
