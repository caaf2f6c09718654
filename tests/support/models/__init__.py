"""Small pure-Python reference models: oracles for property tests and baselines for benchmarks."""
