"""Deploying the rollml contracts and registering models (docs/protocol.md sections 1 and 2).

`deploy` puts the six contracts of `rollml/core/artifacts` on a chain in dependency order (PreimageOracle,
MIPS, DisputeGame, ModelRegistry, InferenceMarket, GanNFT), registering the GAN model in between because the
GanNFT constructor checks it is registered with the pinned program. The result is a `Deployment`: addresses,
the deployment block (where event scans start), the market parameters and the game's arity and move timeout,
saved as JSON so that the node, the challenger, the SDK and the CLI all find the same contracts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract.contract import Contract

from rollml.core import artifacts
from rollml.core.chain import Chain, ChainError

ETHER = 10**18
GWEI = 10**9
GAN_INPUT_SHAPE = (1, 100, 1, 1)  # GanNFT.latentInput: one f32 tensor [1, 100, 1, 1]
ADDRESS_FIELDS = ("oracle", "mips", "game", "registry", "market", "gan_nft", "training")


@dataclass(frozen=True)
class MarketParams:
    """`IInferenceMarket.Params`: fees (wei), bonds (wei), the burn rate of a losing prover's bond (basis
    points), the windows (seconds) and the step bound."""

    base_fee: int
    fee_per_input_byte: int
    callback_gas_price: int
    prover_bond: int
    challenger_bond: int
    prover_bond_burn_bps: int
    challenge_window: int
    request_timeout: int
    max_steps: int

    def as_tuple(self) -> tuple[int, ...]:
        """The constructor's `Params` struct, in field order."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def discard_split(self, open_games: int) -> tuple[int, int]:
        """(share, burnt) of a discard with `open_games` games open on the result, the winner's included:
        mirrors `InferenceMarket._discard` (burn rate, equal shares, the rounding dust burned)."""
        if open_games < 1:
            raise ValueError(f"a discard has at least one open game (the winner's), got {open_games}")
        unburned = self.prover_bond - self.prover_bond * self.prover_bond_burn_bps // 10_000
        share = unburned // open_games
        return share, self.prover_bond - share * open_games

    @classmethod
    def read(cls, chain: Chain, market: Contract) -> MarketParams:
        """The parameters a deployed market was built with (its public getters)."""
        f = market.functions
        getters = (
            f.baseFee,
            f.feePerInputByte,
            f.callbackGasPrice,
            f.proverBond,
            f.challengerBond,
            f.proverBondBurnBps,
            f.challengeWindow,
            f.requestTimeout,
            f.maxSteps,
        )
        return cls(*(int(chain.call(g())) for g in getters))


# Small fees and bonds for dev chains: a request of a few hundred bytes costs well under 0.01 ether.
DEV_PARAMS = MarketParams(
    base_fee=10**15,  # 0.001 ether
    fee_per_input_byte=10**10,
    callback_gas_price=GWEI,
    prover_bond=ETHER,
    challenger_bond=ETHER,
    prover_bond_burn_bps=5_000,  # half a losing prover's bond is burned (docs/protocol.md section 4)
    challenge_window=600,
    request_timeout=3600,
    max_steps=2**40,
)
DEV_ARITY = 16
DEV_MOVE_TIMEOUT = 300

# docs/security.md, assumptions A1 and A4: what keeps a deployment's parameters safe
VM_STEPS_PER_SECOND = 110_000_000  # the Unicorn executor's lower figure (README, bench/vm.py)
SAFETY_MARGIN = 60  # seconds of a window for fetching the model and getting a challenge included
WINNER_GAS = 1_000_000  # gas a challenger spends to win a 15M-step game (A4)


def safe_max_steps(challenge_window: int, margin: int = SAFETY_MARGIN) -> int:
    """The largest `maxSteps` a challenger can re-run within the window (A1), 0 if the window is shorter
    than the margin."""
    return max(0, VM_STEPS_PER_SECOND * (challenge_window - margin))


def safety_problems(
    params: MarketParams, margin: int = SAFETY_MARGIN, gas_price: int | None = None
) -> list[str]:
    """Why `params` break the assumptions of docs/security.md (empty when they do not):

        challengeWindow >= maxSteps / (1.1e8 steps/s) + margin                           (A1)
        proverBond * (1 - proverBondBurnBps / 10000) >= 1M gas * gas price, challengerBond too   (A4)

    The bond rule is checked only with the worst `gas_price` (wei) expected during a game."""
    problems = []
    if params.challenge_window <= margin:
        problems.append(
            f"the challenge window ({params.challenge_window} s) must be longer than the {margin} s margin"
            " for fetching the model and getting a challenge included"
        )
    elif params.max_steps > safe_max_steps(params.challenge_window, margin):
        need = -(-params.max_steps // VM_STEPS_PER_SECOND) + margin
        problems.append(
            f"maxSteps {params.max_steps} takes a challenger"
            f" {params.max_steps / VM_STEPS_PER_SECOND:.0f} s to re-run: the window needs"
            f" >= maxSteps / 1.1e8 + {margin} s = {need} s (security.md A1), or"
            f" maxSteps <= {safe_max_steps(params.challenge_window, margin)}"
        )
    if gas_price is not None:
        cost = WINNER_GAS * gas_price
        unburned = params.prover_bond - params.prover_bond * params.prover_bond_burn_bps // 10_000
        if unburned < cost:
            problems.append(
                f"the unburned prover bond ({unburned} wei) does not pay a challenger's ~{WINNER_GAS} gas at"
                f" {gas_price} wei/gas ({cost} wei; security.md A4)"
            )
        if params.challenger_bond < cost:
            problems.append(
                f"the challenger bond ({params.challenger_bond} wei) does not pay a prover's"
                f" ~{WINNER_GAS} gas at {gas_price} wei/gas ({cost} wei; security.md A4)"
            )
    return problems


@dataclass(frozen=True)
class Contracts:
    """web3 contract objects of one deployment."""

    oracle: Contract
    mips: Contract
    game: Contract
    registry: Contract
    market: Contract
    gan_nft: Contract
    training: Contract | None = None  # None in a deployment from before training runs


@dataclass
class Deployment:
    """Where the rollml contracts of one chain are, and how they were configured."""

    chain_id: int
    block: int  # the block of the first deployment transaction: event scans start here
    oracle: str
    mips: str
    game: str
    registry: str
    market: str
    gan_nft: str
    params: MarketParams
    arity: int
    move_timeout: int
    program_hash: bytes  # the guest's program hash the GanNFT pins (and register_model uses)
    gan_model_id: bytes
    training: str = ""  # the TrainingRun contract (verifiable training runs; docs/protocol.md)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ADDRESS_FIELDS}

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["program_hash"] = "0x" + self.program_hash.hex()
        data["gan_model_id"] = "0x" + self.gan_model_id.hex()
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        """Parse `to_json` output; ValueError on a malformed or incomplete file."""
        try:
            data = json.loads(text)
            data["params"] = MarketParams(**data["params"])
            data["program_hash"] = _hex_bytes(data["program_hash"])
            data["gan_model_id"] = _hex_bytes(data["gan_model_id"])
            return cls(**data)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a rollml deployment file: {exc}") from None

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.to_json())
        return out

    @classmethod
    def load(cls, path: str | Path) -> Deployment:
        """Read a deployment file; ValueError names the file when it is missing or malformed."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read deployment file {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def contracts(self, chain: Chain) -> Contracts:
        """The contract objects on `chain`; ChainError when the chain is another one (a different chain id,
        or no code at the market: typically a restarted anvil)."""
        if chain.chain_id != self.chain_id:
            raise ChainError(
                f"the deployment is for chain id {self.chain_id}, the endpoint is {chain.chain_id}"
            )
        if not chain.code_at(self.market):
            raise ChainError(
                f"no contract at the market address {self.market}: the deployment is from another chain "
                "(a restarted dev chain?); deploy again"
            )
        return Contracts(
            oracle=chain.contract("PreimageOracle", self.oracle),
            mips=chain.contract("MIPS", self.mips),
            game=chain.contract("DisputeGame", self.game),
            registry=chain.contract("ModelRegistry", self.registry),
            market=chain.contract("InferenceMarket", self.market),
            gan_nft=chain.contract("GanNFT", self.gan_nft),
            training=chain.contract("TrainingRun", self.training) if self.training else None,
        )


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


@cache
def program_hash() -> bytes:
    """The state hash (vm-spec section 2) of the mlkit guest's initial state (vm-spec section 8): the start
    state of every dispute about a model that runs on the guest."""
    from mipsvm.elf import load_elf
    from mlkit.build import GUEST_ELF

    return load_elf(GUEST_ELF).state.hash()


@cache
def exec_program_hash() -> bytes:
    """The node guest's initial state hash (mlkit-exec.elf): the start of every split game's bottom level
    (the market's `execProgramHash`)."""
    from mlkit.guest import exec_program_hash as guest_hash

    return guest_hash()


def deploy_contract(chain: Chain, sender: LocalAccount, name: str, *args: Any) -> tuple[Contract, int]:
    """Deploy artifact `name` with constructor `args`; (its contract object, the receipt's block)."""
    art = artifacts.load(name)
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = chain.transact(sender, factory.constructor(*args))
    address = receipt["contractAddress"]
    if address is None:
        raise ChainError(f"deploying {name}: the receipt has no contract address")
    return chain.contract(name, address), int(receipt["blockNumber"])


def deploy(
    chain: Chain,
    deployer: LocalAccount,
    gan_model_id: bytes,
    params: MarketParams = DEV_PARAMS,
    arity: int = DEV_ARITY,
    move_timeout: int = DEV_MOVE_TIMEOUT,
    gan_model: bytes | None = None,
) -> Deployment:
    """Deploy all seven contracts (docs/protocol.md section 1) and return where they are.

    The GanNFT pins `gan_model_id` with `program_hash()`, so the GAN model is registered first: with its
    real shapes when `gan_model` (the file's bytes) is given, else with GanNFT's latent input shape and an
    empty (unknown) output shape under the name "gan". A later `register_model` of the same bytes is a no-op.
    """
    program = program_hash()
    oracle, first_block = deploy_contract(chain, deployer, "PreimageOracle")
    mips, _ = deploy_contract(chain, deployer, "MIPS", oracle.address)
    game, _ = deploy_contract(chain, deployer, "DisputeGame", mips.address, arity, move_timeout)
    registry, _ = deploy_contract(chain, deployer, "ModelRegistry")
    market, _ = deploy_contract(
        chain,
        deployer,
        "InferenceMarket",
        registry.address,
        game.address,
        params.as_tuple(),
        exec_program_hash(),
    )
    if gan_model is not None:
        if _model_id(gan_model) != gan_model_id:
            raise ValueError("gan_model's blob id is not gan_model_id")
        _register(chain, registry, deployer, gan_model_id, "dcgan32", *_shapes(gan_model), "", program)
    else:
        _register(chain, registry, deployer, gan_model_id, "gan", list(GAN_INPUT_SHAPE), [], "", program)
    gan_nft, _ = deploy_contract(
        chain, deployer, "GanNFT", market.address, registry.address, gan_model_id, program
    )
    training, _ = deploy_contract(chain, deployer, "TrainingRun", registry.address, game.address)
    return Deployment(
        chain_id=chain.chain_id,
        block=first_block,
        oracle=oracle.address,
        mips=mips.address,
        game=game.address,
        registry=registry.address,
        market=market.address,
        gan_nft=gan_nft.address,
        params=params,
        arity=arity,
        move_timeout=move_timeout,
        program_hash=program,
        gan_model_id=gan_model_id,
        training=training.address,
    )


def _model_id(model: bytes) -> bytes:
    from mlkit.format import model_id

    return model_id(model)


def _shapes(model: bytes) -> tuple[list[int], list[int]]:
    """(input shape, output shape) for the registry: the first graph input and output (informational)."""
    from mlkit.format import decode_model

    parsed = decode_model(model)
    inputs, outputs = parsed.input_specs(), parsed.output_specs()
    return (list(inputs[0][1]) if inputs else []), (list(outputs[0][1]) if outputs else [])


def _register(
    chain: Chain,
    registry: Contract,
    sender: LocalAccount,
    mid: bytes,
    name: str,
    input_shape: list[int],
    output_shape: list[int],
    uri: str,
    program: bytes,
) -> bytes:
    """Register `mid` unless it is already registered with `program` (ChainError if with another)."""
    if chain.call(registry.functions.isRegistered(mid)):
        registered = bytes(chain.call(registry.functions.programHashOf(mid)))
        if registered != program:
            raise ChainError(
                f"model 0x{mid.hex()} is already registered with another program 0x{registered.hex()} "
                f"(ours: 0x{program.hex()})"
            )
        return mid
    call = registry.functions.register(mid, name, input_shape, output_shape, uri, program)
    chain.transact(sender, call)
    return mid


def register_model(
    chain: Chain, deployment: Deployment, sender: LocalAccount, model: bytes, name: str, uri: str = ""
) -> bytes:
    """Register an mlkit model file under its model id (its blob id, vm-spec section 6) with the guest's
    program hash; returns the id. Idempotent: a model already registered with the same program returns
    its id without a transaction. Raises ModelFormatError for a malformed file."""
    mid = _model_id(model)
    registry = deployment.contracts(chain).registry
    input_shape, output_shape = _shapes(model)
    return _register(chain, registry, sender, mid, name, input_shape, output_shape, uri, program_hash())
