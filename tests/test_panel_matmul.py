"""The CPU panel matmul (an XLA FFI kernel) against a float64 NumPy product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.kernels import build
from rlhf_jax.kernels import panel_matmul as pm

needs_kernel = pytest.mark.skipif(not pm.available(), reason=f"panel kernel: {pm.unavailable_reason()}")


@pytest.mark.parametrize("k,n", [(1, 1), (7, 16), (100, 33), (576, 200)])
def test_pack_then_unpack_is_the_identity(k, n):
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    packed = pm.pack_panels(jnp.asarray(w))
    assert packed.shape == (-(-n // 16), k, 16)
    np.testing.assert_array_equal(np.asarray(packed[0, :, : min(n, 16)]), w[:, :16])  # panel 0
    padding = np.asarray(packed).transpose(1, 0, 2).reshape(k, -1)[:, n:]
    assert not padding.any()
    np.testing.assert_array_equal(np.asarray(pm.unpack_panels(packed, n)), w)


@needs_kernel
@pytest.mark.parametrize("m", [1, 3, 16, 17, 40])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 15), (64, 16), (100, 33), (576, 200)])
def test_matches_numpy(m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    y = jax.jit(pm.panel_matmul, static_argnums=2)(jnp.asarray(x), pm.pack_panels(jnp.asarray(w)), n)
    ref = x.astype(np.float64) @ w.astype(np.float64)
    # float32 accumulation over k terms of size ~1: error grows like sqrt(k) · 2^-24 · |terms|
    np.testing.assert_allclose(np.asarray(y), ref, rtol=0, atol=2e-6 * k)


@needs_kernel
def test_leading_axes_and_a_large_call_across_threads():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 8, 576)).astype(np.float32)  # 32 rows: two register blocks
    w = rng.standard_normal((576, 1536)).astype(np.float32)
    y = jax.jit(pm.panel_matmul, static_argnums=2)(jnp.asarray(x), pm.pack_panels(jnp.asarray(w)), 1536)
    assert y.shape == (4, 8, 1536)
    np.testing.assert_allclose(np.asarray(y), np.einsum("abk,kn->abn", x.astype(np.float64), w),
                               rtol=0, atol=2e-6 * 576)


@needs_kernel
@pytest.mark.parametrize("m", [1, 16, 19])
def test_several_products_in_one_call(m):
    """q/k/v-like widths (one not a multiple of 16), split between the threads as one sequence."""
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, 576)).astype(np.float32)
    ws = [rng.standard_normal((576, n)).astype(np.float32) for n in (576, 192, 200)]
    weights = [(pm.pack_panels(jnp.asarray(w)), w.shape[1]) for w in ws]
    ys = jax.jit(lambda x, ps: pm.panel_matmuls(x, [(p, w.shape[1]) for p, w in zip(ps, ws)]))(
        jnp.asarray(x), [p for p, _ in weights])
    assert [y.shape for y in ys] == [(m, 576), (m, 192), (m, 200)]
    for y, w in zip(ys, ws):
        np.testing.assert_allclose(np.asarray(y), x.astype(np.float64) @ w, rtol=0, atol=2e-6 * 576)


@needs_kernel
def test_inside_a_while_loop_matches_xla():
    """The decode loop calls the kernel from a ``lax.while_loop`` body."""
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.standard_normal((64, 64)).astype(np.float32) / 8)
    packed = pm.pack_panels(w)
    x0 = jnp.asarray(rng.standard_normal((16, 64)).astype(np.float32))

    def run(mm):
        return jax.jit(lambda x: jax.lax.fori_loop(0, 5, lambda i, x: jnp.tanh(mm(x)), x))(x0)

    ours = run(lambda x: pm.panel_matmul(x, packed, 64))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(run(lambda x: x @ w)), atol=1e-5)


def test_bad_shapes_and_dtypes_are_named():
    packed = jnp.zeros((2, 8, 16), jnp.float32)
    with pytest.raises(ValueError, match=r"\[2, 8, 16\]|\(2, 8, 16\)"):
        pm.panel_matmul(jnp.zeros((3, 9), jnp.float32), packed, 32)
    with pytest.raises(ValueError, match="ceil"):
        pm.panel_matmul(jnp.zeros((3, 8), jnp.float32), packed, 40)
    with pytest.raises(TypeError, match="float32"):
        pm.panel_matmul(jnp.zeros((3, 8), jnp.bfloat16), packed, 32)
    with pytest.raises(ValueError, match=r"\(1, 9, 16\)"):  # the second product's panels
        pm.panel_matmuls(jnp.zeros((3, 8), jnp.float32), [(packed, 32), (jnp.zeros((1, 9, 16)), 16)])


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("RLHF_JAX_CPU_KERNELS", "0")
    assert build._why_not("panel_matmul", ()) == "RLHF_JAX_CPU_KERNELS=0"


def test_a_failing_compiler_is_reported(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert "failed" in build._why_not("panel_matmul", ())


@needs_kernel
def test_a_build_is_cached_per_machine(tmp_path, monkeypatch):
    import shutil
    monkeypatch.setenv("RLHF_JAX_CACHE", str(tmp_path))
    compiler = shutil.which("g++") or shutil.which("clang++")
    first = build.build(build.os.path.join(build.HERE, "panel_matmul.cc"), compiler)
    assert first.startswith(str(tmp_path)) and first.endswith(".so")
    stamp = build.os.path.getmtime(first)
    assert build.build(build.os.path.join(build.HERE, "panel_matmul.cc"), compiler) == first
    assert build.os.path.getmtime(first) == stamp
    assert not list(tmp_path.glob("kernels/*.tmp"))


def test_decoding_view_keeps_xla_when_the_kernel_is_unavailable(monkeypatch):
    from rlhf_jax.generate import decoding_view
    from rlhf_jax.models import CausalLM, config_from_hf, init_params
    from rlhf_jax.models.presets import preset_config
    monkeypatch.setattr(pm, "available", lambda: False)
    cfg = config_from_hf(preset_config("tiny-llama"))
    model = CausalLM(cfg)
    params = init_params(model, jax.random.key(0))
    view, view_params = decoding_view(model, params)
    assert not view.kernels == "cpu_panels"
    assert view_params["model"]["layers_0"]["mlp"]["up_proj"].shape == (cfg.hidden_size,
                                                                        cfg.intermediate_size)


@needs_kernel
@pytest.mark.parametrize("flags", [("-mno-avx512f",), ("-DRLHF_JAX_PANEL_ROWS=5",)],
                         ids=["no-avx512", "5-row-blocks"])
def test_other_builds_of_the_kernel(flags, tmp_path, monkeypatch):
    """The portable path (4-row blocks where AVX-512 is missing) and an odd block size."""
    import ctypes
    import shutil
    monkeypatch.setenv("RLHF_JAX_CACHE", str(tmp_path))
    compiler = shutil.which("g++") or shutil.which("clang++")
    library = build.build(build.os.path.join(build.HERE, "panel_matmul.cc"), compiler, flags)
    target = f"test_panel_matmul_{abs(hash(flags))}"
    handler = ctypes.cdll.LoadLibrary(library).RlhfPanelMatmul
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
    rng = np.random.default_rng(3)
    for m, k, n in [(1, 7, 15), (5, 64, 33), (16, 100, 200), (17, 576, 48)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((k, n)).astype(np.float32)
        call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((m, n), jnp.float32))
        y = jax.jit(call)(jnp.asarray(x), pm.pack_panels(jnp.asarray(w)))
        np.testing.assert_allclose(np.asarray(y), x.astype(np.float64) @ w, rtol=0, atol=2e-6 * k)


@pytest.mark.parametrize("setting,flags,want", [
    ("auto", "flags : fpu sse2 avx2 fma", False), ("auto", "flags : fpu avx2 avx512f avx512bw", True),
    ("1", "flags : fpu avx2", True), ("0", "flags : avx512f", False)])
def test_kernels_are_used_by_default_only_where_they_pay(monkeypatch, setting, flags, want):
    # Without AVX-512 the panel kernel's 4-row path measured ~3x slower than XLA's matmul.
    from rlhf_jax.kernels import build
    monkeypatch.setenv("RLHF_JAX_CPU_KERNELS", setting)
    monkeypatch.setattr(build, "_cpu_flags", lambda: flags)
    assert build.profitable_here() is want
