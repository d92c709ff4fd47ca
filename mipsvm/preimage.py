"""The preimage oracle off-chain (spec section 6): keys, the content-addressed store, local data, blobs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mipsvm.constants import (
    CHUNK,
    KEY_TYPE_KECCAK,
    KEY_TYPE_LOCAL,
    KEYS_PER_NODE,
    LOCAL_VALUE_SIZE,
    MAX_MANIFEST_KEYS,
    MAX_PREIMAGE,
)
from mipsvm.hashing import keccak256


class PreimageMissing(LookupError):
    """The oracle does not hold the preimage of a key (a step that needs it cannot be proven)."""

    def __init__(self, key: bytes, detail: str = "") -> None:
        self.key = key
        super().__init__(f"no preimage for key 0x{key.hex()}" + (f": {detail}" if detail else ""))


class PreimageCorrupt(ValueError):
    """A stored preimage whose hash does not match its key."""


class BlobError(ValueError):
    """A blob whose manifest or nodes are malformed, or data the blob scheme cannot hold."""


def local_key(index: int) -> bytes:
    """The type-1 key of local datum `index`: 0x01 then the index as 31 big-endian bytes."""
    if not 0 <= index < 1 << 248:
        raise ValueError(f"a local index is 31 bytes, got {index}")
    return bytes([KEY_TYPE_LOCAL]) + index.to_bytes(31, "big")


def keccak_key(data: bytes) -> bytes:
    """The type-2 key of `data`: 0x02 then the low 31 bytes of keccak256(data)."""
    return bytes([KEY_TYPE_KECCAK]) + keccak256(data)[1:]


def stream(data: bytes) -> bytes:
    """A key's data stream: u64be(len(data)) ++ data."""
    return len(data).to_bytes(8, "big") + data


def stream_part(data: bytes, offset: int) -> tuple[bytes, int]:
    """The 32 bytes of `data`'s stream at `offset` (zero-padded past the end) and the stream's length."""
    s = stream(data)
    return s[offset : offset + 32].ljust(32, b"\0"), len(s)


class PreimageStore:
    """Content-addressed keccak preimages (key -> data), in memory and optionally in a directory.

    Files are named by the hex key, written atomically, and checked against their key when read.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._data: dict[bytes, bytes] = {}
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes) -> bytes:
        """Store `data` (at most MAX_PREIMAGE bytes) and return its keccak key."""
        data = bytes(data)
        if len(data) > MAX_PREIMAGE:
            raise ValueError(f"a preimage is at most {MAX_PREIMAGE} bytes, got {len(data)}")
        key = keccak_key(data)
        if key not in self._data:
            self._data[key] = data
            if self.directory is not None:
                path = self._path(key)
                if not path.exists():
                    fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
                    try:
                        with os.fdopen(fd, "wb") as f:
                            f.write(data)
                        os.replace(tmp, path)
                    except BaseException:
                        os.unlink(tmp)
                        raise
        return key

    def get(self, key: bytes) -> bytes:
        """The preimage of the keccak key `key`; PreimageMissing if unknown, PreimageCorrupt if tampered."""
        data = self._data.get(key)
        if data is not None:
            return data
        if self.directory is None or len(key) != 32 or key[0] != KEY_TYPE_KECCAK:
            raise PreimageMissing(key)
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise PreimageMissing(key) from None
        if len(data) > MAX_PREIMAGE or keccak_key(data) != key:
            raise PreimageCorrupt(f"stored preimage {self._path(key)} does not hash to its key")
        self._data[key] = data
        return data

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        try:
            self.get(key)
        except PreimageMissing:
            return False
        return True

    def _path(self, key: bytes) -> Path:
        assert self.directory is not None
        return self.directory / key.hex()


class LocalData:
    """The type-1 preimages of one dispute context: local index -> value (spec section 6)."""

    def __init__(self, values: Mapping[int, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = {}
        for index, value in (values or {}).items():
            self.set(index, value)

    def set(self, index: int, value: bytes) -> bytes:
        """Set local datum `index` and return its key. A local value is exactly 32 bytes (spec section 6: a
        blob id or an output hash), so anything else is refused here rather than met as a malformed datum
        by the guest."""
        if len(value) != LOCAL_VALUE_SIZE:
            raise ValueError(
                f"local {index}: a local value is exactly {LOCAL_VALUE_SIZE} bytes, got {len(value)}"
            )
        key = local_key(index)
        self._data[key] = bytes(value)
        return key

    def get(self, key: bytes) -> bytes:
        data = self._data.get(key)
        if data is None:
            raise PreimageMissing(key, "local datum not set")
        return data


class PreimageOracle:
    """The Oracle of the stepper: local keys from `local`, keccak keys from `store`, nothing else."""

    def __init__(self, store: PreimageStore | None = None, local: LocalData | None = None) -> None:
        self.store = store if store is not None else PreimageStore()
        self.local = local if local is not None else LocalData()
        self._last_key = b""
        self._last_stream = b""

    def get(self, key: bytes) -> bytes:
        kind = key[0] if len(key) == 32 else -1
        if kind == KEY_TYPE_LOCAL:
            return self.local.get(key)
        if kind == KEY_TYPE_KECCAK:
            return self.store.get(key)
        raise PreimageMissing(key, "not a local (1) or keccak (2) key")

    def stream(self, key: bytes) -> bytes:
        """The whole stream of `key`, u64be(len) ++ data (PreimageMissing if unknown)."""
        if key != self._last_key:  # reads walk one key's stream 32 bytes at a time
            self._last_stream = stream(self.get(key))
            self._last_key = key
        return self._last_stream

    def stream_part(self, key: bytes, offset: int) -> tuple[bytes, int]:
        s = self.stream(key)
        return s[offset : offset + 32].ljust(32, b"\0"), len(s)


# --------------------------------------------------------------------------------------------------------
# Blobs (spec section 6): data of any size as a tree of keccak preimages.
# --------------------------------------------------------------------------------------------------------
def _level_sizes(total: int) -> list[int]:
    """Node counts from level 0 (the chunks) up to the top level (at most 511 nodes)."""
    sizes = [max(1, -(-total // CHUNK))]  # an empty blob is one empty chunk
    while sizes[-1] > MAX_MANIFEST_KEYS:
        sizes.append(-(-sizes[-1] // KEYS_PER_NODE))
    return sizes


def put_blob(store: PreimageStore, data: bytes) -> bytes:
    """Store `data` as a blob and return its id (the keccak key of its manifest)."""
    data = bytes(data)
    if len(data) >= 1 << 64:
        raise BlobError("a blob's length must fit 64 bits")
    keys = [store.put(data[i : i + CHUNK]) for i in range(0, max(len(data), 1), CHUNK)]
    while len(keys) > MAX_MANIFEST_KEYS:
        keys = [store.put(b"".join(keys[i : i + KEYS_PER_NODE])) for i in range(0, len(keys), KEYS_PER_NODE)]
    return store.put(len(data).to_bytes(8, "big") + b"".join(keys))


def get_blob(store: PreimageStore, blob_id: bytes) -> bytes:
    """The data of a blob, every node checked against the structure its length implies."""
    manifest = store.get(blob_id)
    if len(manifest) < 8:
        raise BlobError(f"blob 0x{blob_id.hex()}: manifest of {len(manifest)} bytes has no length")
    total = int.from_bytes(manifest[:8], "big")
    sizes = _level_sizes(total)
    if len(manifest) != 8 + 32 * sizes[-1]:
        raise BlobError(
            f"blob 0x{blob_id.hex()}: a {total}-byte blob has {sizes[-1]} top-level keys, "
            f"the manifest holds {(len(manifest) - 8) / 32}"
        )
    keys = _split_keys(manifest[8:])
    for level in range(len(sizes) - 2, -1, -1):  # walk down to the chunks
        children: list[bytes] = []
        for i, key in enumerate(keys):
            node = store.get(key)
            expected = min(KEYS_PER_NODE, sizes[level] - i * KEYS_PER_NODE)
            if len(node) != 32 * expected:
                raise BlobError(f"blob 0x{blob_id.hex()}: level {level + 1} node {i} is malformed")
            children += _split_keys(node)
        keys = children
    out = bytearray()
    for i, key in enumerate(keys):
        chunk = store.get(key)
        expected = min(CHUNK, total - i * CHUNK)
        if len(chunk) != expected:
            raise BlobError(f"blob 0x{blob_id.hex()}: chunk {i} has {len(chunk)} bytes, expected {expected}")
        out += chunk
    return bytes(out)


def _split_keys(data: bytes) -> list[bytes]:
    return [data[i : i + 32] for i in range(0, len(data), 32)]
