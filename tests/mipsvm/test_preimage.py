"""The preimage oracle off-chain (spec section 6): keys, the store, local data and blobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mipsvm.constants import CHUNK, MAX_PREIMAGE
from mipsvm.hashing import keccak256
from mipsvm.preimage import (
    BlobError,
    LocalData,
    PreimageCorrupt,
    PreimageMissing,
    PreimageOracle,
    PreimageStore,
    get_blob,
    keccak_key,
    local_key,
    put_blob,
)


def test_keys() -> None:
    assert local_key(1) == b"\x01" + bytes(30) + b"\x01"
    assert local_key(0x0203) == b"\x01" + bytes(29) + b"\x02\x03"
    assert keccak_key(b"abc") == b"\x02" + keccak256(b"abc")[1:]
    assert len(keccak_key(b"")) == 32
    with pytest.raises(ValueError):
        local_key(-1)
    with pytest.raises(ValueError):
        local_key(1 << 248)


def test_store_in_memory() -> None:
    store = PreimageStore()
    key = store.put(b"hello")
    assert key == keccak_key(b"hello") and store.get(key) == b"hello" and key in store
    assert store.put(bytes(MAX_PREIMAGE)) == keccak_key(bytes(MAX_PREIMAGE))
    with pytest.raises(ValueError, match="at most 16384"):
        store.put(bytes(MAX_PREIMAGE + 1))
    with pytest.raises(PreimageMissing):
        store.get(keccak_key(b"unknown"))
    assert keccak_key(b"unknown") not in store


def test_store_on_disk(tmp_path: Path) -> None:
    store = PreimageStore(tmp_path / "pre")
    keys = [store.put(bytes([i]) * (i * 100)) for i in range(5)]
    assert sorted(os.listdir(tmp_path / "pre")) == sorted(k.hex() for k in keys)  # no temporary files left
    again = PreimageStore(tmp_path / "pre")
    for i, key in enumerate(keys):
        assert again.get(key) == bytes([i]) * (i * 100)
    with pytest.raises(PreimageMissing):
        again.get(keccak_key(b"not there"))


def test_store_detects_a_tampered_file(tmp_path: Path) -> None:
    key = PreimageStore(tmp_path).put(b"the model weights")
    (tmp_path / key.hex()).write_bytes(b"the model weighs")
    with pytest.raises(PreimageCorrupt, match="does not hash to its key"):
        PreimageStore(tmp_path).get(key)


def test_oracle_stream_parts() -> None:
    store = PreimageStore()
    data = bytes(range(100))
    key = store.put(data)
    oracle = PreimageOracle(store, LocalData({1: key, 3: b"\xaa" * 32}))
    stream = (100).to_bytes(8, "big") + data
    assert oracle.stream_part(key, 0) == (stream[:32], 108)
    assert oracle.stream_part(key, 90) == (stream[90:] + bytes(14), 108)
    assert oracle.stream_part(key, 108) == (bytes(32), 108)
    assert oracle.stream_part(key, 5000) == (bytes(32), 108)
    assert oracle.stream_part(local_key(1), 8) == (key, 40)
    assert oracle.stream_part(local_key(3), 0) == ((32).to_bytes(8, "big") + b"\xaa" * 24, 40)
    for missing in (local_key(2), keccak_key(b"x"), b"\x03" + bytes(31), bytes(32), b"short"):
        with pytest.raises(PreimageMissing):
            oracle.stream_part(missing, 0)


def test_local_values_are_exactly_32_bytes() -> None:
    local = LocalData({1: bytes(32)})
    assert local.get(local_key(1)) == bytes(32)
    for bad in (b"", b"local two", bytes(31), bytes(33), bytes(MAX_PREIMAGE)):
        with pytest.raises(ValueError, match=f"local 2: a local value is exactly 32 bytes, got {len(bad)}"):
            local.set(2, bad)
        with pytest.raises(ValueError, match="exactly 32 bytes"):
            LocalData({3: bad})
    with pytest.raises(PreimageMissing):
        local.get(local_key(2))  # nothing was set by the refused calls


def manifest_keys(store: PreimageStore, blob_id: bytes) -> int:
    manifest = store.get(blob_id)
    assert (len(manifest) - 8) % 32 == 0
    return (len(manifest) - 8) // 32


@pytest.mark.parametrize(
    ("size", "top_keys", "levels"),
    [
        (0, 1, 0),
        (1, 1, 0),
        (CHUNK, 1, 0),
        (CHUNK + 1, 2, 0),
        (511 * CHUNK, 511, 0),  # the largest blob whose manifest holds chunk keys
        (511 * CHUNK + 1, 1, 1),  # 512 chunks: one level-1 node
        (9 * 2**20, 2, 1),  # 576 chunks: two level-1 nodes
    ],
)
def test_blob_round_trip(size: int, top_keys: int, levels: int) -> None:
    data = os.urandom(size)
    store = PreimageStore()
    blob_id = put_blob(store, data)
    assert blob_id[0] == 2
    assert manifest_keys(store, blob_id) == top_keys
    assert store.get(blob_id)[:8] == size.to_bytes(8, "big")
    if levels:
        first_node = store.get(store.get(blob_id)[8:40])
        assert len(first_node) == 32 * 512  # a full level-1 node
    assert get_blob(store, blob_id) == data
    assert put_blob(PreimageStore(), data) == blob_id  # a pure function of the data


def test_blob_on_disk(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 17)
    blob_id = put_blob(PreimageStore(tmp_path), data)
    assert get_blob(PreimageStore(tmp_path), blob_id) == data


def test_blob_errors() -> None:
    store = PreimageStore()
    with pytest.raises(PreimageMissing):
        get_blob(store, keccak_key(b"no such blob"))
    with pytest.raises(BlobError, match="no length"):
        get_blob(store, store.put(b"1234"))
    chunk_key = store.put(b"abc")
    # a manifest whose length does not match its keys
    with pytest.raises(BlobError, match="top-level keys"):
        get_blob(store, store.put((CHUNK + 1).to_bytes(8, "big") + chunk_key))
    # a chunk of the wrong size
    with pytest.raises(BlobError, match="chunk 0"):
        get_blob(store, store.put((4).to_bytes(8, "big") + chunk_key))
    # a missing chunk
    with pytest.raises(PreimageMissing):
        get_blob(store, store.put((3).to_bytes(8, "big") + keccak_key(b"xyz")))
    # a level-1 node of the wrong size
    total = 512 * CHUNK
    with pytest.raises(BlobError, match="level 1 node 0"):
        get_blob(store, store.put(total.to_bytes(8, "big") + store.put(chunk_key * 3)))
