// y[m, n] = x[m, k] · W[k, n] for float32, with W pre-packed as column panels
// P[n / 16, k, 16] (the last panel zero-padded); one call can multiply x by
// several such W. See rlhf_jax/kernels/panel_matmul.py.
//
// Why: a decode step multiplies a few rows (the batch) by every weight matrix.
// Streaming each 16-column panel once, contiguously, while up to 16 rows of x
// stay in registers, keeps the step near the memory bound; the panels are
// split between the threads of XLA's intra-op pool.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

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

// One product of a call: W packed as `panels` panels of k x 16, and its output y[m, n].
struct Product {
  const float* packed;
  float* y;
  int64_t n, panels;
};

void Panels(const float* xt, int64_t m, int64_t k, const Product& product, int64_t first,
            int64_t last) {
  for (int64_t p = first; p < last; ++p) {
    const float* panel = product.packed + p * k * kLanes;
    for (int64_t r0 = 0; r0 < m; r0 += kRows) {
      RowsTimesPanel<kRows>(xt + r0 * k, std::min<int64_t>(kRows, m - r0), k, panel,
                            product.y + r0 * product.n, product.n, p * kLanes);
    }
  }
}

// y_i = x · W_i for every packed W_i of the call: x is transposed once and the
// panels of all the products are split between the threads as one sequence.
ffi::Error PanelMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::RemainingArgs packed,
                       ffi::RemainingRets ys) {
  auto xd = x.dimensions();
  if (xd.size() != 2 || packed.size() == 0 || packed.size() != ys.size()) {
    return ffi::Error::InvalidArgument(
        "panel_matmul: expected x [m, k] and one output per packed weight");
  }
  const int64_t m = xd[0], k = xd[1];
  std::vector<Product> products;
  int64_t total_panels = 0;
  for (size_t i = 0; i < packed.size(); ++i) {
    auto w = packed.get<ffi::Buffer<ffi::F32>>(i);
    auto y = ys.get<ffi::Buffer<ffi::F32>>(i);
    if (!w.has_value() || !y.has_value()) {
      return ffi::Error::InvalidArgument("panel_matmul: weights and outputs must be float32");
    }
    auto pd = w->dimensions();
    auto yd = (*y)->dimensions();
    if (pd.size() != 3 || yd.size() != 2 || pd[2] != kLanes || pd[1] != k || yd[0] != m ||
        (yd[1] + kLanes - 1) / kLanes != pd[0]) {
      return ffi::Error::InvalidArgument(
          "panel_matmul: expected x [m, k], packed [ceil(n/16), k, 16], y [m, n]");
    }
    products.push_back({w->typed_data(), (*y)->typed_data(), yd[1], pd[0]});
    total_panels += pd[0];
  }
  std::unique_ptr<float[]> xt(new float[m * k]);
  TransposeRowBlocks(x.typed_data(), m, k, xt.get());
  const bool parallel = m * k * total_panels * kLanes >= (1 << 16);
  rlhf_jax::ParallelFor(pool, total_panels, parallel, [&](int64_t first, int64_t last) {
    int64_t offset = 0;  // panels of the products before `product`
    for (const Product& product : products) {
      const int64_t begin = std::max(first, offset), end = std::min(last, offset + product.panels);
      if (begin < end) Panels(xt.get(), m, k, product, begin - offset, end - offset);
      offset += product.panels;
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RlhfPanelMatmul, PanelMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets());
