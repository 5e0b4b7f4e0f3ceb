#!/usr/bin/env python3
"""Fits the rational approximation of erf that backends/candle/src/fused.rs uses for exact GELU.

erf(x) ~ x * P(x^2) / Q(x^2) on [0, 3.92] (erf is odd; past 3.92 it rounds to 1 in f32), with
P of degree 5 and Q of degree 5 in x^2, Q(0) = 1. The fit is linearised least squares in the
relative error (minimise |x P - erf * Q| / erf, reweighted by 1/Q until it settles) on
Chebyshev-spaced points. Prints the coefficients and the largest error of the fit evaluated in
float32 (Horner, as the kernel does) against math.erf.

usage: python3 scripts/fit_erf.py        (needs numpy)
"""
from math import erf

import numpy as np

LIMIT = 3.92
DEG_P, DEG_Q = 6, 5  # coefficients of P; degree of Q


def main():
    verf = np.vectorize(erf)
    x = np.cos(np.linspace(0, np.pi, 20001)) * LIMIT / 2 + LIMIT / 2
    x = x[x > 1e-6]
    y = verf(x)
    u = x * x
    weight = np.ones_like(x)
    for _ in range(30):
        a = np.hstack([
            np.stack([x * u**i for i in range(DEG_P)], 1),
            np.stack([-y * u**i for i in range(1, DEG_Q + 1)], 1),
        ])
        w = weight / np.abs(y)
        c, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
        p, q = c[:DEG_P], np.concatenate([[1.0], c[DEG_P:]])
        weight = 1 / np.abs(sum(q[i] * u**i for i in range(DEG_Q + 1)))
    xs = np.linspace(0, LIMIT, 200001).astype(np.float32)
    us = xs * xs
    num = np.zeros_like(xs)
    den = np.zeros_like(xs)
    for k in p[::-1]:
        num = (num * us + np.float32(k)).astype(np.float32)
    for k in q[::-1]:
        den = (den * us + np.float32(k)).astype(np.float32)
    got = (xs * num / den).astype(np.float32)
    err = np.abs(got - verf(xs.astype(np.float64)))
    print("P:", [float(v) for v in p])
    print("Q:", [float(v) for v in q])
    print(f"largest error in float32: {err.max():.3g} at x = {xs[err.argmax()]:.4f}")


if __name__ == "__main__":
    main()
