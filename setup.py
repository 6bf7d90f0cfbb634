"""Installable package for the JAX paper reimplementations (plain setuptools)."""

from setuptools import find_packages, setup

setup(
    name="jax-papers",
    version="0.1.0",
    description="JAX reimplementations of ten ML papers, shared kernels, experiment machinery.",
    python_requires=">=3.11",
    packages=find_packages(include=["ops*", "models*", "research*", "experiments*"]),
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "jraph>=0.0.6.dev0",
        "orbax-checkpoint>=0.12.8",
        "absl-py>=2.5",
        "ml_collections>=1.1",
        "numpy>=2.0",
        "scipy>=1.13",
        "matplotlib>=3.9",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "diffrax>=0.7",
        "optimistix>=0.1",
        "scikit-learn>=1.5",
        "threadpoolctl>=3.5",
        "trimesh>=4.0",
        "h5py>=3.10",  # video features in one HDF5 file (ssrn)
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3",
            "hypothesis>=6.100",
            "scikit-image>=0.24",  # the SSIM reference in the tests
            "ruff>=0.6",
            "tensorboard>=2.17",
        ],
        "gpu": ["jax[cuda13]"],
    },
)
