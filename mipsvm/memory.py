"""Paged Merkle memory (spec section 3).

The 2^32-byte space is kept as 4 KiB pages, created on first write. The commitment is a binary keccak
tree over 32-byte leaves: 7 levels inside a page (128 leaves), 20 levels above the pages. Page roots and the
upper nodes are cached; `root()` rehashes only the pages written since the last call.
"""

from __future__ import annotations

from collections.abc import Iterable

from mipsvm.constants import LEAF_SIZE, MEM_TREE_DEPTH, PAGE_BITS, PAGE_SIZE
from mipsvm.hashing import keccak256

PAGE_LEVELS = PAGE_BITS - 5  # 7 levels from a leaf to its page root
UPPER_LEVELS = MEM_TREE_DEPTH - PAGE_LEVELS  # 20 levels from a page root to the memory root


def _zero_hashes() -> list[bytes]:
    z = [bytes(32)]
    for _ in range(MEM_TREE_DEPTH):
        z.append(keccak256(z[-1] + z[-1]))
    return z


ZERO_HASHES = _zero_hashes()  # ZERO_HASHES[h]: the root of an all-zero subtree of height h
_ZERO_PAGE = bytes(PAGE_SIZE)


class ProofError(ValueError):
    """A memory proof that does not match its root."""


def page_levels(page: bytes) -> list[list[bytes]]:
    """All levels of a page's subtree, leaves first; the last level holds the page root."""
    level = [page[i : i + LEAF_SIZE] for i in range(0, PAGE_SIZE, LEAF_SIZE)]
    levels = [level]
    for _ in range(PAGE_LEVELS):
        level = [keccak256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def page_root(page: bytes) -> bytes:
    if page == _ZERO_PAGE:
        return ZERO_HASHES[PAGE_LEVELS]
    return page_levels(page)[-1][0]


class Memory:
    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self._page_roots: dict[int, bytes] = {}
        # _upper[h][i]: node at height PAGE_LEVELS + h, index i (h = 0 are the page roots' parents' children).
        self._upper: list[dict[int, bytes]] = [{} for _ in range(UPPER_LEVELS + 1)]
        self._dirty: set[int] = set()

    # -- bytes ---------------------------------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        out = bytearray()
        while n > 0:
            p, off = addr >> PAGE_BITS, addr & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - off)
            page = self.pages.get(p)
            out += page[off : off + take] if page is not None else bytes(take)
            addr, n = (addr + take) & 0xFFFFFFFF, n - take
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            p, off = addr >> PAGE_BITS, addr & (PAGE_SIZE - 1)
            take = min(len(data) - pos, PAGE_SIZE - off)
            page = self.pages.get(p)
            if page is None:
                page = self.pages[p] = bytearray(PAGE_SIZE)
            page[off : off + take] = data[pos : pos + take]
            self._dirty.add(p)
            addr, pos = (addr + take) & 0xFFFFFFFF, pos + take

    def read_u32(self, addr: int) -> int:
        """The aligned word at `addr` (the caller guarantees alignment)."""
        page = self.pages.get(addr >> PAGE_BITS)
        if page is None:
            return 0
        off = addr & (PAGE_SIZE - 1)
        return int.from_bytes(page[off : off + 4], "big")

    def write_u32(self, addr: int, value: int) -> None:
        p = addr >> PAGE_BITS
        page = self.pages.get(p)
        if page is None:
            page = self.pages[p] = bytearray(PAGE_SIZE)
        off = addr & (PAGE_SIZE - 1)
        page[off : off + 4] = value.to_bytes(4, "big")
        self._dirty.add(p)

    def set_page(self, index: int, data: bytes) -> None:
        """Replace a whole page (the fast executor copies written pages back this way)."""
        self.pages[index] = bytearray(data)
        self._dirty.add(index)

    def mark_dirty(self, indices: Iterable[int]) -> None:
        self._dirty.update(indices)

    # -- Merkle --------------------------------------------------------------------------------------------
    def _node(self, h: int, i: int) -> bytes:
        """Node at height PAGE_LEVELS + h (h = 0: page roots)."""
        if h == 0:
            return self._page_roots.get(i, ZERO_HASHES[PAGE_LEVELS])
        return self._upper[h].get(i, ZERO_HASHES[PAGE_LEVELS + h])

    def root(self) -> bytes:
        touched = set()
        for p in self._dirty:
            page = self.pages.get(p)
            self._page_roots[p] = page_root(bytes(page)) if page is not None else ZERO_HASHES[PAGE_LEVELS]
            touched.add(p)
        self._dirty.clear()
        for h in range(1, UPPER_LEVELS + 1):
            parents = {i >> 1 for i in touched}
            level = self._upper[h]
            for i in parents:
                level[i] = keccak256(self._node(h - 1, 2 * i) + self._node(h - 1, 2 * i + 1))
            touched = parents
        return self._node(UPPER_LEVELS, 0)

    def proof(self, addr: int) -> bytes:
        """The 896-byte proof of the leaf holding `addr`: the leaf, then 27 siblings from the bottom up."""
        self.root()
        leaf_index = (addr & 0xFFFFFFFF) >> 5
        p = leaf_index >> PAGE_LEVELS
        levels = page_levels(bytes(self.pages.get(p, _ZERO_PAGE)))
        out = [levels[0][leaf_index & 127]]
        i = leaf_index & 127
        for h in range(PAGE_LEVELS):
            out.append(levels[h][i ^ 1])
            i >>= 1
        i = p
        for h in range(UPPER_LEVELS):
            out.append(self._node(h, i ^ 1))
            i >>= 1
        return b"".join(out)

    def copy(self) -> Memory:
        m = Memory()
        m.pages = {p: bytearray(b) for p, b in self.pages.items()}
        m._page_roots = dict(self._page_roots)
        m._upper = [dict(level) for level in self._upper]
        m._dirty = set(self._dirty)
        return m


def proof_leaf(proof: bytes) -> bytes:
    return proof[:32]


def proof_root(addr: int, proof: bytes, leaf: bytes | None = None) -> bytes:
    """The root that `proof` (with its leaf replaced by `leaf`, if given) proves for the leaf of `addr`."""
    if len(proof) != (MEM_TREE_DEPTH + 1) * 32:
        raise ProofError(f"a memory proof is {(MEM_TREE_DEPTH + 1) * 32} bytes, got {len(proof)}")
    node = proof[:32] if leaf is None else leaf
    index = (addr & 0xFFFFFFFF) >> 5
    for h in range(MEM_TREE_DEPTH):
        sibling = proof[32 * (h + 1) : 32 * (h + 2)]
        node = keccak256(sibling + node) if (index >> h) & 1 else keccak256(node + sibling)
    return node
