// y[m, n] = x[m, k] · W[k, n] for float32, with W pre-packed as column panels
// P[n / 16, k, 16] (the last panel zero-padded). See rlhf_jax/kernels/panel_matmul.py.
//
// Why: a decode step multiplies a few rows (the batch) by every weight matrix.
// Streaming each 16-column panel once, contiguously, while up to 16 rows of x
// stay in registers, keeps the step near the memory bound; the panels are
// split between the threads of XLA's intra-op pool.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;  // columns per panel
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Rows of x per register block: 16 accumulators fit AVX-512's 32 registers;
// without AVX-512 a 16-float vector is two AVX registers, so fewer rows.
#if defined(RLHF_JAX_PANEL_ROWS)
constexpr int kRows = RLHF_JAX_PANEL_ROWS;
#elif defined(__AVX512F__)
constexpr int kRows = 16;
#else
constexpr int kRows = 4;
#endif

constexpr int64_t kPrefetchRows = 64;  // panel rows (4 KiB) read ahead of the FMAs

// x is first copied into blocks of up to kRows rows, each transposed to
// [k, rows], so a block's values for one k are adjacent and a single pointer
// addresses all of them.
template <int R>
inline void AccumulateRow(const float* xt, const float* panel, int64_t j, Vec* acc) {
  Vec w;
  std::memcpy(&w, panel + j * kLanes, sizeof(Vec));
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] += xt[j * R + r] * w;
}

template <int R>
void PanelBlock(const float* xt, int64_t k, const float* panel, float* y, int64_t n,
                int64_t col0) {
  Vec acc[R];
  for (int r = 0; r < R; ++r) acc[r] = Vec{};
  int64_t j = 0;
  for (; j + kPrefetchRows < k; ++j) {  // prefetching, within the panel array
    __builtin_prefetch(panel + (j + kPrefetchRows) * kLanes);
    AccumulateRow<R>(xt, panel, j, acc);
  }
  for (; j < k; ++j) AccumulateRow<R>(xt, panel, j, acc);
  const int64_t width = std::min<int64_t>(kLanes, n - col0);
  for (int r = 0; r < R; ++r) std::memcpy(y + r * n + col0, &acc[r], width * sizeof(float));
}

template <int R>
void RowsTimesPanel(const float* xt, int64_t rows, int64_t k, const float* panel, float* y,
                    int64_t n, int64_t col0) {
  if constexpr (R > 1) {
    if (rows < R) return RowsTimesPanel<R - 1>(xt, rows, k, panel, y, n, col0);
  }
  PanelBlock<R>(xt, k, panel, y, n, col0);
}

void TransposeRowBlocks(const float* x, int64_t m, int64_t k, float* xt) {
  for (int64_t r0 = 0; r0 < m; r0 += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, m - r0);
    float* block = xt + r0 * k;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + (r0 + r) * k;
      for (int64_t j = 0; j < k; ++j) block[j * rows + r] = row[j];
    }
  }
}

void Panels(const float* xt, int64_t m, int64_t k, const float* packed, float* y, int64_t n,
            int64_t first, int64_t last) {
  for (int64_t p = first; p < last; ++p) {
    const float* panel = packed + p * k * kLanes;
    for (int64_t r0 = 0; r0 < m; r0 += kRows) {
      RowsTimesPanel<kRows>(xt + r0 * k, std::min<int64_t>(kRows, m - r0), k, panel,
                            y + r0 * n, n, p * kLanes);
    }
  }
}

ffi::Error PanelMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                       ffi::Buffer<ffi::F32> packed, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto pd = packed.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || pd.size() != 3 || yd.size() != 2 || pd[2] != kLanes || pd[1] != xd[1] ||
      yd[0] != xd[0] || (yd[1] + kLanes - 1) / kLanes != pd[0]) {
    return ffi::Error::InvalidArgument(
        "panel_matmul: expected x [m, k], packed [ceil(n/16), k, 16], y [m, n]");
  }
  const int64_t m = xd[0], k = xd[1], n = yd[1];
  std::unique_ptr<float[]> xt(new float[m * k]);
  TransposeRowBlocks(x.typed_data(), m, k, xt.get());
  const float* panels = packed.typed_data();
  float* out = y->typed_data();
  rlhf_jax::ParallelFor(pool, pd[0], m * k * n >= (1 << 16), [&](int64_t first, int64_t last) {
    Panels(xt.get(), m, k, panels, out, n, first, last);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RlhfPanelMatmul, PanelMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
