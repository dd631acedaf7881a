"""``kwmlp bench``: backends side by side on a batch x duration grid (``kwmlp.benchmarks``).

Outside the runtime's code path: nothing in ``kwmlp.runtime`` imports this package. Each
(backend, workload) pair runs in its own process (:mod:`kwmlp.benchmarks.worker`) so that
peak RSS is that of one backend on one workload.
"""
