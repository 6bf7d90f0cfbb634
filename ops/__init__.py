"""Kernels shared across papers. Depends on jax only (see ops/README.md)."""
