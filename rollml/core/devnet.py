"""A local anvil process for `rollml devnet` and the tests: start it on a free port, wait until it answers
JSON-RPC, stop it cleanly.

anvil comes from Foundry's npm package (contracts/node_modules/.bin/anvil, installed by
scripts/bootstrap.sh) and is started through the `scripts/anvil` wrapper, which `exec`s it, so the process
we hold is anvil itself and terminating it needs no process-group tricks.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from rollml.core.paths import NPM_BIN, SCRIPTS_DIR

ANVIL_WRAPPER = SCRIPTS_DIR / "anvil"
ANVIL_BINARY = NPM_BIN / "anvil"
START_TIMEOUT = 30.0  # seconds for anvil to answer its first request
STOP_TIMEOUT = 5.0  # seconds for anvil to exit after SIGTERM before SIGKILL


class DevnetError(RuntimeError):
    """anvil is missing, did not start, or exited early; one readable line."""


def anvil_missing() -> str | None:
    """Why anvil cannot be started (with the fix), or None when it can."""
    if not ANVIL_BINARY.exists():
        return f"anvil is not installed ({ANVIL_BINARY} is missing): run scripts/bootstrap.sh"
    if not ANVIL_WRAPPER.exists():
        return f"{ANVIL_WRAPPER} is missing"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Anvil:
    """One anvil process on `host:port`; a context manager (`with Anvil() as node: node.url`).

    By default anvil mines a block per transaction only (what the tests want: the clock moves when they say
    so). With `block_time` it also mines a block every `block_time` seconds (anvil's `--block-time` with
    `--mixed-mining`: transactions are still mined at once), so the chain's time follows the wall clock
    even when nobody sends a transaction, as on a real network: what `rollml devnet` runs."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log: Path | None = None,
        block_time: int | None = None,
    ) -> None:
        if block_time is not None and block_time < 1:
            raise DevnetError(f"the block time must be at least 1 second, got {block_time}")
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log = log
        self.block_time = block_time
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Anvil:
        """Start anvil and wait until it answers eth_chainId; DevnetError when it cannot."""
        missing = anvil_missing()
        if missing:
            raise DevnetError(missing)
        if port_in_use(self.port, self.host):
            raise DevnetError(
                f"port {self.port} is already in use on {self.host} (choose another with --port)"
            )
        out = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        cmd = [str(ANVIL_WRAPPER), "--host", self.host, "--port", str(self.port)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time), "--mixed-mining"]
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except DevnetError:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DevnetError(f"anvil exited with code {self.process.returncode} while starting")
            try:
                if requests.post(self.url, json=body, timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise DevnetError(f"anvil did not answer on {self.url} within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        """Terminate anvil (SIGTERM, then SIGKILL after STOP_TIMEOUT); safe to call twice."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
