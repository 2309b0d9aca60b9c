"""`file_storage` config: the keys and defaults of the Collector contrib's
extension/storage/filestorage."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshtrace.collector.schema import Duration

DEFAULT_DIRECTORY = "/var/lib/otelcol/file_storage"
# bbolt's compaction copies the database through a temporary file; SQLite's VACUUM needs neither
# that file's directory nor a transaction size, and leaves no temporary file behind.
_IGNORED = "accepted for compatibility and ignored: SQLite's VACUUM does not use it"


@dataclass
class CompactionConfig:
    on_start: bool = False
    on_rebound: bool = False
    directory: str = field(default=DEFAULT_DIRECTORY, metadata={"warning": _IGNORED})
    max_transaction_size: int = field(default=65536, metadata={"warning": _IGNORED})
    rebound_needed_threshold_mib: int = 100
    rebound_trigger_threshold_mib: int = 10
    check_interval: Duration = 5.0
    cleanup_on_start: bool = field(default=False, metadata={"warning": _IGNORED})

    def __post_init__(self) -> None:
        if self.max_transaction_size < 0:
            raise ValueError("max_transaction_size must not be negative")
        if self.on_rebound and self.check_interval <= 0:
            raise ValueError("check_interval must be positive when on_rebound is set")


@dataclass
class FileStorageConfig:
    directory: str = DEFAULT_DIRECTORY
    timeout: Duration = 1.0  # how long to wait for another process's lock on a file
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    fsync: bool = False
    create_directory: bool = False
    directory_permissions: str = "0750"

    def __post_init__(self) -> None:
        if not self.directory:
            raise ValueError("directory must be set")
        if self.timeout < 0:
            raise ValueError("timeout must not be negative")
        try:
            mode = int(self.directory_permissions, 8)
        except ValueError:
            raise ValueError(
                f"directory_permissions must be an octal mode like 0750, got {self.directory_permissions!r}"
            ) from None
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"directory_permissions out of range: {self.directory_permissions!r}")
