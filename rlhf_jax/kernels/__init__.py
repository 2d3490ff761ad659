"""Hand-written kernels that XLA calls as FFI custom calls, each with an XLA fallback."""
