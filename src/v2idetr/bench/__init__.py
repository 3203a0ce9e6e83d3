"""Benchmarks: `v2idetr bench speed` (cost of baseline, student, teacher) and `bench accuracy` (the paper's tables)."""
