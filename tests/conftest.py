"""Shared test set-up: CPU only, one device unless a test spawns its own process."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
