"""NumPy peer of `stages/examples/bench_theory.rs`: the Figure 5 simulation, d = 1000, M = 10,000.

Same algorithm (r* = signal·z/‖z‖, log-uniform variances, r̂ = r* + Σ^{1/2}ξ, returns of
Definitions 3.1 and 3.2, P(wᵀr* ≤ 0) beside Theorem 3.3), vectorised over blocks of draws.
NumPy's generator differs from the Rust one, so the numbers agree statistically, not bitwise.

    python3 -m venv /tmp/np && /tmp/np/bin/pip install numpy
    /tmp/np/bin/python scripts/bench_theory_numpy.py [RUNS]
"""

import math
import sys
import time

import numpy as np


def phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def simulate(d=1000, draws=10_000, seed=0, signal=0.4, var_range=(0.01, 1.0), eps=1.0, block=1000):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(d)
    r_star = signal * z / np.linalg.norm(z)
    lo, hi = np.log(var_range[0]), np.log(var_range[1])
    var = np.exp(lo + rng.random(d) * (hi - lo))
    sd, inv = np.sqrt(var), 1.0 / var
    eps_prime = var.min() * eps
    ret_van = np.empty(draws)
    ret_va = np.empty(draws)
    for start in range(0, draws, block):
        n = min(block, draws - start)
        r_hat = r_star + sd * rng.standard_normal((n, d))
        a = r_hat @ r_star
        b = np.einsum("ij,ij->i", r_hat, r_hat)
        p = r_hat @ (inv * r_star)
        q = np.einsum("ij,ij,j->i", r_hat, r_hat, inv)
        ret_van[start:start + n] = math.sqrt(eps) * a / np.sqrt(b)
        ret_va[start:start + n] = math.sqrt(eps_prime) * p / np.sqrt(q)
    p_van = phi(-(r_star @ r_star) / math.sqrt(r_star @ (var * r_star)))
    p_va = phi(-math.sqrt(r_star @ (inv * r_star)))
    return ret_van, ret_va, p_van, p_va


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    for name, rng_ in [("High", (0.01, 1.0)), ("Low", (0.09, 0.11))]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            van, va, p_van, p_va = simulate(var_range=rng_)
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"{name}: numpy {np.__version__}: median {1e3 * times[len(times) // 2]:.1f} ms "
              f"(min {1e3 * times[0]:.1f}, max {1e3 * times[-1]:.1f}) over {runs} runs")
        for label, ret, p in [("vanilla", van, p_van), ("variance-aware", va, p_va)]:
            mc = float(np.mean(ret <= 0))
            se = math.sqrt(p * (1 - p) / len(ret))
            print(f"  {label:>14}: mean {ret.mean():+.5f}, std {ret.std(ddof=1):.5f}, "
                  f"P MC {mc:.4f} ± {se:.4f} vs Thm 3.3 {p:.4f}")


if __name__ == "__main__":
    main()
