// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IInferenceConsumer
/// @notice Implemented by a dApp contract that asks the `InferenceMarket` for an inference.
/// @dev The market calls `onInferenceResult` once, when the request's result finalizes, with at most the
/// `callbackGasLimit` the request paid for. A revert (or running out of gas) does not undo the finalization:
/// the market records it in a `CallbackFailed` event and the output stays readable from the
/// `ResultPosted` event. Implementations must check `msg.sender` is the market they trust.
interface IInferenceConsumer {
    /// @param requestId the id `requestInference` returned
    /// @param output the output bytes; `keccak256(output)` is the hash the VM run proved (vm-spec section 9)
    function onInferenceResult(uint256 requestId, bytes calldata output) external;
}
