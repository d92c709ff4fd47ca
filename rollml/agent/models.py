"""The model files an agent can run, keyed by model id: from a directory (watched for new files), added in
code, or fetched from the `uri` a model was registered with (`fetch_model`: verified against its id)."""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from mlkit.format import ModelFormatError, decode_model, model_id
from rollml.agent.logs import log_event

MAX_MODEL_BYTES = 1 << 30  # a model fetched from its uri is refused beyond this size
FETCH_TIMEOUT = 60.0  # seconds for one fetch from a model's uri


class ModelFetchError(ValueError):
    """A model could not be fetched from its uri, or the bytes fetched are not that model."""


class ModelStore:
    """The model files an agent can run, keyed by model id (the blob id of the bytes, vm-spec section 6).

    From a directory (`from_dir`), `refresh()` loads the files added since (the agents call it every few
    seconds: `--models` is watched); models fetched from their uri are saved there too."""

    def __init__(self, models: Iterable[bytes] = (), directory: str | Path | None = None) -> None:
        self._models: dict[bytes, bytes] = {}
        self.directory = Path(directory) if directory is not None else None
        self._seen: dict[Path, tuple[int, int]] = {}  # file -> (mtime ns, size) when last read
        self.log = logging.getLogger("rollml.models")
        for model in models:
            self.add(model)

    @classmethod
    def from_dir(cls, directory: str | Path, logger: logging.Logger | None = None) -> ModelStore:
        """Every well-formed `*.mlkit` file of `directory`, keyed by the id computed from its bytes. A file
        named `0x<model id>.mlkit` must hash to that id: a mismatch (or a malformed file) is logged and the
        file skipped, since requests name models by id only."""
        store = cls(directory=directory)
        if logger is not None:
            store.log = logger
        store.refresh()
        return store

    def refresh(self) -> list[bytes]:
        """Load the `*.mlkit` files of the directory that are new or changed since the last look; the ids
        of the models added."""
        if self.directory is None or not self.directory.is_dir():
            return []
        added = []
        for path in sorted(self.directory.glob("*.mlkit")):
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            if self._seen.get(path) == stamp:
                continue
            self._seen[path] = stamp
            mid = self._load(path)
            if mid is not None and mid not in added:
                added.append(mid)
        return added

    def _load(self, path: Path) -> bytes | None:
        log = self.log
        try:
            data = path.read_bytes()
        except OSError as exc:  # a directory or an unreadable file: skipped like a malformed one
            log_event(log, "model_rejected", logging.ERROR, file=path, reason=f"unreadable: {exc}")
            return None
        mid, named = model_id(data), _id_in_name(path)
        try:
            decode_model(data)
        except ModelFormatError as exc:
            log_event(log, "model_rejected", logging.ERROR, file=path, reason=f"malformed: {exc}")
            return None
        if named is not None and named != mid:
            log_event(log, "model_rejected", logging.ERROR, file=path, model_id=mid, reason="id mismatch")
            return None
        new = mid not in self._models
        self._models[mid] = data
        log_event(log, "model_loaded", file=path, model_id=mid, bytes=len(data))
        return mid if new else None

    def save(self, model: bytes) -> bytes:
        """Serve `model` and keep it as `0x<id>.mlkit` in the directory (if any) for the next start."""
        mid = self.add(model)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"0x{mid.hex()}.mlkit"
            tmp = path.with_suffix(".part")
            tmp.write_bytes(model)
            os.replace(tmp, path)
            st = path.stat()
            self._seen[path] = (st.st_mtime_ns, st.st_size)
        return mid

    def add(self, model: bytes) -> bytes:
        """Serve `model`; returns its id."""
        mid = model_id(model)
        self._models[mid] = bytes(model)
        return mid

    def get(self, model_id: bytes) -> bytes | None:
        return self._models.get(bytes(model_id))

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, bytes) and model_id in self._models

    def ids(self) -> list[bytes]:
        return list(self._models)


def _id_in_name(path: Path) -> bytes | None:
    """The model id a file name states (`0x<64 hex>.mlkit`), if it states one."""
    stem = path.stem.lower().removeprefix("0x")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        return bytes.fromhex(stem)
    return None


def fetch_model(uri: str, expected_id: bytes, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The model file at `uri` (http, https or file), which must hash to `expected_id` and parse as a model;
    ModelFetchError with the reason otherwise (nothing is trusted from the uri but the bytes)."""
    url = urllib.parse.urlparse(uri)
    if url.scheme not in ("http", "https", "file"):
        raise ModelFetchError(f"cannot fetch {uri!r}: only http(s):// and file:// uris are fetched")
    if url.scheme == "file" and not Path(urllib.request.url2pathname(url.path)).is_file():
        raise ModelFetchError(f"cannot fetch {uri}: not a regular file")
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(uri, timeout=timeout) as response:
            chunks, size = [], 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > MAX_MODEL_BYTES:
                    raise ModelFetchError(f"{uri}: larger than {MAX_MODEL_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ModelFetchError(f"{uri}: not fetched within {timeout:g} s")
                chunks.append(chunk)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ModelFetchError):
            raise
        raise ModelFetchError(f"cannot fetch {uri}: {exc}") from None
    data = b"".join(chunks)
    got = model_id(data)
    if got != bytes(expected_id):
        raise ModelFetchError(
            f"{uri} holds model 0x{got.hex()}, not the registered 0x{bytes(expected_id).hex()}"
        )
    try:
        decode_model(data)
    except ModelFormatError as exc:
        raise ModelFetchError(f"{uri}: malformed model: {exc}") from None
    return data
