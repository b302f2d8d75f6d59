"""Storage engine: crash-safe, preallocated segment files for streams of timestamped records.

The engine knows streams (two validated names, e.g. product × channel) and records (receive
time, kind, raw bytes). It never imports the ingest layer and knows nothing of Coinbase.
"""

from storage.backends import Backend, WriteOp, make_backend
from storage.damage import Damage
from storage.engine import CommitError, CommitResult, Engine, EngineConfig, Stream, day_of
from storage.format import (
    HEADER_SIZE,
    BatchInfo,
    CorruptSegment,
    ForeignFile,
    SegmentHeader,
    decode_header,
    encode_batch,
    encode_header,
    iter_batch_records,
    scan_batches,
)
from storage.layout import (
    InvalidStreamName,
    SegmentRef,
    iter_segments,
    parse_segment_path,
    segment_path,
    validate_name,
)
from storage.reader import Record, SegmentReader, decode_batches
from storage.records import RecordKind

__all__ = [
    "HEADER_SIZE",
    "Backend",
    "BatchInfo",
    "CommitError",
    "CommitResult",
    "CorruptSegment",
    "Damage",
    "Engine",
    "EngineConfig",
    "ForeignFile",
    "InvalidStreamName",
    "Record",
    "RecordKind",
    "SegmentHeader",
    "SegmentReader",
    "SegmentRef",
    "Stream",
    "WriteOp",
    "day_of",
    "decode_batches",
    "decode_header",
    "encode_batch",
    "encode_header",
    "iter_batch_records",
    "iter_segments",
    "make_backend",
    "parse_segment_path",
    "scan_batches",
    "segment_path",
    "validate_name",
]
