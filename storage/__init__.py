"""Storage engine: crash-safe, preallocated segment files for streams of timestamped records.

The engine knows streams (two validated names, e.g. product × channel) and records (receive
time, kind, raw bytes). It never imports the ingest layer and knows nothing of Coinbase.

This module is the public API: the recorder (`logger/`) and the command lines (`tools/`) import
from `storage`, never from `storage.<module>` (tests/test_layout.py enforces it), so the modules
behind it can be split or renamed without touching a caller. The one documented sub-API is
`storage.source` (remote objects: S3 byte sources, listing, display names), kept apart because
only the reading and shipping tools need it and it carries the optional boto3 dependency.
Codec internals (`storage.format`, `storage.backends`, `storage.segment`, ...) are white-box
for tests and benchmarks only. docs/ARCHITECTURE.md lists the API by group.
"""

from storage.archive import DEFAULT_LEVEL, ArchiveReader, is_archive, open_any
from storage.archive_verify import VerifyReport, verify_file
from storage.backends import BACKEND_NAMES, DEFAULT_BACKEND
from storage.bulk import RecordBatch
from storage.bulk import batches as record_batches
from storage.compact import CompactError, CompactResult, NotEligible, compact_segment
from storage.damage import Damage
from storage.engine import Engine
from storage.engine_config import EngineConfig
from storage.format import CorruptSegment, ForeignFile, SegmentHeader
from storage.layout import (
    QUARANTINE_DIR,
    SEGMENT_SUFFIX,
    InvalidStreamName,
    SegmentRef,
    iter_segments,
    parse_segment_path,
    segment_path,
    validate_name,
)
from storage.markers import NO_MARKERS, MarkerCounts, SegmentScan
from storage.policy import CommitPolicy
from storage.provenance import (
    DATA_DIR_META,
    Claim,
    DataDirError,
    DialectMismatch,
    VenueMismatch,
    claim_root,
    read_meta,
    release_root,
)
from storage.reader import Record, SegmentReader
from storage.records import POSSIBLE_LOSS, RecordKind
from storage.results import CommitError, CommitResult
from storage.rootlock import LOCK_NAME, RootInUse, RootLock
from storage.segment import read_segment_header
from storage.stream import Stream

# grouped by use in docs/ARCHITECTURE.md (writing, records, layout, reading, archiving)
__all__ = [
    "BACKEND_NAMES",
    "DATA_DIR_META",
    "DEFAULT_BACKEND",
    "DEFAULT_LEVEL",
    "LOCK_NAME",
    "NO_MARKERS",
    "POSSIBLE_LOSS",
    "QUARANTINE_DIR",
    "SEGMENT_SUFFIX",
    "ArchiveReader",
    "Claim",
    "CommitError",
    "CommitPolicy",
    "CommitResult",
    "CompactError",
    "CompactResult",
    "CorruptSegment",
    "Damage",
    "DataDirError",
    "DialectMismatch",
    "Engine",
    "EngineConfig",
    "ForeignFile",
    "InvalidStreamName",
    "MarkerCounts",
    "NotEligible",
    "Record",
    "RecordBatch",
    "RecordKind",
    "RootInUse",
    "RootLock",
    "SegmentHeader",
    "SegmentReader",
    "SegmentRef",
    "SegmentScan",
    "Stream",
    "VenueMismatch",
    "VerifyReport",
    "claim_root",
    "compact_segment",
    "is_archive",
    "iter_segments",
    "open_any",
    "parse_segment_path",
    "read_meta",
    "read_segment_header",
    "record_batches",
    "release_root",
    "segment_path",
    "validate_name",
    "verify_file",
]
