"""The error function as a primitive op (exact GELU needs it; NumPy has no erf).

Forward: piecewise polynomials evaluated in float64 on any array module (NumPy or
CuPy), within 3 ulp of the correctly rounded erf on the whole real line:

    |x| < 1:        erf(x) = x * P(t),                 t = 2 x^2 - 1
    1 <= |x| < 6:   erf(x) = 1 - exp(-x^2) * Q_i(t),   t maps the piece [lo, hi] onto [-1, 1]
    |x| >= 6:       erf(x) = 1                         (erfc(6) = 2e-17 is below half an ulp of 1)

P(x^2) = erf(x) / x and Q = erfcx(x) = exp(x^2) erfc(x) are smooth, so their Chebyshev
interpolants converge fast; the tables below are those interpolants rewritten in powers
of t, computed in 50-digit arithmetic by ``derive_tables()`` (``python -m
gpugrad.ops.special`` prints them; needs mpmath) and rounded once to float64.

VJP: d erf(x) / dx = 2 / sqrt(pi) * exp(-x^2), written against ``xp`` so that
create_graph runs it on Tensors.
"""

from __future__ import annotations

import math
from typing import Any

from ..tensor import Tensor
from .registry import defop
from .samples import Sample, samples, uniform

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# erf(x) / x as a polynomial in t = 2 x^2 - 1, for |x| < 1 (degree 12)
_SMALL = (
    0.9654687386698673, -0.1405360890227171, 0.019852496688983708, -0.0022854855611441132,
    0.00021751715604159932, -1.7537169441124866e-05, 1.223382738359897e-06, -7.511569286591727e-08,
    4.115800583208149e-09, -2.035228405815769e-10, 9.167619596865806e-12, -3.8078824063194953e-13,
    1.4543887079465116e-14,
)

# (lo, hi, coefficients): erfcx(x) on [lo, hi) as a polynomial in t = (2x - lo - hi) / (hi - lo)
_PIECES = (
    (1.0, 2.0, (
        0.3215854164543175, -0.08181145886628004, 0.019037759963869347, -0.004116363162445329,
        0.0008360838095667819, -0.0001608111733745461, 2.9470857452441112e-05, -5.171328643696019e-06,
        8.723044760263366e-07, -1.4191195815474282e-07, 2.232841289840529e-08, -3.405755489104501e-09,
        5.04660275957676e-10, -7.276757137420257e-11, 1.0198183507810793e-11, -1.3992758101971656e-12,
        2.0291817549924027e-13, -2.653391343981901e-14)),
    (2.0, 3.5, (
        0.19366209627906866, -0.04742822817047613, 0.011114208555372547, -0.0025035488002965733,
        0.0005440864558202282, -0.0001144271539438872, 2.3347542710787384e-05, -4.631705362630414e-06,
        8.950228299200691e-07, -1.6874296710210136e-07, 3.108847874611232e-08, -5.602221787184144e-09,
        9.830016377967729e-10, -1.7015215137129228e-10, 3.2417475610132607e-11, -5.385460413068287e-12)),
    (3.5, 6.0, (
        0.11630270720874594, -0.02937931074738784, 0.007283322559551635, -0.0017736306810065216,
        0.0004246283921258537, -0.00010002348159172998, 2.320293686763271e-05, -5.301489483439786e-06,
        1.1836892333155736e-06, -2.6307219038321453e-07, 6.69166219190287e-08, -1.44321878390458e-08)),
)
_DEGREES = (12, 17, 15, 11)


def _polyval(coeffs: tuple[float, ...], t: Any) -> Any:
    """Horner's rule, in place on one fresh array."""
    r = t * coeffs[-1]
    r += coeffs[-2]
    for c in coeffs[-3::-1]:
        r *= t
        r += c
    return r


def erf_array(xp: Any, x: Any) -> Any:
    """erf of an array (NumPy or CuPy), computed in float64 and returned in x's dtype.

    Every piece is evaluated on every element (at |x| clamped into the piece) and the
    right one picked with where: boolean-mask gathers would make a GPU wait for the host
    to learn each piece's size.
    """
    a = xp.abs(x.astype(xp.float64, copy=False))
    s = xp.minimum(a, 1.0)
    out = xp.where(a < 1.0, s * _polyval(_SMALL, 2.0 * s * s - 1.0), 1.0)   # 1 for |x| >= 6 (and inf)
    for lo, hi, coeffs in _PIECES:
        s = xp.clip(a, lo, hi)
        # NOTE: exp(-x^2) loses ~x^2 ulp to the rounding of x^2, but erfc(x) <= 0.16 here,
        # so that error stays below 1e-17 of the result.
        piece = 1.0 - xp.exp(-(s * s)) * _polyval(coeffs, (2.0 * s - (lo + hi)) / (hi - lo))
        out = xp.where((a >= lo) & (a < hi), piece, out)
    out = xp.where(xp.isnan(a), a, out)
    out = xp.copysign(out, x.astype(xp.float64, copy=False))     # erf is odd; erf(-0.0) = -0.0
    return out.astype(x.dtype, copy=False)


def _sample(shape: tuple, lo: float, hi: float):
    return lambda rng: Sample([uniform(rng, lo, hi, shape)], name=f"{shape}-from-{lo}-to-{hi}")


@defop(save=("x",), float_inputs=True, samples=samples(
    _sample((), -0.8, 0.8), _sample((5,), -4.0, 4.0), _sample((2, 3), -1.5, 1.5), _sample((3, 4), -6.5, 6.5)),
       batch="elementwise")
def _erf(xp, x):
    return erf_array(xp, x)


@_erf.vjp
def _(xp, g, out, x):
    return (g * (_TWO_OVER_SQRT_PI * xp.exp(-(x * x))),)       # d erf / dx = 2/sqrt(pi) exp(-x^2)


def erf(x: Any) -> Tensor:
    """The error function, elementwise; differentiable to any order."""
    return _erf(x)


def derive_tables(digits: int = 50) -> tuple[tuple[float, ...], tuple]:
    """Recompute ``_SMALL`` and ``_PIECES`` with mpmath (a development tool, not used at run time)."""
    import mpmath as mp  # noqa: PLC0415 - optional, only for regenerating the tables

    mp.mp.dps = digits

    def power_fit(f: Any, lo: Any, hi: Any, degree: int) -> tuple[float, ...]:
        # Chebyshev interpolant at degree + 1 Chebyshev nodes, converted exactly to powers of t
        n = degree + 1
        half = mp.mpf(1) / 2
        nodes = [mp.cos(mp.pi * (k + half) / n) for k in range(n)]
        values = [f((hi - lo) / 2 * t + (hi + lo) / 2) for t in nodes]
        cheb = [2 * mp.fsum(v * mp.cos(mp.pi * j * (k + half) / n) for k, v in enumerate(values)) / n
                for j in range(n)]
        cheb[0] /= 2
        basis = [[mp.mpf(1)], [mp.mpf(0), mp.mpf(1)]]        # T_0, T_1 as power series in t
        for k in range(2, n):
            nxt = [mp.mpf(0)] + [2 * v for v in basis[k - 1]]   # T_k = 2 t T_{k-1} - T_{k-2}
            for i, v in enumerate(basis[k - 2]):
                nxt[i] -= v
            basis.append(nxt)
        power = [mp.mpf(0)] * n
        for c, t in zip(cheb, basis):
            for i, v in enumerate(t):
                power[i] += c * v
        return tuple(float(v) for v in power)

    def erf_over_x(s: Any) -> Any:
        return 2 / mp.sqrt(mp.pi) if s == 0 else mp.erf(mp.sqrt(s)) / mp.sqrt(s)

    def erfcx(x: Any) -> Any:
        return mp.erfc(x) * mp.exp(x * x)

    small = power_fit(erf_over_x, mp.mpf(0), mp.mpf(1), _DEGREES[0])
    pieces = tuple((lo, hi, power_fit(erfcx, mp.mpf(lo), mp.mpf(hi), deg))
                   for (lo, hi, _), deg in zip(_PIECES, _DEGREES[1:]))
    return small, pieces


if __name__ == "__main__":
    small_table, piece_tables = derive_tables()
    print("_SMALL =", small_table)
    for piece in piece_tables:
        print(piece)
