"""AMM-NRR: robust non-rigid registration by Anderson-accelerated majorization-minimization."""
