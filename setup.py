"""rlhf_jax: JAX/Flax RLHF, after "A Long Way to Go: Investigating Length Correlations in RLHF"."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "transformers>=5.24",  # tokenizers and configs only: v5 has no Flax models
    "tokenizers>=0.23",
    "tensorflow-datasets>=4.9.10",  # builders read with tfds.data_source; no tensorflow needed
    "grain>=0.2.18",
    "ml-collections>=1.1.0",
    "safetensors>=0.8.0",
    "gguf>=0.19.0",
    "numpy>=2.0",
    "scipy>=1.11",  # the synthetic task's sigmoid, reward–length correlations
    "pyarrow>=14",  # Parquet sources (already a tensorflow-datasets dependency)
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.8",  # cartography and analysis plots
    "statsmodels>=0.14",  # LOWESS of post-hoc reward calibration (rlhf_jax.reward.calibration)
]

# torch is pinned to the CPU build that the test machines carry as a file: a bare
# `torch` requirement would pull a multi-GB CUDA build.
BENCH = [
    "torch==2.13.0",
    "trl==0.11.4",  # the last release with the old-style PPOTrainer the paper used (TRL 0.5's API)
]

TEST = [
    *BENCH,  # the TRL/PyTorch comparison's harness test
    "pytest>=8",
    "torch==2.13.0",
    "accelerate>=1.0",  # transformers needs it to load a GGUF file (the PyTorch reference)
    "playwright>=1.50",  # drives a system Chromium to render the HTML report (no browser download)
    "peft>=0.13",  # the reference that loads our LoRA adapter exports (pulls no CUDA: torch is pinned)
    "alpaca-eval>=0.6.6",  # the reference for the length-controlled win rate (pulls no torch)
    "jax[tpu]>=0.10.2",  # libtpu matching jax: `rlhf-jax fit` compiles for TPU topologies on CPU
]

setup(
    name="rlhf_jax",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["rlhf_jax", "rlhf_jax.*"]),
    package_data={"rlhf_jax.kernels": ["*.cc", "*.h"]},  # compiled on first use (see panel_matmul.py)
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "bench": BENCH,
        "tpu": ["jax[tpu]>=0.10.2"],
        "cuda": ["jax[cuda12]>=0.10.2"],
    },
    entry_points={"console_scripts": ["rlhf-jax=rlhf_jax.cli:main"]},
)
