// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "./interfaces/IInferenceMarket.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title GanNFT
/// @notice Example consumer of the inference market: `mintRequest(seed)` asks for a DCGAN generation from a
/// latent vector derived from the seed; when the verified result finalizes the market calls back and the
/// token is minted to the requester, carrying `keccak256(output)` (the generated image bytes are in the
/// market's `ResultPosted` event).
/// @dev The token id is the market's request id. The market's callback gets `CALLBACK_GAS_LIMIT` gas; the
/// mint uses `_mint`, not `_safeMint`, so a receiver hook cannot make the callback fail.
contract GanNFT is ERC721, IInferenceConsumer {
    using Strings for uint256;

    /// @notice Latent dimension of the DCGAN generator.
    uint256 public constant LATENT_DIM = 100;
    /// @notice Bytes before the latent values in the input payload.
    uint256 public constant LATENT_HEADER = 28;
    /// @notice Gas the market gives `onInferenceResult` (a mint plus two stores, with margin).
    uint64 public constant CALLBACK_GAS_LIMIT = 200_000;

    IInferenceMarket public immutable market;
    bytes32 public immutable modelId;

    struct Pending {
        address minter;
        uint256 seed;
    }

    /// @notice Requests waiting for their result, by request id.
    mapping(uint256 requestId => Pending) public pending;
    /// @notice keccak256 of the generated output, by token id.
    mapping(uint256 tokenId => bytes32) public outputHashOf;
    /// @notice The seed a token was generated from.
    mapping(uint256 tokenId => uint256) public seedOf;

    event MintRequested(uint256 indexed requestId, address indexed minter, uint256 seed);
    event GanMinted(uint256 indexed tokenId, address indexed minter, bytes32 outputHash);
    event MintCancelled(uint256 indexed requestId, address indexed minter, uint256 refund);

    error NotMarket(address caller);
    error UnknownRequest(uint256 requestId);
    error NotMinter(address caller);
    error ProgramHashMismatch(bytes32 expected, bytes32 registered);
    error RefundFailed();

    /// @param market_ the inference market
    /// @param registry the market's model registry
    /// @param modelId_ the DCGAN generator's model id (blob id of the model file)
    /// @param expectedProgramHash the guest program this contract trusts: registrations are first come, so
    /// the constructor checks the model is registered with this program
    constructor(IInferenceMarket market_, IModelRegistry registry, bytes32 modelId_, bytes32 expectedProgramHash)
        ERC721("rollml GAN", "RGAN")
    {
        bytes32 registered = registry.programHashOf(modelId_);
        if (registered != expectedProgramHash) revert ProgramHashMismatch(expectedProgramHash, registered);
        market = market_;
        modelId = modelId_;
    }

    /// @notice The fee `mintRequest` must be sent (at least).
    function mintFee() external view returns (uint256) {
        return market.estimateFee(modelId, LATENT_HEADER + LATENT_DIM * 4, CALLBACK_GAS_LIMIT);
    }

    /// @notice Requests a generation from `seed`; the token is minted to the caller when the result finalizes.
    /// @dev All of `msg.value` is the market fee (see `mintFee`).
    function mintRequest(uint256 seed) external payable returns (uint256 requestId) {
        requestId = market.requestInference{value: msg.value}(
            modelId, latentInput(seed), address(this), CALLBACK_GAS_LIMIT
        );
        pending[requestId] = Pending({minter: msg.sender, seed: seed});
        emit MintRequested(requestId, msg.sender, seed);
    }

    /// @inheritdoc IInferenceConsumer
    function onInferenceResult(uint256 requestId, bytes calldata output) external {
        if (msg.sender != address(market)) revert NotMarket(msg.sender);
        Pending memory p = pending[requestId];
        if (p.minter == address(0)) revert UnknownRequest(requestId);
        delete pending[requestId];

        bytes32 outputHash = keccak256(output);
        outputHashOf[requestId] = outputHash;
        seedOf[requestId] = p.seed;
        _mint(p.minter, requestId);
        emit GanMinted(requestId, p.minter, outputHash);
    }

    /// @notice Takes back the fee of a request no prover served within the market's request timeout.
    /// @dev The market credits this contract; it withdraws and forwards exactly the request's fee.
    function cancelMint(uint256 requestId) external {
        Pending memory p = pending[requestId];
        if (p.minter == address(0)) revert UnknownRequest(requestId);
        if (msg.sender != p.minter) revert NotMinter(msg.sender);
        delete pending[requestId];

        uint256 refund = market.getRequest(requestId).fee;
        market.cancelRequest(requestId);
        market.withdraw();
        emit MintCancelled(requestId, p.minter, refund);
        (bool ok,) = p.minter.call{value: refund}("");
        if (!ok) revert RefundFailed();
    }

    /// @dev Only the market's withdrawals (refunds of cancelled mints) are accepted.
    receive() external payable {
        if (msg.sender != address(market)) revert NotMarket(msg.sender);
    }

    /// @notice The input payload of the generation for `seed` (docs/model-format.md section 2): one f32
    /// tensor of shape [1, 100, 1, 1] (the DCGAN latent z, NCHW), big-endian:
    /// "RMLD" ++ u32 1 ++ (u8 1, u8 4, u16 0) ++ u32 dims 1, 100, 1, 1 ++ 100 f32 values (428 bytes).
    /// @dev z_i is approximately N(0, 1) (Irwin-Hall of four uniforms): with w the 64-bit word
    /// [8(i%4), 8(i%4)+8) of keccak256(abi.encode(seed, i / 4)) and u1..u4 its four 16-bit halves (high
    /// first), s = u1 + u2 + u3 + u4 - 131070 and z_i = 7 s / 2^18 (exact in binary32; std 1.01).
    function latentInput(uint256 seed) public pure returns (bytes memory input) {
        input = bytes.concat(
            "RMLD", bytes4(uint32(1)), bytes4(0x01040000), bytes4(uint32(1)), bytes4(uint32(LATENT_DIM)),
            bytes4(uint32(1)), bytes4(uint32(1)), new bytes(LATENT_DIM * 4)
        );
        bytes32 r;
        for (uint256 i = 0; i < LATENT_DIM; i++) {
            if (i % 4 == 0) r = keccak256(abi.encode(seed, i / 4));
            uint256 w = uint256(r) >> (192 - 64 * (i % 4));
            int256 sum = int256((w & 0xFFFF) + ((w >> 16) & 0xFFFF) + ((w >> 32) & 0xFFFF) + ((w >> 48) & 0xFFFF));
            uint32 bits = _scaledToF32((sum - 131070) * 7, 18);
            uint256 at = LATENT_HEADER + 4 * i;
            input[at] = bytes1(uint8(bits >> 24));
            input[at + 1] = bytes1(uint8(bits >> 16));
            input[at + 2] = bytes1(uint8(bits >> 8));
            input[at + 3] = bytes1(uint8(bits));
        }
    }

    /// @dev binary32 bits of v / 2^shift, exact for |v| < 2^24.
    function _scaledToF32(int256 v, uint256 shift) internal pure returns (uint32) {
        if (v == 0) return 0;
        uint256 sign = v < 0 ? 1 : 0;
        uint256 m = uint256(v < 0 ? -v : v);
        uint256 e = 0;
        while (m >> (e + 1) != 0) e++;
        uint256 mantissa = (m << (23 - e)) & 0x7FFFFF;
        return uint32((sign << 31) | ((127 + e - shift) << 23) | mantissa);
    }

    /// @notice A data-URI JSON document with the seed, the model id and the output hash.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return string.concat(
            "data:application/json;utf8,{\"name\":\"rollml GAN #",
            tokenId.toString(),
            "\",\"description\":\"DCGAN output verified by rollml fraud proofs\",\"seed\":\"",
            seedOf[tokenId].toString(),
            "\",\"model_id\":\"",
            uint256(modelId).toHexString(32),
            "\",\"output_hash\":\"",
            uint256(outputHashOf[tokenId]).toHexString(32),
            "\"}"
        );
    }
}
