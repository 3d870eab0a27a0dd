"""mutualnet_jax: MutualNet (Yang et al., ECCV 2020) in JAX/Flax, for TPU VMs and pods."""

from setuptools import find_packages, setup

setup(
    name='mutualnet_jax',
    version='0.1.0',
    description='MutualNet: width-resolution mutual learning for slimmable networks, in JAX.',
    packages=find_packages(include=['mutualnet_jax', 'mutualnet_jax.*']),
    python_requires='>=3.11',       # JAX 0.7 and later need it (0.11 and later: 3.12)
    install_requires=[
        # No upper cap: a TPU user's newer JAX (and its libtpu) must not be downgraded. CPU CI
        # runs 0.10.2 (the newest for Python 3.11); see README, "Versions".
        'jax>=0.8',
        'flax>=0.10',
        'optax>=0.2.5',               # optax.tree.norm
        'orbax-checkpoint>=0.11',
        'etils[epath]',
        'ml-collections>=1.0',
        'clu>=0.0.12',
        'tensorflow-cpu>=2.16',
        'tensorflow-datasets>=4.9.7',
        'tensorboard>=2.16',
        'scikit-learn>=1.3',
        'matplotlib>=3.7',
        'absl-py',
        'numpy',
        'pillow',
    ],
    extras_require={
        'torch': ['torch==2.13.0'],
        # The elastic LiteRT file: its export (--elastic) and its runtime, mutualnet_jax.deploy,
        # which needs nothing else (interop/litert.py runs copied alone, without JAX or TF).
        'deploy': ['numpy', 'ai-edge-litert>=2.0'],
        # The TPU plan's tests compile for a TPU with libtpu: jax's own tpu extra, so libtpu's
        # version is the one the installed JAX pins (Linux wheels only).
        'tpu_plan': ['jax[tpu]; sys_platform == "linux"'],
        'test': ['pytest>=8', 'pytest-xdist>=3', 'nbclient>=0.10', 'nbformat>=5.9', 'ipykernel>=6',
                 'torch==2.13.0', 'ai-edge-litert>=2.0', 'jax[tpu]; sys_platform == "linux"'],
    },
)
