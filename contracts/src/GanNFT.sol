// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IInferenceConsumer} from "./interfaces/IInferenceConsumer.sol";
import {IInferenceMarket} from "./interfaces/IInferenceMarket.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";

/// @title GanNFT
/// @notice Example consumer of the inference market: `mintRequest(seed)` asks for a DCGAN generation from a
/// latent vector derived from the seed, and `blend(tokenA, tokenB, weight)` from the interpolation of two
/// tokens' latent vectors (the caller owns both); when the verified result finalizes the market calls back
/// and the token is minted to the requester, carrying `keccak256(output)` (the generated image bytes are in
/// the market's `ResultPosted` event).
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
    /// @notice `blend` weights are in units of 1 / WEIGHT_ONE (of token B's latent); 0 < weight < WEIGHT_ONE.
    uint256 public constant WEIGHT_ONE = 10_000;

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
    /// @notice The seed a token was generated from (0 for a blend).
    mapping(uint256 tokenId => uint256) public seedOf;

    struct Blend {
        uint256 parentA;
        uint256 parentB;
        uint256 weight; // 0: not a blend
    }

    /// @notice The parents and weight of a blended token (or of a pending blend request), by token id.
    mapping(uint256 tokenId => Blend) public blendOf;
    /// @dev The scaled latent (see `seedLatent`) of each blended token or pending blend request: a blend of
    /// blends cannot be recomputed from seeds at a bounded cost, so it is stored (10 slots).
    mapping(uint256 tokenId => int24[LATENT_DIM]) internal _blendLatent;

    event MintRequested(uint256 indexed requestId, address indexed minter, uint256 seed);
    event GanMinted(uint256 indexed tokenId, address indexed minter, bytes32 outputHash);
    event MintCancelled(uint256 indexed requestId, address indexed minter, uint256 refund);
    event BlendRequested(
        uint256 indexed requestId, address indexed minter, uint256 parentA, uint256 parentB, uint256 weight
    );

    error NotMarket(address caller);
    error UnknownRequest(uint256 requestId);
    error NotMinter(address caller);
    error ProgramHashMismatch(bytes32 expected, bytes32 registered);
    error RefundFailed();
    error NotOwner(uint256 tokenId, address caller);
    error SameToken(uint256 tokenId);
    error WeightOutOfRange(uint256 weight);

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

    /// @notice The fee `mintRequest` and `blend` must be sent (at least).
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

    /// @notice Requests a child of `tokenA` and `tokenB` (both owned by the caller): the generation from
    /// `blendLatent(latentOf(tokenA), latentOf(tokenB), weight)`, minted to the caller when the result
    /// finalizes, like a `mintRequest`. `weight` is token B's share in units of 1 / WEIGHT_ONE, strictly
    /// between 0 and WEIGHT_ONE (the ends would copy a parent).
    /// @dev All of `msg.value` is the market fee (see `mintFee`). Unknown tokens revert with the ERC-721
    /// `ERC721NonexistentToken`.
    function blend(uint256 tokenA, uint256 tokenB, uint256 weight) external payable returns (uint256 requestId) {
        if (weight == 0 || weight >= WEIGHT_ONE) revert WeightOutOfRange(weight);
        if (tokenA == tokenB) revert SameToken(tokenA);
        if (ownerOf(tokenA) != msg.sender) revert NotOwner(tokenA, msg.sender);
        if (ownerOf(tokenB) != msg.sender) revert NotOwner(tokenB, msg.sender);
        int24[LATENT_DIM] memory child = blendLatent(latentOf(tokenA), latentOf(tokenB), weight);
        requestId = market.requestInference{value: msg.value}(
            modelId, latentPayload(child), address(this), CALLBACK_GAS_LIMIT
        );
        pending[requestId] = Pending({minter: msg.sender, seed: 0});
        blendOf[requestId] = Blend({parentA: tokenA, parentB: tokenB, weight: weight});
        _blendLatent[requestId] = child;
        emit BlendRequested(requestId, msg.sender, tokenA, tokenB, weight);
    }

    /// @notice The input payload `blend(tokenA, tokenB, weight)` would request (same checks on the weight;
    /// ownership is not checked).
    function blendInput(uint256 tokenA, uint256 tokenB, uint256 weight) external view returns (bytes memory) {
        if (weight == 0 || weight >= WEIGHT_ONE) revert WeightOutOfRange(weight);
        return latentPayload(blendLatent(latentOf(tokenA), latentOf(tokenB), weight));
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
        if (blendOf[requestId].weight != 0) {
            delete blendOf[requestId];
            delete _blendLatent[requestId];
        }

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

    /// @notice The input payload of the generation for `seed`: `latentPayload(seedLatent(seed))`.
    function latentInput(uint256 seed) public pure returns (bytes memory) {
        return latentPayload(seedLatent(seed));
    }

    /// @notice The scaled latent of `seed`: t_i = 7 s_i, where z_i = t_i / 2^18 is approximately N(0, 1)
    /// (Irwin-Hall of four uniforms): with w the 64-bit word [8(i%4), 8(i%4)+8) of
    /// keccak256(abi.encode(seed, i / 4)) and u1..u4 its four 16-bit parts (high first),
    /// s_i = u1 + u2 + u3 + u4 - 131070 (so |t_i| <= 917490 < 2^20; std of z 1.01).
    function seedLatent(uint256 seed) public pure returns (int24[LATENT_DIM] memory t) {
        bytes32 r;
        for (uint256 i = 0; i < LATENT_DIM; i++) {
            if (i % 4 == 0) r = keccak256(abi.encode(seed, i / 4));
            uint256 w = uint256(r) >> (192 - 64 * (i % 4));
            int256 sum = int256((w & 0xFFFF) + ((w >> 16) & 0xFFFF) + ((w >> 32) & 0xFFFF) + ((w >> 48) & 0xFFFF));
            t[i] = int24((sum - 131070) * 7);
        }
    }

    /// @notice The interpolation of two scaled latents: c_i = ((WEIGHT_ONE - weight) a_i + weight b_i) /
    /// WEIGHT_ONE, the integer division truncating toward zero (Solidity's `/` on signed integers). For
    /// 0 <= weight <= WEIGHT_ONE, |c_i| <= max(|a_i|, |b_i|) < 2^20, so every z_i = c_i / 2^18 is exact in
    /// binary32, as the parents' are; weight 0 gives a, WEIGHT_ONE gives b.
    function blendLatent(int24[LATENT_DIM] memory a, int24[LATENT_DIM] memory b, uint256 weight)
        public
        pure
        returns (int24[LATENT_DIM] memory c)
    {
        if (weight > WEIGHT_ONE) revert WeightOutOfRange(weight);
        int256 wb = int256(weight);
        int256 wa = int256(WEIGHT_ONE) - wb;
        for (uint256 i = 0; i < LATENT_DIM; i++) {
            c[i] = int24((wa * a[i] + wb * b[i]) / int256(WEIGHT_ONE));
        }
    }

    /// @notice The scaled latent of a token: its seed's (`seedLatent`), or the stored blend of its parents.
    function latentOf(uint256 tokenId) public view returns (int24[LATENT_DIM] memory) {
        _requireOwned(tokenId);
        if (blendOf[tokenId].weight != 0) return _blendLatent[tokenId];
        return seedLatent(seedOf[tokenId]);
    }

    /// @notice The input payload (docs/model-format.md section 2) of a scaled latent t: one f32 tensor of
    /// shape [1, 100, 1, 1] (the DCGAN latent z, NCHW) with z_i = t_i / 2^18, big-endian:
    /// "RMLD" ++ u32 1 ++ (u8 1, u8 4, u16 0) ++ u32 dims 1, 100, 1, 1 ++ 100 f32 values (428 bytes).
    function latentPayload(int24[LATENT_DIM] memory t) public pure returns (bytes memory input) {
        input = bytes.concat(
            "RMLD", bytes4(uint32(1)), bytes4(0x01040000), bytes4(uint32(1)), bytes4(uint32(LATENT_DIM)),
            bytes4(uint32(1)), bytes4(uint32(1)), new bytes(LATENT_DIM * 4)
        );
        for (uint256 i = 0; i < LATENT_DIM; i++) {
            uint32 bits = _scaledToF32(t[i], 18);
            uint256 pos = LATENT_HEADER + 4 * i;
            input[pos] = bytes1(uint8(bits >> 24));
            input[pos + 1] = bytes1(uint8(bits >> 16));
            input[pos + 2] = bytes1(uint8(bits >> 8));
            input[pos + 3] = bytes1(uint8(bits));
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

    /// @notice A data-URI JSON document with the seed (or, for a blend, the parents and the weight), the model
    /// id and the output hash.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        return string.concat(
            "data:application/json;utf8,{\"name\":\"rollml GAN #",
            tokenId.toString(),
            "\",\"description\":\"DCGAN output verified by rollml fraud proofs\",",
            _origin(tokenId),
            ",\"model_id\":\"",
            uint256(modelId).toHexString(32),
            "\",\"output_hash\":\"",
            uint256(outputHashOf[tokenId]).toHexString(32),
            "\"}"
        );
    }

    /// @dev `"seed":"S"`, or for a blend `"parents":["A","B"],"weight":"W"`.
    function _origin(uint256 tokenId) internal view returns (string memory) {
        Blend memory b = blendOf[tokenId];
        if (b.weight == 0) return string.concat("\"seed\":\"", seedOf[tokenId].toString(), "\"");
        return string.concat(
            "\"parents\":[\"",
            b.parentA.toString(),
            "\",\"",
            b.parentB.toString(),
            "\"],\"weight\":\"",
            b.weight.toString(),
            "\""
        );
    }
}
