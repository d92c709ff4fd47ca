// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {FakeVM, FakeTrace} from "./FakeVM.sol";
import {MarketBooks} from "./MarketBooks.sol";
import {GamePlayer} from "../DisputeGame.t.sol";
import {DisputeGame} from "../../src/DisputeGame.sol";
import {InferenceMarket} from "../../src/InferenceMarket.sol";
import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {IInferenceConsumer} from "../../src/interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "../../src/interfaces/IInferenceMarket.sol";
import {IDisputeGame} from "../../src/interfaces/IDisputeGame.sol";
import {IMIPS} from "../../src/interfaces/IMIPS.sol";

/// @notice Registry + FakeVM-backed DisputeGame + market, with the synthetic honest trace of `GamePlayer` as
/// the registered program (its step-0 hash is the program hash).
abstract contract MarketFixture is GamePlayer {
    bytes32 internal constant MODEL = bytes32(uint256(0x02) << 248 | 0xabcdef);
    uint64 internal constant TIMEOUT = 1 hours;
    uint64 internal constant WINDOW = 1 days;
    uint64 internal constant REQUEST_TIMEOUT = 7 days;
    uint64 internal constant MAX_STEPS = 1e12;
    uint64 internal constant STEPS = 15_000_000;
    uint16 internal constant BURN_BPS = 5_000; // half of a losing prover's bond is burned

    FakeVM internal fakeVm;
    DisputeGame public game;
    ModelRegistry public registry;
    InferenceMarket public market;
    /// @dev The split games' node guest: the synthetic trace's step 0, so that bottom levels play it too.
    bytes32 internal execProgram;

    function _params() internal pure returns (IInferenceMarket.Params memory) {
        return IInferenceMarket.Params({
            baseFee: 0.001 ether,
            feePerInputByte: 1 gwei,
            callbackGasPrice: 10 gwei,
            proverBond: 1 ether,
            challengerBond: 0.5 ether,
            proverBondBurnBps: BURN_BPS,
            challengeWindow: WINDOW,
            requestTimeout: REQUEST_TIMEOUT,
            maxSteps: MAX_STEPS
        });
    }

    function _deployMarket() internal {
        vm.warp(1_700_000_000);
        exitStep = uint32(STEPS - 1_000);
        tamperAt = 7_000_000;
        fakeVm = new FakeVM();
        execProgram = honestHash(0);
        game = new DisputeGame(IMIPS(address(fakeVm)), 16, TIMEOUT);
        registry = new ModelRegistry();
        market = new InferenceMarket(registry, game, _params(), execProgram);
        registry.register(MODEL, "dcgan", _shape(100), _shape(3 * 64 * 64), "ipfs://model", honestHash(0));
    }

    function _shape(uint32 n) internal pure returns (uint32[] memory s) {
        s = new uint32[](1);
        s[0] = n;
    }

    /// @dev ETH the market must hold (`MarketBooks.owed`), with the balances of `accounts` (every account
    /// that can have one).
    function _owed(address[] memory accounts) internal view returns (uint256) {
        return MarketBooks.owed(market, game, accounts);
    }
}

/// @notice Records every callback.
contract RecordingConsumer is IInferenceConsumer {
    uint256 public calls;
    uint256 public lastRequestId;
    bytes public lastOutput;
    address public lastSender;

    function onInferenceResult(uint256 requestId, bytes calldata output) external {
        calls++;
        lastRequestId = requestId;
        lastOutput = output;
        lastSender = msg.sender;
    }
}

contract RevertingConsumer is IInferenceConsumer {
    function onInferenceResult(uint256, bytes calldata) external pure {
        revert("consumer says no");
    }
}

/// @notice Burns all the gas it gets.
contract GasBurningConsumer is IInferenceConsumer {
    uint256 public counter;

    function onInferenceResult(uint256, bytes calldata) external {
        while (true) {
            counter++;
        }
    }
}

/// @notice Reverts with as much return data as its gas allows (a returndata bomb).
contract ReturnBombConsumer {
    fallback() external {
        assembly {
            revert(0, 200000)
        }
    }
}

/// @notice Records how much gas it received.
contract GasProbeConsumer is IInferenceConsumer {
    uint256 public gasSeen;

    function onInferenceResult(uint256, bytes calldata) external {
        gasSeen = gasleft();
    }
}

/// @notice Cannot receive ETH: its withdrawals fail, which must not block anybody else.
contract RejectingReceiver {
    function call(address target, uint256 value, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        revert("no ETH");
    }
}
