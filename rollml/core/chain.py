"""The chain layer: one web3 connection with local signing, retries, revert decoding and dev-chain time.

Everything rollml sends to a chain goes through `Chain`:

- `Chain.embedded()`: an in-process py-evm chain (eth-tester) with ten funded accounts and automine, for
  tests and demos that need no external process (its gas estimates come from one run of the transaction,
  not py-evm's bisection: `_gas_from_one_run`); `Chain.connect(url)`: any JSON-RPC endpoint (anvil, a
  testnet node).
- `transact` signs locally with eth-account (the endpoint never holds keys), estimates gas with headroom,
  keeps one nonce counter per sender (thread-safe, so a node and its challenger threads can share a
  `Chain`), and waits for the receipt.
- Transient RPC failures (connection errors, timeouts, HTTP 5xx/429) are retried with exponential backoff;
  everything else fails at once.
- A revert, at gas estimation, in an `eth_call` or in a mined receipt, raises `ChainError` whose message is
  the custom error decoded against the ABIs in `rollml/core/artifacts`, e.g.
  `InferenceMarket.WrongBond(1, 2)`, so callers and the CLI can print one readable line.
"""

from __future__ import annotations

import ast
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar, cast

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import abi_to_signature, function_signature_to_4byte_selector, to_checksum_address
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.contract.contract import Contract, ContractFunction
from web3.exceptions import BlockNotFound, TimeExhausted, Web3Exception, Web3RPCError
from web3.types import (
    BlockData,
    BlockIdentifier,
    EventData,
    LogReceipt,
    Nonce,
    RPCEndpoint,
    RPCResponse,
    TxParams,
    TxReceipt,
    Wei,
)

from rollml.core import artifacts

T = TypeVar("T")

ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT = 10
GAS_HEADROOM = 1.25  # estimated gas is multiplied by this ...
GAS_EXTRA = 20_000  # ... plus this, so that small state changes between estimate and inclusion still fit
DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, when the endpoint does not answer eth_maxPriorityFeePerGas
RECEIPT_TIMEOUT = 120.0  # seconds to wait for a receipt
RECEIPT_POLL = 0.05  # seconds between receipt polls
LOG_CHUNK = 10_000  # blocks per eth_getLogs request (public endpoints cap the range)
BACKOFF_START = 0.2  # seconds before the first retry, doubled each time
BACKOFF_MAX = 5.0

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


class ChainError(RuntimeError):
    """A chain operation failed; the message is one readable line.

    For a revert, `error` is the decoded custom error's qualified name (e.g. "InferenceMarket.WrongBond"),
    `error_args` its decoded arguments and `data` the raw revert data.
    """

    def __init__(
        self, message: str, error: str | None = None, error_args: tuple[Any, ...] = (), data: bytes = b""
    ) -> None:
        super().__init__(message)
        self.error = error
        self.error_args = error_args
        self.data = data

    @property
    def error_name(self) -> str | None:
        """The bare custom error name ("WrongBond"), or None when this is not a decoded custom error."""
        return self.error.rsplit(".", 1)[-1] if self.error else None


class Transactable(Protocol):
    """A `ContractFunction` or `ContractConstructor`: something that can be estimated and built."""

    def estimate_gas(self, transaction: TxParams | None = None, block_identifier: Any = None) -> int: ...

    def build_transaction(self, transaction: TxParams | None = None) -> TxParams: ...


@dataclass(frozen=True)
class Transfer:
    """A plain value transfer to `to` (a `Transactable`: `Chain.transact(sender, Transfer(to), value)`)."""

    to: str
    fn_name = "transfer"

    def estimate_gas(self, transaction: TxParams | None = None, block_identifier: Any = None) -> int:
        return 21_000

    def build_transaction(self, transaction: TxParams | None = None) -> TxParams:
        tx = dict(transaction or {})
        tx["to"] = to_checksum_address(self.to)
        return cast(TxParams, tx)


# --------------------------------------------------------------------------------------------------------
# Revert decoding
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ErrorAbi:
    contract: str
    name: str
    types: tuple[str, ...]


@cache
def _error_index() -> dict[bytes, list[_ErrorAbi]]:
    """selector -> the custom errors of every deployable contract with that selector, in deployment order."""
    index: dict[bytes, list[_ErrorAbi]] = {}
    for contract in artifacts.DEPLOYABLE:
        for entry in artifacts.load(contract)["abi"]:
            if entry.get("type") != "error":
                continue
            signature = abi_to_signature(entry)
            types = tuple(signature[len(entry["name"]) + 1 : -1].split(",")) if entry["inputs"] else ()
            selector = function_signature_to_4byte_selector(signature)
            index.setdefault(selector, []).append(_ErrorAbi(contract, entry["name"], types))
    return index


def _format_value(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


def decode_revert(data: bytes, contract: str | None = None) -> ChainError:
    """The `ChainError` of revert data: a custom error of the artifacts (the one of `contract` first, since
    several contracts declare errors with the same signature), `Error(string)`, `Panic(uint256)`, or raw."""
    selector = data[:4]
    if selector == ERROR_STRING_SELECTOR:
        try:
            (reason,) = abi_decode(["string"], data[4:])
            return ChainError(f"reverted: {reason}", "Error", (reason,), data)
        except Exception:  # malformed Error(string) payload: fall through to raw
            pass
    if selector == PANIC_SELECTOR and len(data) == 36:
        code = int.from_bytes(data[4:], "big")
        return ChainError(f"reverted: Panic(0x{code:02x})", "Panic", (code,), data)
    candidates = sorted(_error_index().get(selector, []), key=lambda e: e.contract != contract)
    for err in candidates:
        try:
            values = tuple(abi_decode(list(err.types), data[4:]))
        except Exception:  # another error with the same selector but other types: try the next
            continue
        qualified = f"{err.contract}.{err.name}"
        return ChainError(
            f"{qualified}({', '.join(_format_value(v) for v in values)})", qualified, values, data
        )
    if not data:
        return ChainError("reverted without data (out of gas, or a revert with no reason)", data=data)
    return ChainError(f"reverted with unknown error data 0x{data.hex()}", data=data)


def revert_data(exc: BaseException) -> bytes | None:
    """The revert data carried by a web3 or eth-tester exception, or None when `exc` is not a revert."""
    from eth_tester.exceptions import TransactionFailed

    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, bytes):
        return data
    if isinstance(exc, TransactionFailed):
        return _tester_revert_data(exc)
    if isinstance(exc, Web3RPCError):
        message = str(exc.rpc_response.get("error", {}).get("message", "")) if exc.rpc_response else ""
        if "revert" in message:
            return b""
    return None


def _tester_revert_data(exc: BaseException) -> bytes:
    """eth-tester reports a revert as "execution reverted: b'...'" (raw data) or with the decoded reason."""
    arg = exc.args[0] if exc.args else b""
    if isinstance(arg, Exception):
        arg = arg.args[0] if arg.args else b""
    if isinstance(arg, bytes):
        return arg
    text = str(arg).removeprefix("execution reverted: ")
    if text.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(text)
            if isinstance(value, bytes):
                return value
        except (ValueError, SyntaxError):
            pass
    from eth_abi import encode as abi_encode

    return ERROR_STRING_SELECTOR + abi_encode(["string"], [text])


# --------------------------------------------------------------------------------------------------------
# Transient failures
# --------------------------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts and HTTP 5xx/429: worth retrying. Reverts and bad requests are not."""
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return status >= 500 or status == 429
    if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, Web3RPCError) and exc.rpc_response:
        code = exc.rpc_response.get("error", {}).get("code")
        return code == -32005 and revert_data(exc) is None  # limit exceeded / rate limited
    return False


def _gas_from_one_run(state: Any, transaction: Any) -> int:
    """The embedded chain's gas estimate from the gas one run at the block's limit uses: that much, or a
    little more where a call forwards only 63/64 of the gas left (tried upwards, a 64/63 step per call
    depth), as the least limit that runs (`transact` adds its headroom). py-evm's default bisects from the
    intrinsic gas up (~13 runs of the transaction per estimate), most of the time of a dispute on the
    embedded chain; this takes 2-3 runs. A failure at the block's limit raises as py-evm's does."""
    from eth.vm.spoof import SpoofTransaction

    limit = int(state.gas_limit)

    def runs(gas: int) -> Any:
        snapshot = state.snapshot()
        try:
            return state.apply_transaction(SpoofTransaction(transaction, gas=gas, gas_price=0))
        finally:
            state.revert(snapshot)

    computation = runs(limit)
    if computation.is_error:
        raise computation.error
    gas = int(transaction.intrinsic_gas + computation.get_gas_used())
    for _ in range(8):
        if gas >= limit or not runs(gas).is_error:
            return min(gas, limit)
        gas = gas * 64 // 63 + 1
    return limit


class _LockedTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe; the node and challenger may share one embedded chain from threads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


# --------------------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------------------


class Chain:
    """A connection to one chain; see the module docstring. Build with `embedded()` or `connect(url)`."""

    def __init__(self, w3: Web3, retries: int = 5, url: str = "embedded", tester: Any = None) -> None:
        self.w3 = w3
        self.retries = retries
        self.url = url
        self.tester = tester  # the EthereumTester of an embedded chain, else None
        self._names: dict[str, str] = {}  # contract address -> artifact name, for revert decoding
        self._nonces: dict[str, int] = {}
        self._nonce_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._accounts: list[LocalAccount] | None = None
        self._chain_id: int | None = None
        self._gas_limit: int | None = None
        self._pending_ok = True  # the endpoint answers for the pending block (see `now`)

    # ----- construction -----------------------------------------------------------------------------------

    @classmethod
    def embedded(cls) -> Chain:
        """A fresh in-process py-evm chain (eth-tester): ten accounts with 1,000,000 ether each, automine."""
        from eth_tester import EthereumTester, PyEVMBackend

        backend = PyEVMBackend()
        # the estimator of this chain and of the chains its snapshots revert to (a class of this backend's)
        backend.chain.gas_estimator = _gas_from_one_run
        type(backend.chain).gas_estimator = staticmethod(_gas_from_one_run)
        tester = EthereumTester(backend)
        return cls(Web3(_LockedTesterProvider(tester)), tester=tester)

    @classmethod
    def connect(cls, rpc_url: str, retries: int = 5) -> Chain:
        """A chain behind a JSON-RPC endpoint; raises ChainError when it does not answer after `retries`."""
        if not rpc_url.startswith(("http://", "https://")):
            raise ChainError(f"not an http(s) JSON-RPC url: {rpc_url!r}")
        provider = HTTPProvider(rpc_url, request_kwargs={"timeout": 30}, exception_retry_configuration=None)
        chain = cls(Web3(provider), retries=retries, url=rpc_url)
        try:
            chain._chain_id = chain._retrying(lambda: chain.w3.eth.chain_id)
        except ChainError as exc:
            raise ChainError(f"cannot reach the chain at {rpc_url}: {exc}") from None
        return chain

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self._rpc(lambda: self.w3.eth.chain_id, "eth_chainId")
        return self._chain_id

    def dev_accounts(self) -> list[LocalAccount]:
        """Funded private-key accounts of a dev chain: eth-tester's keys, or the keys of anvil's default
        mnemonic (those the endpoint lists in eth_accounts, in its order)."""
        if self._accounts is None:
            self._accounts = self._tester_accounts() if self.tester is not None else self._mnemonic_accounts()
        return list(self._accounts)

    def _tester_accounts(self) -> list[LocalAccount]:
        return [Account.from_key(key.to_bytes()) for key in self.tester.backend.account_keys]

    def _mnemonic_accounts(self) -> list[LocalAccount]:
        Account.enable_unaudited_hdwallet_features()
        derived = [
            Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
            for i in range(DEV_ACCOUNT_COUNT)
        ]
        try:
            listed = [a.lower() for a in self._rpc(lambda: self.w3.eth.accounts, "eth_accounts")]
        except ChainError:
            listed = []
        by_address = {a.address.lower(): a for a in derived}
        ordered = [by_address[a] for a in listed if a in by_address]
        return ordered or derived

    def contract(self, name: str, address: str) -> Contract:
        """The web3 contract object of artifact `name` at `address` (remembered for revert decoding)."""
        checksum = to_checksum_address(address)
        self._names[checksum] = name
        return self.w3.eth.contract(address=checksum, abi=artifacts.load(name)["abi"])

    def name_of(self, address: str | None) -> str | None:
        """The artifact name of a contract this chain object built, if any."""
        return self._names.get(to_checksum_address(address)) if address else None

    # ----- transactions ---------------------------------------------------------------------------------

    def transact(
        self, sender: LocalAccount, call: Transactable, value: int = 0, gas: int | None = None
    ) -> TxReceipt:
        """Build, sign locally, send and wait for the receipt of `call` from `sender`.

        Gas is estimated with headroom when `gas` is None. A revert, at estimation or in the receipt,
        raises ChainError with the decoded custom error.
        """
        target = self._target_name(call)
        base: TxParams = {"from": sender.address, "value": Wei(value)}
        if gas is None:
            gas = self._estimate_gas(call, base, target)
        with self._nonce_lock(sender.address):
            nonce = self._next_nonce(sender.address)
            tx = call.build_transaction(self._with_gas_and_nonce(base, gas, nonce))
            tx.update(self._fee_fields())  # type: ignore[typeddict-item]
            signed = sender.sign_transaction(cast(dict[str, Any], tx))
            self._send_raw(signed.raw_transaction, signed.hash)
            self._nonces[sender.address] = nonce + 1
        receipt = self._wait_receipt(signed.hash)
        if receipt["status"] != 1:
            raise self._explain_failed_receipt(call, base, gas, receipt, target)
        return receipt

    def call(
        self, call: ContractFunction, sender: str | None = None, block: BlockIdentifier = "latest"
    ) -> Any:
        """eth_call of a contract function (same retries and revert decoding as `transact`), optionally
        from `sender` (for functions that read msg.sender) and at an older `block`."""
        tx: TxParams = {"from": to_checksum_address(sender)} if sender else {}
        return self._rpc(lambda: call.call(tx, block_identifier=block), self._describe(call), call)

    def _with_gas_and_nonce(self, base: TxParams, gas: int, nonce: int) -> TxParams:
        return cast(TxParams, {**base, "gas": gas, "nonce": Nonce(nonce), "chainId": self.chain_id})

    def _estimate_gas(self, call: Transactable, base: TxParams, target: str | None) -> int:
        # against the pending block (over JSON-RPC): its timestamp is the one the transaction will see
        # (`now`); the latest block's may be minutes old on a quiet chain, and a deadline would revert there
        block = "pending" if self.tester is None and self._pending_ok else None
        estimate = self._rpc(
            lambda: call.estimate_gas(base, block_identifier=block),
            f"estimate gas of {self._describe(call)}",
            call,
        )
        limit = self._block_gas_limit()
        return min(int(estimate * GAS_HEADROOM) + GAS_EXTRA, limit)

    def _block_gas_limit(self) -> int:
        """The latest block's gas limit, read once (it changes slowly, and only on live networks)."""
        if self._gas_limit is None:
            block = self._rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
            self._gas_limit = int(block["gasLimit"])
        return self._gas_limit

    def _fee_fields(self) -> dict[str, int]:
        """EIP-1559 fees (twice the base fee plus the tip) or a legacy gas price on pre-London chains."""
        block = self._rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:
            return {"gasPrice": self._rpc(lambda: self.w3.eth.gas_price, "eth_gasPrice")}
        try:
            tip = int(self._rpc(lambda: self.w3.eth.max_priority_fee, "eth_maxPriorityFeePerGas"))
        except ChainError:
            tip = DEFAULT_PRIORITY_FEE
        return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}

    def _nonce_lock(self, address: str) -> threading.Lock:
        with self._locks_guard:
            return self._nonce_locks.setdefault(address, threading.Lock())

    def forget_nonces(self) -> None:
        """Forget the nonces this process counted: after a reset or reorg the chain's count is the truth."""
        self._nonces.clear()

    def _next_nonce(self, address: str) -> int:
        """The larger of the chain's pending count and our own counter (the pool may lag our sends)."""
        pending = self._rpc(
            lambda: self.w3.eth.get_transaction_count(to_checksum_address(address), "pending"),
            "eth_getTransactionCount",
        )
        return max(int(pending), self._nonces.get(address, 0))

    def _send_raw(self, raw: bytes, tx_hash: bytes) -> None:
        """Send a signed transaction. A retry after a lost answer may find it already known, or already mined
        (the endpoint then says "nonce too low"): if the endpoint has it by its hash, it was sent."""

        def send() -> None:
            try:
                self.w3.eth.send_raw_transaction(raw)
            except Web3RPCError as exc:
                message = str(exc).lower()
                if "already known" in message or "known transaction" in message or self._has_tx(tx_hash):
                    return
                raise

        self._rpc(send, f"send transaction 0x{tx_hash.hex()}")

    def _has_tx(self, tx_hash: bytes) -> bool:
        """Whether the endpoint has the transaction, pending or mined (one try: it only explains an error)."""
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
        except Exception:  # TransactionNotFound, or the endpoint failing: not known to be sent
            return False
        return True

    def _wait_receipt(self, tx_hash: bytes) -> TxReceipt:
        def wait() -> TxReceipt:
            return self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=RECEIPT_TIMEOUT, poll_latency=RECEIPT_POLL
            )

        try:
            receipt = self._rpc(wait, "wait for receipt")
        except TimeExhausted:
            raise ChainError(f"no receipt for 0x{tx_hash.hex()} after {RECEIPT_TIMEOUT:.0f} s") from None
        self._check_receipt(receipt, tx_hash)
        return receipt

    def _check_receipt(self, receipt: TxReceipt, tx_hash: bytes) -> None:
        """Trust a receipt only if it is of our transaction, in a block the endpoint has under that hash: a
        lagging or lying endpoint (or a reorg) must not make a caller act on another transaction's events or
        on a block that is gone. ChainError otherwise (agents re-read the chain and retry next tick)."""
        got = bytes(receipt["transactionHash"])
        if got != bytes(tx_hash):
            raise ChainError(
                f"the endpoint answered the receipt of another transaction (0x{got.hex()}) "
                f"for 0x{bytes(tx_hash).hex()}"
            )
        number, block_hash = int(receipt["blockNumber"]), bytes(receipt["blockHash"])

        def fetch() -> BlockData | None:
            try:
                return self.w3.eth.get_block(number)
            except BlockNotFound:
                return None

        block = self._rpc(fetch, "eth_getBlockByNumber")  # a transport failure is its own ChainError
        if block is None or bytes(block["hash"]) != block_hash:
            raise ChainError(
                f"the receipt of 0x{bytes(tx_hash).hex()} names block {number} 0x{block_hash.hex()}, "
                "which the chain does not have (a reorg, or a lying endpoint)"
            )

    def _explain_failed_receipt(
        self, call: Transactable, base: TxParams, gas: int, receipt: TxReceipt, target: str | None
    ) -> ChainError:
        """Replay a failed transaction as an eth_call on the state before its block to get the revert."""
        tx = call.build_transaction(self._with_gas_and_nonce(base, gas, 0))
        replay: TxParams = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "gas")}  # type: ignore[assignment]
        block = max(int(receipt["blockNumber"]) - 1, 0)
        try:
            self.w3.eth.call(replay, block_identifier=block)
        except Exception as exc:
            data = revert_data(exc)
            if data is not None:
                return decode_revert(data, target)
        used = int(receipt["gasUsed"])
        return ChainError(
            f"transaction 0x{bytes(receipt['transactionHash']).hex()} failed "
            f"(gas used {used} of {gas}{': out of gas' if used >= gas else ''})"
        )

    # ----- reads ------------------------------------------------------------------------------------------

    def now(self) -> int:
        """The chain's time now: the timestamp the next block will have at the least, which is what a
        transaction sent now sees as `block.timestamp`.

        Over JSON-RPC that is the pending block's timestamp (anvil and geth derive it from the wall clock),
        not the latest block's: a chain that mines only on transactions would otherwise stand still while
        nobody sends any, and a window that closed by the clock would never close for the agents. An
        endpoint without a pending block falls back to the latest one. The embedded chain has no wall
        clock (its time moves with `advance_time`): its latest block's timestamp."""
        if self.tester is None and self._pending_ok:
            try:
                pending = self._rpc(lambda: self.w3.eth.get_block("pending"), "eth_getBlockByNumber")
            except ChainError as exc:
                if exc.__cause__ is not None and is_transient(exc.__cause__):
                    raise  # the endpoint is down: the latest block would not answer either
                pending = None
            if pending is not None and pending.get("timestamp") is not None:
                return int(pending["timestamp"])
            self._pending_ok = False  # no pending block here: ask for the latest from now on
        return self.latest_time()

    def latest_time(self) -> int:
        """The latest block's timestamp (what `block.timestamp` was in the last mined block)."""
        return int(self._rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")["timestamp"])

    def block_timestamp(self, number: int) -> int:
        """The timestamp of block `number`."""
        return int(self._rpc(lambda: self.w3.eth.get_block(number), "eth_getBlockByNumber")["timestamp"])

    def block_hash(self, number: int) -> bytes:
        """The hash of block `number` (ChainError if the chain has no such block)."""
        block = self._rpc(lambda: self.w3.eth.get_block(number), "eth_getBlockByNumber")
        if block is None:
            raise ChainError(f"no block {number} on {self.url}")
        return bytes(block["hash"])

    def block_number(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    def balance(self, address: str) -> int:
        return int(self._rpc(lambda: self.w3.eth.get_balance(to_checksum_address(address)), "eth_getBalance"))

    def code_at(self, address: str) -> bytes:
        return bytes(self._rpc(lambda: self.w3.eth.get_code(to_checksum_address(address)), "eth_getCode"))

    def events(
        self,
        contract: Contract,
        event: str,
        from_block: int,
        to_block: int | None = None,
        **argument_filters: Any,
    ) -> list[EventData]:
        """The `event` logs of `contract` in [from_block, to_block] (to the latest block by default),
        oldest first, optionally filtered by argument values; fetched in chunks of LOG_CHUNK blocks."""
        last = self.block_number() if to_block is None else to_block
        handle = contract.events[event]()
        out: list[EventData] = []
        for lo in range(max(from_block, 0), last + 1, LOG_CHUNK):
            hi = min(lo + LOG_CHUNK - 1, last)

            def fetch(lo: int = lo, hi: int = hi) -> Iterable[EventData]:
                return handle.get_logs(from_block=lo, to_block=hi, argument_filters=argument_filters or None)

            out.extend(self._rpc(fetch, f"eth_getLogs {event}"))
        return out

    def logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[LogReceipt]:
        """Every raw log of the contracts at `addresses` in [from_block, to_block], oldest first: one
        eth_getLogs per LOG_CHUNK blocks for all of them (`events` makes one per event; decode these with
        `contract.events[name]().process_log`)."""
        wanted = [to_checksum_address(a) for a in addresses]
        out: list[LogReceipt] = []
        for lo in range(max(from_block, 0), to_block + 1, LOG_CHUNK):
            hi = min(lo + LOG_CHUNK - 1, to_block)

            def fetch(lo: int = lo, hi: int = hi) -> list[LogReceipt]:
                return list(self.w3.eth.get_logs({"fromBlock": lo, "toBlock": hi, "address": wanted}))

            out.extend(self._rpc(fetch, "eth_getLogs"))
        return sorted(out, key=lambda log: (log["blockNumber"], log["logIndex"]))

    # ----- dev chains -------------------------------------------------------------------------------------

    def advance_time(self, seconds: int) -> None:
        """Move a dev chain's clock forward by `seconds` and mine a block with the new time."""
        if seconds < 0:
            raise ChainError("cannot move time backwards")
        if self.tester is not None:
            with cast(_LockedTesterProvider, self.w3.provider)._lock:
                self.tester.time_travel(self.latest_time() + seconds)
                self.tester.mine_blocks(1)
            return
        self._dev_rpc("evm_increaseTime", [seconds])
        self._dev_rpc("evm_mine", [])

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks on a dev chain."""
        for _ in range(blocks):
            if self.tester is not None:
                with cast(_LockedTesterProvider, self.w3.provider)._lock:
                    self.tester.mine_blocks(1)
            else:
                self._dev_rpc("evm_mine", [])

    def _dev_rpc(self, method: str, params: Sequence[Any]) -> Any:
        response = self._rpc(lambda: self.w3.provider.make_request(RPCEndpoint(method), list(params)), method)
        if "error" in response:
            raise ChainError(f"{method} is not supported by {self.url}: {response['error'].get('message')}")
        return response.get("result")

    # ----- retries and error conversion -------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Call `fn`, retrying transient failures `self.retries` times with exponential backoff."""
        delay = BACKOFF_START
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.retries:
                    tries = f"{self.retries + 1} attempt" + ("s" if self.retries else "")
                    raise ChainError(f"{_one_line(exc)} (after {tries})") from exc
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        raise AssertionError("unreachable")

    def _rpc(self, fn: Callable[[], T], what: str, call: Any = None) -> T:
        """`_retrying(fn)` with reverts decoded into ChainError and other web3 failures made one line."""
        try:
            return self._retrying(fn)
        except ChainError:
            raise
        except TimeExhausted:
            raise
        except Exception as exc:
            data = revert_data(exc)
            if data is not None:
                raise decode_revert(data, self._target_name(call)) from None
            if isinstance(exc, Web3Exception | ValueError | TypeError | OSError):
                raise ChainError(f"{what}: {_one_line(exc)}") from None
            raise

    def _target_name(self, call: Any) -> str | None:
        address = getattr(call, "address", None)
        return self.name_of(address) if isinstance(address, str) else None

    def _describe(self, call: Any) -> str:
        name = getattr(call, "fn_name", None) or "constructor"
        contract = self._target_name(call)
        return f"{contract}.{name}" if contract else str(name)


def _one_line(exc: BaseException) -> str:
    """A short one-line description of an RPC failure."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, requests.ConnectionError):
        errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
        text = f"connection failed ({errno.group(1)})" if errno else "connection failed"
    elif isinstance(exc, requests.Timeout):
        text = "request timed out"
    if isinstance(exc, Web3RPCError) and exc.rpc_response:
        text = str(exc.rpc_response.get("error", {}).get("message", text))
    return " ".join(text.split())[:300]
