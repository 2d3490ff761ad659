// One decode step of grouped-query attention on the KV cache, float32:
//   out[b, k, g, :] = softmax_s(q[b, k, g, :] · keys[b, k, :, s] / sqrt(d), allowed[b, s])
//                     · values[b, k, s, :]
// with the cache layouts of rlhf_jax.models.layers (keys [b, k, d, s], values
// [b, k, s, d]). Slots with allowed == 0 get the lowest float32 score, as in
// layers._attend, so a row with no allowed slot averages every slot. See
// rlhf_jax/kernels/decode_attention.py.
//
// Why: XLA:CPU runs the b·k tiny products of a decode step one library call
// (or one single-threaded fusion) at a time; here each (b, k) pair streams
// its keys and values once, only up to the row's last allowed slot, and the
// pairs are split between the threads of XLA's intra-op pool.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shapes {
  int64_t b, k, g, d, s;
};

// Attention of the g query heads that share kv head `kv` of batch row `row`.
void AttendOnePair(const Shapes& n, const float* q, const float* keys, const float* values,
                   const int32_t* allowed, float* out, int64_t row, int64_t kv,
                   std::vector<float>& scores) {
  const int64_t pair = row * n.k + kv;
  const float* q_gd = q + pair * n.g * n.d;
  const float* k_ds = keys + pair * n.d * n.s;
  const float* v_sd = values + pair * n.s * n.d;
  const int32_t* allowed_s = allowed + row * n.s;
  float* out_gd = out + pair * n.g * n.d;
  int64_t end = n.s;  // one past the last allowed slot; slots after it get no weight
  while (end > 0 && !allowed_s[end - 1]) --end;
  const bool none_allowed = end == 0;
  if (none_allowed) end = n.s;  // every score is the lowest float: a uniform average
  const float lowest = std::numeric_limits<float>::lowest();
  const float scale = 1.0f / std::sqrt(static_cast<float>(n.d));
  scores.assign(n.g * end, 0.0f);
  for (int64_t dd = 0; dd < n.d; ++dd) {
    const float* k_s = k_ds + dd * n.s;
    for (int64_t gi = 0; gi < n.g; ++gi) {
      const float qv = q_gd[gi * n.d + dd];
      float* row_scores = scores.data() + gi * end;
      for (int64_t j = 0; j < end; ++j) row_scores[j] += qv * k_s[j];
    }
  }
  for (int64_t gi = 0; gi < n.g; ++gi) {
    float* p = scores.data() + gi * end;
    float top = lowest;
    for (int64_t j = 0; j < end; ++j) {
      p[j] = (allowed_s[j] && !none_allowed) ? p[j] * scale : lowest;
      top = std::max(top, p[j]);
    }
    float total = 0.0f;
    for (int64_t j = 0; j < end; ++j) {
      p[j] = std::exp(p[j] - top);
      total += p[j];
    }
    float* o = out_gd + gi * n.d;
    std::fill(o, o + n.d, 0.0f);
    for (int64_t j = 0; j < end; ++j) {
      const float w = p[j] / total;
      if (w == 0.0f) continue;
      const float* v = v_sd + j * n.d;
      for (int64_t dd = 0; dd < n.d; ++dd) o[dd] += w * v[dd];
    }
  }
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> keys, ffi::Buffer<ffi::F32> values,
                           ffi::Buffer<ffi::S32> allowed, ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions();
  auto kd = keys.dimensions();
  auto vd = values.dimensions();
  auto ad = allowed.dimensions();
  auto od = out->dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || ad.size() != 2 || od.size() != 4 ||
      od[0] != qd[0] || od[1] != qd[1] || od[2] != qd[2] || od[3] != qd[3]) {
    return ffi::Error::InvalidArgument("decode_attention: expected q [b, k, g, d], keys "
                                       "[b, k, d, s], values [b, k, s, d], allowed [b, s], out [b, k, g, d]");
  }
  const Shapes n{qd[0], qd[1], qd[2], qd[3], kd[3]};
  if (kd[0] != n.b || kd[1] != n.k || kd[2] != n.d || vd[0] != n.b || vd[1] != n.k ||
      vd[2] != n.s || vd[3] != n.d || ad[0] != n.b || ad[1] != n.s) {
    return ffi::Error::InvalidArgument("decode_attention: q, keys, values and allowed disagree "
                                       "on b, k, d or s");
  }
  const float* qp = q.typed_data();
  const float* kp = keys.typed_data();
  const float* vp = values.typed_data();
  const int32_t* ap = allowed.typed_data();
  float* op = out->typed_data();
  const bool parallel = n.b * n.k * n.g * n.d * n.s >= (1 << 15);
  rlhf_jax::ParallelFor(pool, n.b * n.k, parallel, [&](int64_t first, int64_t last) {
    std::vector<float> scores;
    for (int64_t pair = first; pair < last; ++pair) {
      AttendOnePair(n, qp, kp, vp, ap, op, pair / n.k, pair % n.k, scores);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RlhfDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
