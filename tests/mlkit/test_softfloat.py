"""Bit-exactness tests for the integer-only float implementation.

mlkit/csrc/softfloat.c (IEEE-754 binary32 in integer C) and mlkit/csrc/mathf.c
(exp, log, tanh, ... built on it) are compiled for the host with ``cc`` into a
temporary directory, together with tests/support/softfloat_harness.c, and loaded with
ctypes.  Every result is compared with numpy float32 arithmetic, i.e. the host
FPU (SSE: IEEE round-to-nearest-even, subnormals on):

* all non-NaN results must have exactly the same bits;
* where IEEE gives a NaN, softfloat must give the canonical quiet NaN
  0x7FC00000 (numpy/x86 propagate NaN payloads, softfloat does not).

The math functions are checked against float64 numpy references, with error
bounds in ulps that match the table at the top of mathf.c.

Operand counts scale with the environment variable ROLLML_FUZZ_SCALE (default
1: one million operand pairs per binary operation, a few seconds in total;
``make fuzz`` uses a larger scale).  All random generators use fixed seeds.

The fused dot-product kernel (sf_dot, sf_mac: the hot loop of mlkit's models;
sf_dot_pairs_run and sf_dot_dense_run on x unpacked once, sf_dot_taps_run over
a convolution's taps, all as runs of outputs) is checked against the separate operations it replaces,
acc = sf_add(acc, sf_mul(x, w)) term by term: single terms on special values
and on millions of random triples aimed at its fast path's edges, random runs
of dot products of every loop shape in C (sf_dot_fuzz in the harness),
hand-made sequences through overflow, cancellation, subnormals, infinities and
NaNs, and hypothesis.

If the MIPS cross compiler (mips-linux-gnu-gcc) is installed, the freestanding
soft-float MIPS build is checked too (no FPU instructions, no helper calls,
links without libgcc), and if qemu-mips is installed as well, a digest of a
mixed workload computed on MIPS through the compiler's ``float`` operators is
compared with the same digest computed on the host.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.env import ROOT, scaled

CSRC = ROOT / "mlkit" / "csrc"
SOURCES = [CSRC / "softfloat.c", CSRC / "mathf.c"]
HARNESS = ROOT / "tests" / "support" / "softfloat_harness.c"

N_PAIRS = scaled(1_000_000)  # operand pairs per binary operation
N_MATH = scaled(400_000)  # random inputs per math function (plus sweeps)
CHUNK = 1 << 21  # operands per batch, to bound memory at large scales

QNAN = 0x7FC00000
U32 = np.uint32
F32 = np.float32
F64 = np.float64

# Operation codes of sf_batch() in softfloat_harness.c.
OP = {
    "add": 0,
    "sub": 1,
    "mul": 2,
    "div": 3,
    "sqrt": 4,
    "fma": 5,
    "eq": 6,
    "lt": 7,
    "le": 8,
    "unord": 9,
    "from_i32": 10,
    "from_u32": 11,
    "to_i32": 12,
    "to_u32": 13,
    "neg": 14,
    "abs": 15,
    "ldexp": 16,
    "mac": 17,  # c + a*b, by sf_mac
    "exp": 20,
    "log": 21,
    "tanh": 22,
    "sigmoid": 23,
    "gelu": 24,
    "rsqrt": 25,
}

MIPS_FLAGS = [
    "-O2",
    "-march=mips32",
    "-msoft-float",
    "-G0",
    "-fno-pic",
    "-mno-abicalls",
    "-ffreestanding",
    "-nostdlib",
]


# ---------------------------------------------------------------------------
# Building and calling the C code
# ---------------------------------------------------------------------------


def _host_cc() -> str:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    return cc


class SoftFloatLib:
    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.sf_batch.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_size_t]
        self.lib.sf_batch.restype = ctypes.c_int
        self.lib.sf_digest.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
        self.lib.sf_digest.restype = ctypes.c_uint32
        self.lib.sf_unpack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32]
        self.lib.sf_taps.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.sf_dot_taps_run.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.lib.sf_dot_taps_run.argtypes += [ctypes.c_uint32, ctypes.c_void_p]
        for name in ("sf_dot_pairs_run", "sf_dot_dense_run"):
            getattr(self.lib, name).argtypes = [ctypes.c_void_p, ctypes.c_uint32] + [ctypes.c_void_p] * 4
        for name in ("sf_dot", "sf_dot_ref"):
            fn = getattr(self.lib, name)
            fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = ctypes.c_uint32
        self.lib.sf_dot_fuzz.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]
        self.lib.sf_dot_fuzz.restype = ctypes.c_uint32

    def batch(self, op: str, a, b=None, c=None) -> np.ndarray:
        """Run operation `op` elementwise on uint32 bit-pattern arrays."""
        args = [None if x is None else np.ascontiguousarray(np.asarray(x).view(U32)) for x in (a, b, c)]
        n = len(args[0])
        for x in args[1:]:
            assert x is None or len(x) == n
        out = np.empty(n, dtype=U32)
        ptrs = [None if x is None else x.ctypes.data for x in args]
        rc = self.lib.sf_batch(OP[op], *ptrs, out.ctypes.data, n)
        assert rc == 0, op
        return out

    def f(self, op: str, *xs) -> np.ndarray:
        """Like batch() but takes and returns float32 arrays."""
        return self.batch(op, *[np.asarray(x, dtype=F32).view(U32) for x in xs]).view(F32)

    def dot(self, acc: int, x, w, loops, base: int = 0, ref: bool = False, form: str = "floats") -> int:
        """sf_dot (or sf_dot_ref) of bit-pattern arrays x, w from index `base` of both, loops = ((n0, dx0,
        dw0), (n1, dx1, dw1), (n2, dx2, dw2)); or the same dot product in another form of the kernel: x
        unpacked by sf_unpack ("pairs": sf_dot_pairs_run, "dense": sf_dot_dense_run), or over the taps of
        the loops ("taps": sf_taps and sf_dot_taps_run), each as a run of one output."""
        xa = np.ascontiguousarray(np.asarray(x).view(U32))
        wa = np.ascontiguousarray(np.asarray(w).view(U32))
        spec = np.array(loops, dtype=np.int32).reshape(3, 3)  # sf_loop: uint32 n, int32 dx, dw
        if form == "floats":
            fn = self.lib.sf_dot_ref if ref else self.lib.sf_dot
            return int(fn(acc, xa.ctypes.data + 4 * base, wa.ctypes.data + 4 * base, spec.ctypes.data))
        xp = np.zeros(2 * len(xa), dtype=U32)  # sf_pair: uint32 sig, ew
        self.lib.sf_unpack(xp.ctypes.data, xa.ctypes.data, len(xa))
        out = np.zeros(1, dtype=U32)
        run = np.array([1, 1, 0, 0], dtype=np.int32)  # sf_run: count, out, x, w
        x_at, w_at = xp.ctypes.data + 8 * base, wa.ctypes.data + 4 * base
        if form == "taps":
            n = int(np.prod([n for n, _, _ in loops]))
            taps = np.zeros(3 * max(n, 1), dtype=U32)  # sf_tap: uint32 sig, ew; int32 x
            self.lib.sf_taps(taps.ctypes.data, w_at, spec.ctypes.data)
            self.lib.sf_dot_taps_run(out.ctypes.data, acc, x_at, taps.ctypes.data, n, run.ctypes.data)
        else:
            fn = {"pairs": self.lib.sf_dot_pairs_run, "dense": self.lib.sf_dot_dense_run}[form]
            fn(out.ctypes.data, acc, x_at, w_at, spec.ctypes.data, run.ctypes.data)
        return int(out[0])


UNPACKED_FORMS = ("pairs", "dense", "taps")


@pytest.fixture(scope="session")
def sf(tmp_path_factory) -> SoftFloatLib:
    out = tmp_path_factory.mktemp("softfloat") / "libsoftfloat_test.so"
    cmd = [
        _host_cc(),
        "-O2",
        "-std=c99",
        "-shared",
        "-fPIC",
        f"-I{CSRC}",
        *map(str, SOURCES),
        str(HARNESS),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return SoftFloatLib(out)


@pytest.fixture(scope="session")
def sf_abi(tmp_path_factory):
    """softfloat.c built with -DSOFTFLOAT_ABI for the host, to call the libgcc
    entry points directly (host float arguments, but the same code)."""
    out = tmp_path_factory.mktemp("softfloat_abi") / "libsoftfloat_abi.so"
    cmd = [
        _host_cc(),
        "-O2",
        "-std=c99",
        "-shared",
        "-fPIC",
        "-DSOFTFLOAT_ABI",
        str(CSRC / "softfloat.c"),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(out))
    cf, ci, cu = ctypes.c_float, ctypes.c_int, ctypes.c_uint
    sigs = {
        "__addsf3": ([cf, cf], cf),
        "__subsf3": ([cf, cf], cf),
        "__mulsf3": ([cf, cf], cf),
        "__divsf3": ([cf, cf], cf),
        "__negsf2": ([cf], cf),
        "__eqsf2": ([cf, cf], ci),
        "__nesf2": ([cf, cf], ci),
        "__ltsf2": ([cf, cf], ci),
        "__lesf2": ([cf, cf], ci),
        "__gtsf2": ([cf, cf], ci),
        "__gesf2": ([cf, cf], ci),
        "__unordsf2": ([cf, cf], ci),
        "__floatsisf": ([ci], cf),
        "__floatunsisf": ([cu], cf),
        "__fixsfsi": ([cf], ci),
        "__fixunssfsi": ([cf], cu),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def bits(x) -> np.ndarray:
    return np.asarray(x, dtype=F32).view(U32)


def b2f(u) -> np.ndarray:
    return np.asarray(u, dtype=U32).view(F32)


def fbits(x: float) -> int:
    return int(np.float32(x).view(U32))


def assert_same_bits(got: np.ndarray, ref: np.ndarray, what: str, *operands) -> None:
    """got (softfloat bits) must equal ref (IEEE float32 results) bit for bit,
    except that where ref is NaN, got must be the canonical NaN."""
    got = np.asarray(got).view(U32)
    ref = np.asarray(ref, dtype=F32)
    ref_nan = np.isnan(ref)
    bad = np.where(ref_nan, got != QNAN, got != ref.view(U32))
    if bad.any():
        idx = np.flatnonzero(bad)[:8]
        lines = []
        for i in idx:
            ops = ", ".join(f"{int(np.asarray(o).view(U32)[i]):#010x}" for o in operands)
            lines.append(f"  op({ops}) = {int(got[i]):#010x}, expected {int(ref.view(U32)[i]):#010x}")
        pytest.fail(f"{what}: {int(bad.sum())} of {len(got)} results differ:\n" + "\n".join(lines))


def rng_for(name: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([sum(name.encode()) * 7919 + len(name), 20240601, salt])


def rand_bits(rng, n) -> np.ndarray:
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(U32)


def rand_interesting(rng, n) -> np.ndarray:
    """Random floats concentrated on the hard cases: every exponent range with
    extra weight on subnormals, the smallest normals, near-overflow and around
    1, and significands that are short (exact results, rounding ties), runs of
    ones (carries), tiny (small subnormals) or zero (powers of two)."""
    sign = rng.integers(0, 2, n, dtype=U32) << U32(31)
    which = rng.integers(0, 8, n)
    exp = rng.integers(0, 256, n).astype(U32)
    exp = np.where(which == 0, 0, exp)
    exp = np.where(which == 1, rng.integers(1, 4, n), exp)
    exp = np.where(which == 2, rng.integers(250, 255, n), exp)
    exp = np.where((which == 3) | (which == 4), rng.integers(100, 155, n), exp).astype(U32)
    frac = rand_bits(rng, n) & U32(0x7FFFFF)
    keep = rng.integers(0, 24, n).astype(U32)  # number of top fraction bits kept
    short = frac & ~((U32(1) << (U32(23) - keep)) - U32(1)) & U32(0x7FFFFF)
    fw = rng.integers(0, 6, n)
    frac = np.where(fw == 1, short, frac)
    frac = np.where(fw == 2, U32(0x7FFFFF) ^ short, frac)
    frac = np.where(fw == 3, frac >> (U32(23) - keep), frac)
    frac = np.where(fw == 4, 0, frac)
    return (sign | (exp << U32(23)) | frac).astype(U32)


def with_exponent(rng, like: np.ndarray, exp) -> np.ndarray:
    """Interesting floats with the given exponent fields (clipped to 0..255)."""
    x = rand_interesting(rng, len(like))
    exp = np.clip(np.asarray(exp, dtype=np.int64), 0, 255).astype(U32)
    return (x & U32(0x807FFFFF)) | (exp << U32(23))


def field_exp(x) -> np.ndarray:
    return ((np.asarray(x).view(U32) >> U32(23)) & U32(0xFF)).astype(np.int64)


def chunks(total: int):
    """Split `total` operands into batches: yields (batch number, size)."""
    for i, start in enumerate(range(0, total, CHUNK)):
        yield i, min(CHUNK, total - start)


def mix(rng, n, makers) -> tuple[np.ndarray, ...]:
    """Concatenate operand tuples from several generators, n in total."""
    parts = [m(rng, n // len(makers) + 1) for m in makers]
    cols = [np.concatenate([p[i] for p in parts])[:n] for i in range(len(parts[0]))]
    return tuple(cols)


# Explicit special values: zeros, subnormal extremes, normal extremes, one and
# its neighbours, integers at the 2^24 edge, infinities and assorted NaNs.
SPECIALS = np.array(
    [
        0x00000000,
        0x80000000,  # +-0
        0x00000001,
        0x80000001,  # +-min subnormal
        0x00000002,
        0x00000003,
        0x00400000,
        0x80400001,
        0x007FFFFF,
        0x807FFFFF,  # +-max subnormal
        0x00800000,
        0x80800000,  # +-min normal
        0x00800001,
        0x00FFFFFF,
        0x01000000,
        0x3F800000,
        0xBF800000,
        0x3F800001,
        0x3F7FFFFF,
        0x3F000000,
        0x40000000,
        0x40400000,
        0xC0A00000,
        0x3FC00000,
        0x3EAAAAAB,
        0x4B800000,
        0x4B800001,
        0x4B7FFFFF,
        0x33800000,
        0x33000000,
        0x34000000,
        0x0C000000,
        0x72000000,
        0x7F000000,
        0x7F7FFFFF,
        0xFF7FFFFF,
        0x7F7FFFFE,  # near overflow
        0x7F800000,
        0xFF800000,  # +-inf
        0x7FC00000,
        0xFFC00000,
        0x7F800001,
        0xFF800001,
        0x7FFFFFFF,
        0x7FA00000,  # NaNs
    ],
    dtype=U32,
)


def all_pairs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.ravel().copy(), b.ravel().copy()


# ---------------------------------------------------------------------------
# Operand generators per operation
# ---------------------------------------------------------------------------


def gen_random(rng, n):
    return rand_bits(rng, n), rand_bits(rng, n)


def gen_interesting(rng, n):
    return rand_interesting(rng, n), rand_interesting(rng, n)


def gen_add_aligned(rng, n):
    """b's exponent within +-30 of a's: alignment shifts, cancellation, carries."""
    a = rand_interesting(rng, n)
    delta = rng.integers(-30, 31, n)
    return a, with_exponent(rng, a, field_exp(a) + delta)


def gen_add_ties(rng, n):
    """b = (2m+1) * half an ulp of a, m small: a + b is an exact tie, plus
    near-ties (b one ulp of b away)."""
    a = rand_interesting(rng, n)
    a = np.where(field_exp(a) == 255, a & U32(0x807FFFFF), a)
    ea = np.maximum(field_exp(a), 1)
    half_ulp_exp = ea - 127 - 24  # 2^(ea-127-23) is one ulp of a (or of subnormals)
    m = rng.integers(0, 8, n)
    b = ((2 * m + 1) * np.ldexp(1.0, half_ulp_exp)).astype(F32).view(U32)
    nudge = rng.integers(-1, 2, n).astype(np.int64)  # -1, 0, +1 ulp
    b = (b.astype(np.int64) + np.where(b & U32(0x7FFFFFFF), nudge, 0)).astype(U32)
    sign = rng.integers(0, 2, n, dtype=U32) << U32(31)
    return a, b | sign


def gen_mul_short(rng, n):
    """Short significands: the exact product has few bits, so results are
    often exact or exact ties, at every exponent (incl. subnormal results)."""
    a = rand_interesting(rng, n)
    b = rand_interesting(rng, n)
    ka = rng.integers(0, 14, n).astype(U32)
    kb = rng.integers(0, 14, n).astype(U32)
    a = a & ~((U32(1) << (U32(23) - ka)) - U32(1))
    b = b & ~((U32(1) << (U32(23) - kb)) - U32(1))
    return a, b


def gen_mul_range(rng, n):
    """Exponent sums at the overflow and underflow edges."""
    a = rand_interesting(rng, n)
    ea = np.clip(field_exp(a), 1, 254)
    target = np.where(rng.integers(0, 2, n) == 0, rng.integers(-30, 3, n), rng.integers(250, 258, n))
    b = with_exponent(rng, a, target - ea + 127)
    return np.where(rng.integers(0, 2, n) == 0, gen_mul_short(rng, n)[0], a), b


def gen_div_exact(rng, n):
    """a = b * q with short b and q, so a / b = q exactly; and division by
    powers of two, which gives subnormal ties."""
    b, q = gen_mul_short(rng, n)
    with np.errstate(all="ignore"):
        a = (b2f(b).astype(F64) * b2f(q).astype(F64)).astype(F32).view(U32)
    pow2 = (rng.integers(0, 2, n, dtype=U32) << U32(31)) | (rng.integers(100, 180, n).astype(U32) << U32(23))
    half = rng.integers(0, 2, n) == 0
    return np.where(half, a, rand_interesting(rng, n)), np.where(half, b, pow2)


def gen_div_range(rng, n):
    a = rand_interesting(rng, n)
    ea = np.clip(field_exp(a), 1, 254)
    target = np.where(rng.integers(0, 2, n) == 0, rng.integers(-30, 3, n), rng.integers(250, 258, n))
    return a, with_exponent(rng, a, ea - target + 127)


def gen_fma_cancel(rng, n):
    """c close to -(a*b): massive cancellation, exact zeros, sticky bits."""
    a, b = gen_interesting(rng, n)
    with np.errstate(all="ignore"):
        p = (b2f(a) * b2f(b)).view(U32)
    nudge = rng.integers(-3, 4, n).astype(np.int64)
    c = (p.astype(np.int64) + nudge).astype(U32) ^ U32(0x80000000)
    return a, b, c


def gen_fma_ties(rng, n):
    """Short a, b (exact product) plus half an ulp of the product."""
    a, b = gen_mul_short(rng, n)
    with np.errstate(all="ignore"):
        p = b2f(a).astype(F64) * b2f(b).astype(F64)
        e = np.frexp(p)[1].astype(np.int64) - 25  # half ulp of round(p) (approximately)
        c = (rng.integers(-3, 4, n) * 2 + 1) * np.ldexp(1.0, e)
        c = np.where(np.isfinite(c), c, 1.0).astype(F32).view(U32)
    return a, b, c


def gen_triples(maker2):
    def gen(rng, n):
        a, b = maker2(rng, n)
        return a, b, rand_interesting(rng, n)

    return gen


# ---------------------------------------------------------------------------
# Reference for fma: a*b is exact in float64; a + c is done in float64 with
# round-to-odd (TwoSum), which then rounds to float32 correctly (53 >= 24 + 2).
# ---------------------------------------------------------------------------


def ref_fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        p = b2f(a).astype(F64) * b2f(b).astype(F64)
        cc = b2f(c).astype(F64)
        s = p + cc
        bv = s - p
        err = (p - (s - bv)) + (cc - bv)
        sb = s.view(np.uint64)
        fix = np.isfinite(s) & np.isfinite(err) & (err != 0) & ((sb & np.uint64(1)) == 0)
        away = (err > 0) == (s > 0)  # move away from zero?
        sb = np.where(fix, np.where(away, sb + np.uint64(1), sb - np.uint64(1)), sb)
        return sb.view(F64).astype(F32)


# ---------------------------------------------------------------------------
# Binary operations: bit-exact against numpy
# ---------------------------------------------------------------------------

NUMPY_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}

GENERATORS = {
    "add": [gen_random, gen_interesting, gen_add_aligned, gen_add_ties],
    "sub": [gen_random, gen_interesting, gen_add_aligned, gen_add_ties],
    "mul": [gen_random, gen_interesting, gen_mul_short, gen_mul_range],
    "div": [gen_random, gen_interesting, gen_div_exact, gen_div_range],
}


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_op_fuzz(sf, op):
    for i, n in chunks(N_PAIRS):
        a, b = mix(rng_for(op, i), n, GENERATORS[op])
        assert len(a) == n
        got = sf.batch(op, a, b)
        with np.errstate(all="ignore"):
            ref = NUMPY_BINARY[op](b2f(a), b2f(b))
        assert_same_bits(got, ref, op, a, b)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_op_specials(sf, op):
    a, b = all_pairs(SPECIALS)
    with np.errstate(all="ignore"):
        ref = NUMPY_BINARY[op](b2f(a), b2f(b))
    assert_same_bits(sf.batch(op, a, b), ref, op, a, b)


def test_fma_fuzz(sf):
    makers = [
        gen_triples(gen_random),
        gen_triples(gen_interesting),
        gen_triples(gen_mul_short),
        gen_triples(gen_mul_range),
        gen_fma_cancel,
        gen_fma_ties,
    ]
    for i, n in chunks(N_PAIRS):
        a, b, c = mix(rng_for("fma", i), n, makers)
        assert_same_bits(sf.batch("fma", a, b, c), ref_fma(a, b, c), "fma", a, b, c)


def test_fma_specials(sf):
    g = np.meshgrid(SPECIALS, SPECIALS, SPECIALS, indexing="ij")
    a, b, c = (x.ravel().copy() for x in g)
    assert_same_bits(sf.batch("fma", a, b, c), ref_fma(a, b, c), "fma", a, b, c)


def test_fma_reference_is_sound():
    """The round-to-odd trick of ref_fma, checked against exact rationals."""
    from fractions import Fraction

    rng = rng_for("fma-ref")
    a, b, c = gen_fma_ties(rng, 3000)
    ref = ref_fma(a, b, c)
    for x, y, z, r in zip(b2f(a), b2f(b), b2f(c), ref, strict=True):
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z) and np.isfinite(r)):
            continue
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
        lo = Fraction(float(np.nextafter(r, F32(-np.inf))))
        hi = Fraction(float(np.nextafter(r, F32(np.inf))))
        # r is the nearest float: the exact value is within half a gap of r
        assert (
            lo + (Fraction(float(r)) - lo) / 2 <= exact <= Fraction(float(r)) + (hi - Fraction(float(r))) / 2
        )


# ---------------------------------------------------------------------------
# Square root
# ---------------------------------------------------------------------------


def test_sqrt_fuzz(sf):
    for i, n in chunks(N_PAIRS):
        rng = rng_for("sqrt", i)
        short = gen_mul_short(rng, n // 4)[0] & U32(0x7FFFFFFF)
        with np.errstate(all="ignore"):
            squares = (b2f(short).astype(F64) ** 2).astype(F32).view(U32)  # often exact squares
        x = np.concatenate(
            [
                rand_bits(rng, n // 4),
                rand_interesting(rng, n // 4),
                squares,
                rng.integers(0, 0x00800000, n - 3 * (n // 4), dtype=U32),
            ]
        )
        with np.errstate(all="ignore"):
            ref = np.sqrt(b2f(x))
        assert_same_bits(sf.batch("sqrt", x), ref, "sqrt", x)
    with np.errstate(all="ignore"):
        assert_same_bits(sf.batch("sqrt", SPECIALS), np.sqrt(b2f(SPECIALS)), "sqrt", SPECIALS)


# ---------------------------------------------------------------------------
# Named edge cases (documenting the semantics)
# ---------------------------------------------------------------------------

INF, NINF = 0x7F800000, 0xFF800000
MIN_SUB, MAX_SUB, MIN_NORM, MAX_F = 0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF
ONE, NEG = 0x3F800000, 0x80000000


def one(sf, op, *args) -> int:
    return int(sf.batch(op, *[np.array([a], dtype=U32) for a in args])[0])


@pytest.mark.parametrize(
    "op, args, expected",
    [
        ("sub", (fbits(1.5), fbits(1.5)), 0x00000000),  # x - x = +0
        ("sub", (fbits(-1.5), fbits(-1.5)), 0x00000000),
        ("add", (fbits(2.5), fbits(-2.5)), 0x00000000),
        ("add", (NEG, NEG), NEG),  # -0 + -0 = -0
        ("add", (0, NEG), 0),  # +0 + -0 = +0
        ("sub", (NEG, 0), NEG),  # -0 - +0 = -0
        ("add", (MIN_SUB, MIN_SUB), 0x00000002),  # subnormal arithmetic is exact
        ("sub", (MIN_NORM, MIN_SUB), MAX_SUB),  # normal - subnormal -> subnormal
        ("add", (MAX_SUB, MIN_SUB), MIN_NORM),
        ("add", (INF, NINF), QNAN),  # inf - inf
        ("sub", (INF, INF), QNAN),
        ("add", (INF, fbits(-1e38)), INF),
        ("mul", (0, INF), QNAN),  # 0 * inf
        ("mul", (NEG, NINF), QNAN),
        ("mul", (NEG, fbits(3.0)), NEG),  # signed zero products
        ("mul", (NEG, NEG), 0),
        ("div", (0, 0), QNAN),  # 0/0
        ("div", (INF, NINF), QNAN),  # inf/inf
        ("div", (ONE, 0), INF),  # x/0 = +-inf
        ("div", (ONE, NEG), NINF),
        ("div", (fbits(-2.0), 0), NINF),
        ("div", (ONE, INF), 0),
        ("div", (fbits(-1.0), INF), NEG),
        ("sqrt", (NEG,), NEG),  # sqrt(-0) = -0
        ("sqrt", (0,), 0),
        ("sqrt", (fbits(-1.0),), QNAN),  # sqrt(negative) = NaN
        ("sqrt", (NINF,), QNAN),
        ("sqrt", (MIN_SUB | NEG,), QNAN),
        ("sqrt", (INF,), INF),
        ("sqrt", (fbits(4.0),), fbits(2.0)),
        ("sqrt", (MIN_SUB,), fbits(2.0**-74.5)),
        ("mul", (MAX_F, fbits(2.0)), INF),  # overflow rounds to inf
        ("mul", (MAX_F | NEG, fbits(2.0)), NINF),
        ("add", (MAX_F, 0x72FFFFFF), MAX_F),  # just below half an ulp: stays finite
        ("add", (MAX_F, 0x73000000), INF),  # exactly half an ulp: tie to even = 2^128 -> inf
        ("add", (0x7F7FFFFE, 0x73000000), 0x7F7FFFFE),  # tie, even neighbour is below
        ("div", (MIN_SUB, fbits(2.0)), 0),  # underflow to zero (tie -> even 0)
        ("div", (MIN_SUB | NEG, fbits(2.0)), NEG),  # signed zero underflow
        ("div", (0x00000003, fbits(2.0)), 0x00000002),  # 1.5 min_sub: tie -> even
        ("div", (0x00000005, fbits(2.0)), 0x00000002),  # 2.5 min_sub: tie -> even
        ("mul", (MIN_NORM, fbits(0.5)), 0x00400000),  # normal -> subnormal exactly
        ("mul", (0x00800001, fbits(0.5)), 0x00400000),  # ... with a tie to even
        ("mul", (0x00800003, fbits(0.5)), 0x00400002),
        ("mul", (0x3F7FFFFF, MIN_NORM), MIN_NORM),  # rounds up into the normal range
        ("add", (ONE, fbits(2.0**-24)), ONE),  # 1 + half ulp: tie -> even (1)
        ("add", (0x3F800001, fbits(2.0**-24)), 0x3F800002),  # odd + half ulp: up
        ("add", (ONE, fbits(2.0**-24 + 2.0**-47)), 0x3F800001),  # above the tie: up
        ("sub", (ONE, fbits(2.0**-25)), ONE),  # 1 - quarter ulp(1) = tie below 1 -> 1
        ("sub", (ONE, fbits(2.0**-24)), 0x3F7FFFFF),  # 1 - 2^-24 exactly representable
        ("add", (fbits(2.0**24), ONE), fbits(2.0**24)),  # 2^24 + 1: tie -> even
        ("add", (fbits(2.0**24 + 2), ONE), fbits(2.0**24 + 4)),
        ("fma", (fbits(3.0), fbits(5.0), fbits(-15.0)), 0),  # exact cancel -> +0
        ("fma", (NEG, fbits(5.0), NEG), NEG),  # -0*5 + -0 = -0
        ("fma", (0, INF, fbits(1.0)), QNAN),  # 0*inf + c
        ("fma", (INF, fbits(2.0), NINF), QNAN),  # inf - inf
        ("fma", (fbits(1.0 + 2.0**-12), fbits(1.0 - 2.0**-12), fbits(-1.0)), fbits(-(2.0**-24))),
    ],
)
def test_edge_cases(sf, op, args, expected):
    assert one(sf, op, *args) == expected, f"{op}{tuple(hex(a) for a in args)}"


def test_nan_results_are_canonical(sf):
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FABCDEF], dtype=U32)
    others = np.concatenate([nans, SPECIALS[:12]])
    a, b = all_pairs(others)
    for op in ("add", "sub", "mul", "div"):
        got = sf.batch(op, a, b)
        has_nan = np.isnan(b2f(a)) | np.isnan(b2f(b))
        assert (got[has_nan] == QNAN).all(), op
    assert (sf.batch("sqrt", nans) == QNAN).all()
    assert (sf.batch("fma", a, b, np.full_like(a, ONE))[np.isnan(b2f(a)) | np.isnan(b2f(b))] == QNAN).all()
    for fn in ("exp", "log", "tanh", "sigmoid", "gelu", "rsqrt"):
        assert (sf.batch(fn, nans) == QNAN).all(), fn
    # neg/abs are bit operations: they keep the payload and only touch the sign
    assert (sf.batch("neg", nans) == nans ^ U32(0x80000000)).all()
    assert (sf.batch("abs", nans) == nans & U32(0x7FFFFFFF)).all()


# ---------------------------------------------------------------------------
# Comparisons, sign operations, ldexp
# ---------------------------------------------------------------------------


def test_comparisons(sf):
    for i, n in chunks(N_PAIRS // 2):
        rng = rng_for("cmp", i)
        a = np.concatenate(
            [rand_interesting(rng, n // 2), rand_bits(rng, n - n // 2), all_pairs(SPECIALS)[0]]
        )
        flip = rng.integers(0, 2, n - n // 2, dtype=U32) << U32(31)  # compare x with +-x too
        b = np.concatenate([rand_interesting(rng, n // 2), a[: n - n // 2] ^ flip, all_pairs(SPECIALS)[1]])
        fa, fb = b2f(a), b2f(b)
        assert (sf.batch("eq", a, b) == np.equal(fa, fb)).all()
        assert (sf.batch("lt", a, b) == np.less(fa, fb)).all()
        assert (sf.batch("le", a, b) == np.less_equal(fa, fb)).all()
        assert (sf.batch("unord", a, b) == (np.isnan(fa) | np.isnan(fb))).all()
    assert one(sf, "eq", 0, NEG) == 1 and one(sf, "lt", NEG, 0) == 0 and one(sf, "le", NEG, 0) == 1
    assert one(sf, "eq", QNAN, QNAN) == 0 and one(sf, "le", QNAN, QNAN) == 0


def test_neg_abs(sf):
    x = rand_bits(rng_for("neg"), 1000)
    assert (sf.batch("neg", x) == x ^ U32(0x80000000)).all()
    assert (sf.batch("abs", x) == x & U32(0x7FFFFFFF)).all()


def test_ldexp(sf):
    for i, n in chunks(N_PAIRS // 4):
        rng = rng_for("ldexp", i)
        x = np.concatenate([rand_interesting(rng, n), SPECIALS])
        k = np.concatenate([rng.integers(-300, 301, n), rng.integers(-3, 4, len(SPECIALS))]).astype(np.int32)
        with np.errstate(all="ignore"):
            ref = np.ldexp(b2f(x), k)
        assert_same_bits(sf.batch("ldexp", x, k.view(U32)), ref, "ldexp", x, k)
    big = np.array([0x7FFFFFFF, -0x80000000, 1000, -1000], dtype=np.int32)
    got = sf.batch("ldexp", np.full(4, ONE, dtype=U32), big.view(U32))
    assert list(got) == [INF, 0, INF, 0]


# ---------------------------------------------------------------------------
# Integer conversions
# ---------------------------------------------------------------------------


def rand_ints(rng, n) -> np.ndarray:
    """int32 values of every bit length, plus the extremes and the 2^24 edge."""
    length = rng.integers(0, 33, n).astype(np.uint64)
    mag = rng.integers(0, 1 << 32, n, dtype=np.uint64) & ((np.uint64(1) << length) - np.uint64(1))
    edges = np.array(
        [
            0,
            1,
            -1,
            2**31 - 1,
            -(2**31),
            2**24,
            2**24 + 1,
            2**24 + 3,
            -(2**24) - 1,
            2**25 + 2,
            2**25 + 6,
            2**31 - 64,
            2**31 - 65,
            2**31 - 128,
            2**31 - 192,
        ],
        dtype=np.int64,
    ).astype(np.uint32)
    return np.concatenate([mag.astype(np.uint32), edges])


def test_from_i32(sf):
    for i, n in chunks(N_PAIRS):
        u = rand_ints(rng_for("i2f", i), n)
        assert_same_bits(sf.batch("from_i32", u), u.view(np.int32).astype(F32), "from_i32", u)


def test_from_u32(sf):
    for i, n in chunks(N_PAIRS):
        u = np.concatenate(
            [
                rand_ints(rng_for("u2f", i), n),
                np.array(
                    [
                        0xFFFFFFFF,
                        0xFFFFFF7F,
                        0xFFFFFF80,
                        0xFFFFFF81,
                        0x80000000,
                        0x80000080,
                        0x80000180,
                        0x7FFFFFC0,
                    ],
                    dtype=U32,
                ),
            ]
        )
        assert_same_bits(sf.batch("from_u32", u), u.astype(F32), "from_u32", u)


def _expected_trunc(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Saturating truncation, NaN -> 0 (the documented semantics)."""
    with np.errstate(all="ignore"):
        t = np.trunc(b2f(x).astype(F64))
        t = np.where(np.isnan(t), 0.0, np.clip(t, lo, hi))
    return t.astype(np.int64)


def test_to_i32(sf):
    for i, n in chunks(N_PAIRS):
        rng = rng_for("f2i", i)
        x = np.concatenate(
            [
                rand_interesting(rng, n // 2),
                rand_bits(rng, n // 4),
                with_exponent(rng, np.empty(n - 3 * (n // 4)), rng.integers(120, 162, n - 3 * (n // 4))),
                SPECIALS,
                bits([2.0**31, -(2.0**31), 2.0**31 - 128, -(2.0**31) + 128, 0.5, -0.99999994]),
            ]
        )
        got = sf.batch("to_i32", x).view(np.int32).astype(np.int64)
        assert (got == _expected_trunc(x, -(2**31), 2**31 - 1)).all()
        # in-range values: the same as numpy's (hardware) conversion
        fx = b2f(x)
        with np.errstate(all="ignore"):
            ok = np.isfinite(fx) & (np.abs(fx.astype(F64)) < 2.0**31)
        assert (got[ok] == fx[ok].astype(np.int32)).all()
    # the documented out-of-range rules
    special = sf.batch("to_i32", np.array([QNAN, INF, NINF, fbits(3e9), fbits(-3e9)], U32)).view(np.int32)
    assert [int(v) for v in special] == [0, 2**31 - 1, -(2**31), 2**31 - 1, -(2**31)]


def test_to_u32(sf):
    for i, n in chunks(N_PAIRS):
        rng = rng_for("f2u", i)
        m = n - 3 * (n // 4)
        x = np.concatenate(
            [
                rand_interesting(rng, n // 2),
                rand_bits(rng, n // 4),
                with_exponent(rng, np.empty(m), rng.integers(120, 162, m)) & U32(0x7FFFFFFF),
                SPECIALS,
                bits([2.0**32, 2.0**32 - 256, 2.0**31, -0.5, -1.0]),
            ]
        )
        got = sf.batch("to_u32", x).astype(np.int64)
        assert (got == _expected_trunc(x, 0, 2**32 - 1)).all()
        fx = b2f(x)
        with np.errstate(all="ignore"):
            ok = np.isfinite(fx) & (fx.astype(F64) >= 0) & (fx.astype(F64) < 2.0**32)
        assert (got[ok] == fx[ok].astype(np.uint32)).all()
    special = sf.batch("to_u32", np.array([QNAN, INF, NINF, fbits(5e9), fbits(-5.0)], U32))
    assert [int(v) for v in special] == [0, 2**32 - 1, 0, 2**32 - 1, 0]


# ---------------------------------------------------------------------------
# Property tests (hypothesis, derandomised): single operations on whatever
# floats hypothesis likes to generate (it favours boundaries).
# ---------------------------------------------------------------------------

float32s = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(a=float32s, b=float32s, c=float32s)
def test_hypothesis_ops(sf, a, b, c):
    fa, fb = np.array([a], dtype=F32), np.array([b], dtype=F32)
    fc = np.array([c], dtype=F32)
    with np.errstate(all="ignore"):
        for op, fn in NUMPY_BINARY.items():
            assert_same_bits(sf.batch(op, bits(fa), bits(fb)), fn(fa, fb), op, fa, fb)
        assert_same_bits(sf.batch("sqrt", bits(fa)), np.sqrt(fa), "sqrt", fa)
    assert_same_bits(
        sf.batch("fma", bits(fa), bits(fb), bits(fc)),
        ref_fma(bits(fa), bits(fb), bits(fc)),
        "fma",
        fa,
        fb,
        fc,
    )
    assert_mac(sf, bits(fa), bits(fb), bits(fc), "mac")


# ---------------------------------------------------------------------------
# The fused dot-product kernel: sf_mac(c, a, b) and sf_dot must give exactly
# the bits of the separate operations, c + a*b = sf_add(c, sf_mul(a, b)).
# ---------------------------------------------------------------------------


def ref_mac(sf, a, b, c) -> np.ndarray:
    return sf.batch("add", c, sf.batch("mul", a, b))


def assert_mac(sf, a, b, c, what: str) -> None:
    got, ref = sf.batch("mac", a, b, c), ref_mac(sf, a, b, c)
    with np.errstate(all="ignore"):  # and IEEE float32, independently of softfloat.c
        assert_same_bits(got, b2f(c) + b2f(a) * b2f(b), what + " (numpy)", a, b, c)
    bad = got != ref
    if bad.any():
        lines = [
            f"  {int(c[i]):#010x} + {int(a[i]):#010x} * {int(b[i]):#010x} = {int(got[i]):#010x}, "
            f"separately {int(ref[i]):#010x}"
            for i in np.flatnonzero(bad)[:8]
        ]
        pytest.fail(f"{what}: {int(bad.sum())} of {len(got)} differ:\n" + "\n".join(lines))


# The kernel's own edges: the window of its inline path (operands in
# [2^-63, 2^63)), products at the normal/subnormal boundary, sums at the top
# of the range, powers of two (results that change binade).
MAC_EDGES = np.array(
    [
        *(0x1F800000, 0x1FFFFFFF, 0x20000000, 0x20000001, 0x5EFFFFFF, 0x5F000000, 0x5F7FFFFF, 0x5F800000),
        *(0x9F800000, 0xA0000000, 0xDF7FFFFF, 0xDF800000, 0x3F000001, 0x3FFFFFFF, 0x4B000001, 0x7E800000),
    ],
    dtype=U32,
)


def test_mac_specials(sf):
    values = np.concatenate([SPECIALS, MAC_EDGES])
    g = np.meshgrid(values, values, values, indexing="ij")
    a, b, c = (x.ravel().copy() for x in g)
    assert_mac(sf, a, b, c, "mac specials")


def gen_mac_far(rng, n):
    """c about 2^k times a*b for k in -30 .. 30, often a power of two: the
    alignment shift around the point where the smaller term stops mattering,
    and sums that leave or enter a binade."""
    a, b = gen_interesting(rng, n)
    a, b = with_exponent(rng, a, rng.integers(64, 190, n)), with_exponent(rng, b, rng.integers(64, 190, n))
    target = field_exp(a) + field_exp(b) - 127 + rng.integers(-30, 31, n)
    c = with_exponent(rng, a, target)
    c = np.where(rng.integers(0, 3, n) == 0, c & U32(0xFF800000), c)
    return a, b, c


def gen_mac_window(rng, n):
    """Operands around the inline path's window and products around the
    normal range's ends, with accumulators of all sizes."""
    a, b, c = gen_triples(gen_interesting)(rng, n)
    ea = rng.choice([62, 63, 64, 65, 188, 189, 190, 191, 1, 2, 253, 254], n)
    a = with_exponent(rng, a, ea)
    b = with_exponent(rng, b, np.where(ea < 128, rng.integers(60, 70, n), rng.integers(60, 70, n) + 100))
    return a, b, c


def test_mac_fuzz(sf):
    makers = [
        gen_triples(gen_random),
        gen_triples(gen_interesting),
        gen_triples(gen_mul_short),
        gen_triples(gen_mul_range),
        gen_fma_cancel,
        gen_fma_ties,
        gen_mac_far,
        gen_mac_window,
    ]
    for i, n in chunks(N_PAIRS):
        a, b, c = mix(rng_for("mac", i), n, makers)
        assert_mac(sf, a, b, c, "mac fuzz")


def test_dot_fuzz(sf):
    """Random dot products in C: shapes up to 5 x 5 x 9 with strides -9 .. 9,
    values like a network's, specials, ties, far apart magnitudes, sums that
    overflow or cancel to subnormals (see dot_value in the harness)."""
    n = scaled(100_000)
    for seed in (1, 20240601, 0xDEADBEEF):
        first = ctypes.c_uint32(0)
        bad = sf.lib.sf_dot_fuzz(seed, n, ctypes.byref(first))
        assert bad == 0, f"seed {seed}: {bad} of {n} dot products differ, the first is number {first.value}"


def _seq(*floats_or_bits) -> np.ndarray:
    return np.array([v if isinstance(v, int) else fbits(v) for v in floats_or_bits], dtype=U32)


ROW = lambda n: ((1, 0, 0), (1, 0, 0), (n, 1, 1))  # noqa: E731


# (acc, x, w): one row, term by term.
DOT_SEQUENCES = [
    (NEG, _seq(MAX_F, MAX_F, -1.0), _seq(1.0, 1.0, MAX_F)),  # overflow to inf, then inf - max = inf
    (MAX_F, _seq(2.0**51, -(2.0**62)), _seq(2.0**52, 2.0**62)),  # max + half ulp rounds to inf: stays inf
    (MAX_F, _seq(2.0**51 - 2.0**27, -1.0), _seq(2.0**52, MAX_F)),  # just below the tie: max, then 0
    (NEG, _seq(*[0x5EFFFFFF] * 5, -(2.0**62)), _seq(*[0x5EFFFFFF] * 5, 2.0**62)),  # overflow, inline path
    (NEG, _seq(2.0**62, 2.0**62, -(2.0**62), -(2.0**62)), _seq(2.0**62, 2.0**62, 2.0**62, 2.0**62)),
    (NEG, _seq(INF, 1.0, -1.0), _seq(1.0, MAX_F, INF)),  # inf + (-inf) = NaN
    (0, _seq(QNAN, 0.0, 1.0), _seq(1.0, 0.0, 1.0)),  # NaN is absorbing
    (0, _seq(0x7F800001, 2.0), _seq(1.0, 3.0)),  # signalling NaN payload: canonical NaN
    (0, _seq(0.0, INF), _seq(INF, 1.0)),  # 0 * inf
    (0, _seq(1.5, -1.5, 0.0), _seq(2.0, 2.0, -5.0)),  # x - x = +0, then +0 + -0 = +0
    (NEG, _seq(0.0, -0.0, 0.0), _seq(-1.0, 1.0, 2.0)),  # -0 + (-0) + (-0) + (+0) = +0
    (NEG, _seq(-0.0, 0.0), _seq(1.0, -3.0)),  # -0 + -0 + -0 = -0
    (NEG, _seq(MIN_SUB, MIN_SUB), _seq(1.0, -1.0)),  # subnormal operands
    (NEG, _seq(2.0**-63, -(2.0**-63), 2.0**-64), _seq(2.0**-63, 2.0**-64, 2.0**-63)),  # subnormal sums
    (NEG, _seq(2.0**-63, 3.0 * 2.0**-63), _seq(2.0**-63, -(2.0**-63))),  # subnormal - normal
    (MIN_NORM, _seq(-(2.0**-63), 2.0**-62, 2.0**20), _seq(2.0**-64, 2.0**-64, 2.0**-20)),
    (fbits(1.0), _seq(2.0**-12, 2.0**-13), _seq(2.0**-12, 2.0**-12)),  # 1 + 2^-24 tie, then above
    (fbits(1.0), _seq(1.0 + 2.0**-12), _seq(-(1.0 - 2.0**-12))),  # cancellation to 2^-24
    (fbits(2.0**26), _seq(1.0, 1.0, 1.0, 1.0), _seq(1.0, 1.0, 1.0, 1.0)),  # each term below half an ulp
    (fbits(-(2.0**26)), _seq(1.0, 1.0, 3.0), _seq(2.0, 2.0, 1.0)),  # ties around a power of two
    (fbits(1.0), _seq(1.0 - 2.0**-24, 2.0**-24), _seq(-1.0, -(2.0**-24))),
    # sf_dot's own edges (the accumulator kept unpacked, in range [2^-126, 2^127)):
    (NEG, _seq(1.5 * 2.0**63, 1.5 * 2.0**63, -(2.0**64)), _seq(2.0**63, 2.0**63, 2.0**63)),  # 2^127.x, back
    (fbits(1.9 * 2.0**126), _seq(2.0**62, -(2.0**62)), _seq(2.0**63, 2.0**63)),  # a carry to 2^127 and down
    (fbits(2.0**127), _seq(-(2.0**60), 2.0**60), _seq(2.0**66, 2.0**66)),  # starts out of the fast range
    (fbits(2.0 - 2.0**-23), _seq(2.0**-24), _seq(1.0)),  # rounds up to 2 (held as 2^31), then more terms
    (fbits(2.0 - 2.0**-23), _seq(2.0**-24, 1.0 - 2.0**-24, -1.0), _seq(1.0, 1.0, 1.0)),
    (NEG, _seq(1.0 - 2.0**-24, 2.0**-24, -(2.0**-25)), _seq(1.0 + 2.0**-23, 1.0, 1.0)),  # product rounds to 1
    (fbits(1.0 + 2.0**-22), _seq(2.0**-32 + 2.0**-55), _seq(-1.0)),  # a shift of 8+ and a tie below
    (fbits(1.0 + 2.0**-23), _seq(2.0**-24, 2.0**-30), _seq(1.0, 2.0**-30)),  # ties after shifts
    (fbits(2.0**-126), _seq(-(2.0**-63), 2.0**-63), _seq(2.0**-63 * 1.5, 2.0**-64)),  # to subnormal, back
    (MIN_SUB, _seq(2.0**-63, MIN_SUB), _seq(2.0**-63, 2.0**100)),  # a subnormal accumulator
    (NEG, _seq(2.0**-63, 2.0**65 - 2.0**41), _seq(2.0**-63, 2.0**-64)),  # the window's edges
    (fbits(1.0), _seq(1.0 + 2.0**-23, 1.0), _seq(-1.0, -(2.0**-23))),  # a difference of d = 0, negative
    (fbits(1.0 + 2.0**-10), _seq(2.0**-9), _seq(-0.9)),  # a one-bit cancellation
    # a carry to 2^127, then a tie that rounds up to 2^128 (inf) without a carry, then inf stays
    (NEG, _seq(1.5 * 2.0**63, 1.5 * 2.0**63, 2.0**63 - 2.0**40, -(2.0**63)), _seq(*[2.0**63] * 4)),
]


def ieee_dot(acc: int, x, w, loops, base: int = 0) -> int:
    """The dot product term by term in numpy float32 (IEEE), NaN made canonical."""
    xs, ws = b2f(np.asarray(x, dtype=U32)), b2f(np.asarray(w, dtype=U32))
    s = b2f(np.array([acc], dtype=U32))[0]
    (n0, x0, w0), (n1, x1, w1), (n2, x2, w2) = loops
    with np.errstate(all="ignore"):
        for i in range(n0):
            for j in range(n1):
                for k in range(n2):
                    s = s + xs[base + i * x0 + j * x1 + k * x2] * ws[base + i * w0 + j * w1 + k * w2]
    return QNAN if np.isnan(s) else int(np.float32(s).view(U32))


@pytest.mark.parametrize("case", range(len(DOT_SEQUENCES)))
def test_dot_sequences(sf, case):
    acc, x, w = DOT_SEQUENCES[case]
    loops = ROW(len(x))
    got = sf.dot(acc, x, w, loops)
    assert got == sf.dot(acc, x, w, loops, ref=True)
    assert got == ieee_dot(acc, x, w, loops)
    for form in UNPACKED_FORMS:
        assert sf.dot(acc, x, w, loops, form=form) == got, form


def test_dot_without_terms_returns_acc(sf):
    x = np.array([fbits(1.0)] * 4, dtype=U32)
    for acc in (0x7F800001, 0xFFC00001, NEG, fbits(2.5)):  # even a NaN's payload is kept
        for loops in (((0, 1, 1), (3, 1, 1), (3, 1, 1)), ((2, 1, 1), (0, 1, 1), (2, 1, 1)), ROW(0)):
            assert sf.dot(acc, x, x, loops) == acc
            for form in UNPACKED_FORMS:
                assert sf.dot(acc, x, x, loops, form=form) == acc, form


dot_bits = st.one_of(
    float32s.map(lambda v: int(np.float32(v).view(U32))),
    st.sampled_from([int(v) for v in np.concatenate([SPECIALS, MAC_EDGES])]),
    st.integers(0, 2**32 - 1),
    st.builds(  # network-like values: |v| in [2^-9, 2^7), with zeros
        lambda sign, e, f: (sign << 31) | (e << 23) | f,
        st.integers(0, 1),
        st.integers(118, 133) | st.just(0),
        st.integers(0, 0x7FFFFF),
    ),
)
REACH = 18  # 3 loops * (3 - 1) * 3: the farthest index the loops below reach from the centre


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    acc=dot_bits,
    x=st.lists(dot_bits, min_size=2 * REACH + 1, max_size=2 * REACH + 1),
    w=st.lists(dot_bits, min_size=2 * REACH + 1, max_size=2 * REACH + 1),
    loops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(-3, 3), st.integers(-3, 3)), min_size=3, max_size=3
    ),
)
def test_hypothesis_dot(sf, acc, x, w, loops):
    xs, ws = np.array(x, dtype=U32), np.array(w, dtype=U32)
    got = sf.dot(acc, xs, ws, loops, base=REACH)
    assert got == sf.dot(acc, xs, ws, loops, base=REACH, ref=True), (hex(acc), loops)
    for form in UNPACKED_FORMS:
        assert got == sf.dot(acc, xs, ws, loops, base=REACH, form=form), (hex(acc), loops, form)
    if all(n for n, _, _ in loops):  # (with no terms, sf_dot returns acc itself, NaN payload and all)
        assert got == ieee_dot(acc, xs, ws, loops, base=REACH), (hex(acc), loops)


def _edge_bits(sign: int, exp: int, frac: int) -> int:
    return (sign << 31) | (exp << 23) | frac


# Values at sf_dot's edges: exponents at the window of its fast path (2^-63 .. 2^65), near the top of the
# range it keeps (2^127) and the bottom (subnormals), significands just below 2 (round-ups to a power of
# two), with few bits (exact sums and ties), or random.
edge_dot_bits = st.builds(
    _edge_bits,
    st.integers(0, 1),
    st.sampled_from(
        [0, 1, 2, 62, 63, 64, 65, 66, 100, 120, 125, 127, 128, 130, 188, 189, 190, 191, 192, 252, 253, 254]
    )
    | st.integers(0, 254),
    st.sampled_from([0, 0x7FFFFF, 0x7FFFFE, 0x400000, 0x600000, 0x000001, 0x7FFF80])
    | st.integers(0, 0x7FFFFF).map(lambda f: f & 0x7FF000)
    | st.integers(0, 0x7FFFFF),
)


@settings(max_examples=scaled(400), derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    acc=edge_dot_bits | dot_bits,
    x=st.lists(edge_dot_bits | dot_bits, min_size=1, max_size=12),
    w=st.lists(edge_dot_bits | dot_bits, min_size=12, max_size=12),
)
def test_hypothesis_dot_edges(sf, acc, x, w):
    """One row of terms at the kernel's edges: sf_dot (and on unpacked operands) is the plain loop, and IEEE
    float32."""
    xs, ws = np.array(x, dtype=U32), np.array(w[: len(x)], dtype=U32)
    loops = ROW(len(xs))
    got = sf.dot(acc, xs, ws, loops)
    case = (hex(acc), [hex(v) for v in x], [hex(v) for v in w])
    assert got == sf.dot(acc, xs, ws, loops, ref=True), case
    for form in UNPACKED_FORMS:
        assert got == sf.dot(acc, xs, ws, loops, form=form), (*case, form)
    assert got == ieee_dot(acc, xs, ws, loops)


# ---------------------------------------------------------------------------
# Math functions: error against float64 references
# ---------------------------------------------------------------------------


def ulp_error(got32: np.ndarray, ref64: np.ndarray) -> np.ndarray:
    """|got - ref| in units of the float32 spacing at ref (2^-149 for subnormals)."""
    e = np.frexp(ref64)[1].astype(np.int64)  # |ref| = m * 2^e, m in [0.5, 1)
    ulp = np.ldexp(1.0, np.maximum(e - 24, -149))
    return np.abs(got32.astype(F64) - ref64) / ulp


def _sigmoid64(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def _gelu64(x):
    # 0.5 x (1 + tanh(u)) written as x * sigmoid(2u) (the same function; the
    # literal form loses all digits to cancellation for negative x, even in
    # float64).  test_gelu_reference_identity checks the identity.
    v = 2.0 * np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)
    return x * _sigmoid64(v)


def _to_order(u: np.ndarray) -> np.ndarray:
    """Float bit patterns -> integers in the same order as the float values."""
    u = u.astype(np.int64)
    return np.where(u >= 1 << 31, (1 << 31) - u, u)


def _from_order(o: np.ndarray) -> np.ndarray:
    return np.where(o < 0, (1 << 31) - o, o).astype(U32)


def _floats_between(lo: float, hi: float, n: int, rng) -> np.ndarray:
    """n floats in [lo, hi]: half an even sweep in value, half uniformly
    random among the floats themselves (so every binade is well covered)."""
    sweep = bits(np.linspace(lo, hi, n // 2).astype(F32))
    olo, ohi = _to_order(bits([lo]))[0], _to_order(bits([hi]))[0]
    return np.concatenate([sweep, _from_order(rng.integers(olo, ohi + 1, n - n // 2))])


# name -> (float64 reference, [(lo, hi, bound in ulps), ...]).  The bounds
# are the exhaustively measured maxima of the table in mathf.c, rounded up.
MATH = {
    "exp": (np.exp, [(-104.0, 88.72283, 1.0), (-104.0, -87.4, 1.0), (-1e-3, 1e-3, 1.0)]),
    "log": (np.log, [(1e-45, 3.4e38, 0.85), (1e-45, 1e-37, 0.85), (0.5, 2.0, 0.85), (0.999, 1.001, 0.85)]),
    "tanh": (np.tanh, [(-10.0, 10.0, 1.0), (-1.0, 1.0, 1.0), (-1e-3, 1e-3, 1.0), (-3e38, 3e38, 1.0)]),
    "sigmoid": (_sigmoid64, [(-104.0, 90.0, 2.41), (-104.0, -87.0, 2.41), (-6.0, 6.0, 2.41)]),
    "gelu": (_gelu64, [(0.0, 3e38, 2.68), (0.0, 10.0, 2.68), (-1.0, 0.0, 3.96)]),
    "rsqrt": (lambda x: 1.0 / np.sqrt(x), [(1e-45, 3.4e38, 1.5), (1e-45, 1e-37, 1.5), (0.25, 4.0, 1.5)]),
}


@pytest.mark.parametrize("fn", list(MATH))
def test_math_error_bounds(sf, fn):
    ref_fn, ranges = MATH[fn]
    rng = rng_for("math-" + fn)
    for lo, hi, bound in ranges:
        for _, n in chunks(max(1000, N_MATH // len(ranges))):
            x = _floats_between(lo, hi, n, rng)
            got = b2f(sf.batch(fn, x))
            with np.errstate(all="ignore"):
                ref = ref_fn(b2f(x).astype(F64))
            err = ulp_error(got, ref)
            worst = int(np.argmax(err))
            assert err[worst] < bound, (
                f"{fn} on [{lo}, {hi}]: {err[worst]:.3f} ulp at x={float(b2f(x)[worst])!r} "
                f"({int(x[worst]):#010x}): got {float(got[worst])!r}, exact {ref[worst]!r}"
            )


def test_math_whole_range(sf):
    """Any input: no crash, NaN only for NaN inputs (and log/rsqrt of x < 0),
    and the results stay in the function's range."""
    for i, n in chunks(N_MATH):
        x = np.concatenate([rand_bits(rng_for("math-any", i), n), SPECIALS])
        fx = b2f(x)
        nan_in = np.isnan(fx)
        with np.errstate(invalid="ignore"):
            neg = fx < 0
        for fn in MATH:
            y = b2f(sf.batch(fn, x))
            expect_nan = nan_in | (neg if fn in ("log", "rsqrt") else False)
            assert (np.isnan(y) == expect_nan).all(), fn
            assert (y.view(U32)[np.isnan(y)] == QNAN).all(), fn
            with np.errstate(invalid="ignore"):
                if fn == "exp":
                    assert (y[~nan_in] >= 0).all()
                if fn in ("tanh", "sigmoid"):
                    lo = -1 if fn == "tanh" else 0
                    assert ((y[~nan_in] >= lo) & (y[~nan_in] <= 1)).all(), fn


def test_gelu_negative_bound(sf):
    """For x < 0 the error grows with |v|, v = 2 sqrt(2/pi) (x + 0.044715 x^3):
    mathf.c documents (and an exhaustive sweep confirms) < 2 + 3.5|v| ulp."""
    rng = rng_for("gelu-neg")
    for lo in (-12.0, -3.0, -1.0):
        x = _floats_between(lo, 0.0, max(1000, N_MATH // 3), rng)
        fx = b2f(x).astype(F64)
        got = b2f(sf.batch("gelu", x))
        ref = _gelu64(fx)
        v = 2.0 * np.sqrt(2.0 / np.pi) * (fx + 0.044715 * fx**3)
        ratio = ulp_error(got, ref) / (2.0 + 3.5 * np.abs(v))
        worst = int(np.argmax(ratio))
        assert ratio[worst] < 1.0, f"x={fx[worst]!r}: got {float(got[worst])!r}, exact {ref[worst]!r}"
        assert (got <= 0).all()
    # far out the result underflows to -0 (the exact value is below 2^-150)
    assert (sf.batch("gelu", bits(np.linspace(-1e4, -11.0, 1000, dtype=F32))) == NEG).all()


def test_gelu_reference_identity():
    x = np.linspace(-5.0, 10.0, 10001)
    literal = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    assert np.allclose(_gelu64(x), literal, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(
    "fn, x, expected",
    [
        ("exp", 0, ONE),
        ("exp", NEG, ONE),
        ("exp", INF, INF),
        ("exp", NINF, 0),
        ("exp", fbits(89.0), INF),
        ("exp", fbits(-110.0), 0),
        ("exp", fbits(1.0), fbits(np.e)),
        ("log", ONE, 0),
        ("log", 0, NINF),
        ("log", NEG, NINF),
        ("log", INF, INF),
        ("log", fbits(-1.0), QNAN),
        ("log", NINF, QNAN),
        ("log", fbits(np.e), ONE),
        ("log", fbits(2.0), fbits(np.log(2))),
        ("tanh", 0, 0),
        ("tanh", NEG, NEG),
        ("tanh", INF, ONE),
        ("tanh", NINF, fbits(-1.0)),
        ("tanh", fbits(20.0), ONE),
        ("tanh", MIN_SUB, MIN_SUB),
        ("sigmoid", 0, fbits(0.5)),
        ("sigmoid", NEG, fbits(0.5)),
        ("sigmoid", INF, ONE),
        ("sigmoid", NINF, 0),
        ("gelu", 0, 0),
        ("gelu", INF, INF),
        ("gelu", NINF, NEG),
        ("gelu", fbits(-1e30), NEG),
        ("gelu", fbits(1e30), fbits(1e30)),
        ("rsqrt", fbits(4.0), fbits(0.5)),
        ("rsqrt", 0, INF),
        ("rsqrt", NEG, NINF),
        ("rsqrt", INF, 0),
        ("rsqrt", fbits(-1.0), QNAN),
        ("rsqrt", fbits(0.25), fbits(2.0)),
    ],
)
def test_math_special_values(sf, fn, x, expected):
    assert one(sf, fn, x) == expected, f"{fn}({x:#010x})"


# ---------------------------------------------------------------------------
# The libgcc soft-float ABI entry points (host build with -DSOFTFLOAT_ABI)
# ---------------------------------------------------------------------------

ABI_VALUES = [0.0, -0.0, 1.0, -1.0, 2.5, 1e-45, -3e38, float("inf"), float("-inf"), float("nan")]


def test_abi_arithmetic(sf_abi):
    for x in ABI_VALUES:
        for y in ABI_VALUES:
            fx, fy = np.float32(x), np.float32(y)
            with np.errstate(all="ignore"):
                cases = [
                    ("__addsf3", fx + fy),
                    ("__subsf3", fx - fy),
                    ("__mulsf3", fx * fy),
                    ("__divsf3", fx / fy),
                ]
            for name, ref in cases:
                got = np.float32(getattr(sf_abi, name)(x, y))
                if np.isnan(ref):
                    assert got.view(U32) == QNAN, name
                else:
                    assert got.view(U32) == ref.view(U32), (name, x, y)
        assert np.float32(sf_abi.__negsf2(x)).view(U32) == (np.float32(x).view(U32) ^ U32(0x80000000))


def test_abi_comparison_conventions(sf_abi):
    """libgcc: eq/ne: 0 iff equal; lt/le: <0, 0, >0 and 2 if unordered;
    gt/ge: the same but -2 if unordered; unord: nonzero iff a NaN."""
    nan = float("nan")
    for x in ABI_VALUES:
        for y in ABI_VALUES:
            unordered = np.isnan(x) or np.isnan(y)
            eq = sf_abi.__eqsf2(x, y)
            ne = sf_abi.__nesf2(x, y)
            assert (eq == 0) == (not unordered and x == y)
            assert (ne != 0) == (unordered or x != y)
            assert (sf_abi.__ltsf2(x, y) < 0) == (not unordered and x < y)
            assert (sf_abi.__lesf2(x, y) <= 0) == (not unordered and x <= y)
            assert (sf_abi.__gtsf2(x, y) > 0) == (not unordered and x > y)
            assert (sf_abi.__gesf2(x, y) >= 0) == (not unordered and x >= y)
            assert (sf_abi.__unordsf2(x, y) != 0) == unordered
            if not unordered:
                three_way = (x > y) - (x < y)
                for name in ("__ltsf2", "__lesf2", "__gtsf2", "__gesf2"):
                    assert getattr(sf_abi, name)(x, y) == three_way
    assert sf_abi.__ltsf2(nan, 1.0) == 2 and sf_abi.__lesf2(1.0, nan) == 2
    assert sf_abi.__gtsf2(nan, 1.0) == -2 and sf_abi.__gesf2(1.0, nan) == -2
    assert sf_abi.__eqsf2(nan, nan) == 1 and sf_abi.__nesf2(nan, 1.0) == 1
    assert sf_abi.__eqsf2(0.0, -0.0) == 0 and sf_abi.__nesf2(0.0, -0.0) == 0


def test_abi_conversions(sf_abi):
    for i in (0, 1, -1, 16777217, -16777217, 2**31 - 1, -(2**31), 123456789):
        assert np.float32(sf_abi.__floatsisf(i)) == np.float32(i)
    for u in (0, 1, 2**32 - 1, 2**31, 16777217, 4294967041):
        assert np.float32(sf_abi.__floatunsisf(u)) == np.float32(np.uint32(u))
    for x, i in (
        (2.9, 2),
        (-2.9, -2),
        (0.5, 0),
        (-0.0, 0),
        (3e9, 2**31 - 1),
        (-3e9, -(2**31)),
        (float("inf"), 2**31 - 1),
        (float("nan"), 0),
    ):
        assert sf_abi.__fixsfsi(x) == i, x
    for x, u in ((2.9, 2), (-2.9, 0), (3e9, 3000000000), (5e9, 2**32 - 1), (float("nan"), 0)):
        assert sf_abi.__fixunssfsi(x) == u, x


def test_sources_compile_cleanly(tmp_path):
    """-Wall -Wextra -pedantic, C99, both with and without the ABI."""
    cc = _host_cc()
    for extra in ([], ["-DSOFTFLOAT_ABI"]):
        for src in SOURCES:
            r = subprocess.run(
                [
                    cc,
                    "-std=c99",
                    "-O2",
                    "-Wall",
                    "-Wextra",
                    "-pedantic",
                    "-Wshadow",
                    "-Wconversion",
                    "-Wno-sign-conversion",
                    *extra,
                    "-c",
                    str(src),
                    "-o",
                    str(tmp_path / "x.o"),
                ],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0 and r.stderr == "", r.stderr


# ---------------------------------------------------------------------------
# MIPS: freestanding soft-float build (needs mips-linux-gnu-gcc; the digest
# comparison also needs qemu-mips)
# ---------------------------------------------------------------------------

MIPS_CC = shutil.which("mips-linux-gnu-gcc")
MIPS_OBJDUMP = shutil.which("mips-linux-gnu-objdump")
MIPS_NM = shutil.which("mips-linux-gnu-nm")
QEMU_MIPS = shutil.which("qemu-mips") or shutil.which("qemu-mips-static")
needs_mips = pytest.mark.skipif(not (MIPS_CC and MIPS_OBJDUMP and MIPS_NM), reason="no MIPS cross toolchain")

# Linking: a static executable (the Debian cross gcc defaults to PIE) whose
# entry point is our _start (the MIPS default would be __start).
MIPS_LINK = ["-static", "-Wl,-e,_start"]

# FPU (coprocessor 1) mnemonics: loads/stores/moves to c1, and any x.fmt op.
COP1 = re.compile(
    r"^(lwc1|swc1|ldc1|sdc1|lwxc1|swxc1|mtc1|mfc1|mthc1|mfhc1|cfc1|ctc1|bc1[ft]l?|[a-z0-9]+\.(s|d|w|l|ps)|c\..+)$"
)


def _mips_objects(tmp_path) -> dict[str, Path]:
    objs = {}
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(
            [
                MIPS_CC,
                *MIPS_FLAGS,
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-DSOFTFLOAT_ABI",
                "-c",
                str(src),
                "-o",
                str(obj),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        objs[src.stem] = obj
    return objs


def _mnemonics(obj: Path) -> list[str]:
    dis = subprocess.run([MIPS_OBJDUMP, "-d", str(obj)], check=True, capture_output=True, text=True).stdout
    out = []
    for line in dis.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and re.match(r"^\s*[0-9a-f]+:$", parts[0]):
            out.append(parts[2].strip())
    return out


@needs_mips
def test_mips_build_has_no_fpu_or_helper_calls(tmp_path):
    objs = _mips_objects(tmp_path)
    for name, obj in objs.items():
        ops = _mnemonics(obj)
        assert ops, name
        fpu = sorted({m for m in ops if COP1.match(m)})
        assert not fpu, f"{name}.o uses FPU instructions: {fpu}"
    # softfloat.o needs nothing from outside (no __udivdi3, no memcpy, ...);
    # mathf.o needs only softfloat's sf_* functions.
    undefined = {}
    for name, obj in objs.items():
        nm = subprocess.run([MIPS_NM, "-u", str(obj)], check=True, capture_output=True, text=True).stdout
        undefined[name] = {line.split()[-1] for line in nm.splitlines() if line.strip()}
    assert undefined["softfloat"] == set()
    assert all(sym.startswith("sf_") for sym in undefined["mathf"]), undefined["mathf"]


@needs_mips
def test_mips_float_program_links_without_libgcc(tmp_path):
    """C code using float operators, -msoft-float, -nostdlib: every helper the
    compiler calls must come from softfloat.c, and double must fail to link."""
    prog = tmp_path / "prog.c"
    prog.write_text(
        "float f(float a, float b, float c, int i, unsigned u) {\n"
        "  float r = a * b + c; r = r / b; r = -r + (float)i + (float)u;\n"
        "  if (a < b || a <= c || a > c || a >= b || a == c || a != b || __builtin_isunordered(a, c))\n"
        "    r = r - (float)(int)a + (float)(unsigned)b;\n"
        "  return r;\n}\n"
        "void _start(void) { volatile float x = f(1.5f, 2.0f, 3.0f, 4, 5u); (void)x; for (;;) {} }\n"
    )
    elf = tmp_path / "prog.elf"
    r = subprocess.run(
        [
            MIPS_CC,
            *MIPS_FLAGS,
            *MIPS_LINK,
            "-DSOFTFLOAT_ABI",
            f"-I{CSRC}",
            str(prog),
            str(SOURCES[0]),
            "-o",
            str(elf),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert not any(COP1.match(m) for m in _mnemonics(elf))
    dis = subprocess.run([MIPS_OBJDUMP, "-d", str(elf)], check=True, capture_output=True, text=True).stdout
    called = set(re.findall(r"\bjal\s+[0-9a-f]+ <([^>]+)>", dis))
    assert {"__mulsf3", "__addsf3", "__divsf3", "__ltsf2", "__fixsfsi", "__floatsisf"} <= called, called
    # and a double anywhere makes the link fail (no __adddf3 etc.), as intended
    dbl = tmp_path / "dbl.c"
    dbl.write_text("double g(double a, double b) { return a * b; }\nvoid _start(void) { for (;;) {} }\n")
    r = subprocess.run(
        [
            MIPS_CC,
            *MIPS_FLAGS,
            *MIPS_LINK,
            "-DSOFTFLOAT_ABI",
            str(dbl),
            str(SOURCES[0]),
            "-o",
            str(tmp_path / "dbl.elf"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "__muldf3" in r.stderr


@needs_mips
@pytest.mark.skipif(QEMU_MIPS is None, reason="no qemu-mips")
def test_mips_digest_matches_host(sf, tmp_path):
    """The same mixed workload on MIPS (through the compiler's float operators
    and the ABI entry points) and on the host (sf_* directly): same bits."""
    seed, n = 20240601, scaled(20000)
    elf = tmp_path / "digest.elf"
    subprocess.run(
        [
            MIPS_CC,
            *MIPS_FLAGS,
            *MIPS_LINK,
            "-std=gnu99",
            "-DSOFTFLOAT_ABI",
            "-DHARNESS_C_FLOAT",
            "-DHARNESS_MIPS_MAIN",
            f"-DDIGEST_SEED={seed}",
            f"-DDIGEST_N={n}",
            f"-I{CSRC}",
            str(HARNESS),
            *map(str, SOURCES),
            "-o",
            str(elf),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert not any(COP1.match(m) for m in _mnemonics(elf))
    run = subprocess.run([QEMU_MIPS, str(elf)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip(), 16) == sf.lib.sf_digest(seed, n)
