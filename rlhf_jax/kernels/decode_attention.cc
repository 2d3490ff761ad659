// One decode step of grouped-query attention on the KV cache, float32:
//   out[b, k, g, :] = softmax_s(q[b, k, g, :] · keys[b, k, :, s] / sqrt(d), allowed[b, s])
//                     · values[b, k, s, :]
// with the cache layouts of rlhf_jax.models.layers (keys [b, k, d, s], values
// [b, k, s, d]). Slots with allowed == 0 get the lowest float32 score, as in
// layers._attend, so a row with no allowed slot averages every slot. A second
// entry point first writes the step's key and value into the cache, in place.
// See rlhf_jax/kernels/decode_attention.py.
//
// Why: XLA:CPU runs the b·k tiny products of a decode step one library call
// (or one single-threaded fusion) at a time; here each (b, k) pair streams
// its keys and values once, only up to the row's last allowed slot, with the
// next rows prefetched (the cache of a whole model does not stay in cache
// memory between steps: 30 layers of SmolLM2 at batch 16 are ~35 MB) and the
// softmax 16 lanes at a time; the pairs are split between the threads of XLA's
// intra-op pool. SmolLM2's shapes, 30 calls at 64 of 96 slots: 4.6 ms before
// the prefetch and vector softmax, 3.5 ms after (2 cores, 2026-11-29).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Shapes {
  int64_t b, k, g, d, s;
};

constexpr int kLanes = 16;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec Splat(float v) { return Vec{} + v; }

// exp(x) for x <= 0, 16 lanes at once (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2,
// a degree-6 polynomial for e^r, then 2^n from the exponent bits): within 1.02
// ulp of the exact value wherever that is a normal float (checked for every
// x = -i * 1e-6 down to -87.3), and exactly 0 below -87.3, where expf gives
// denormals.
inline Vec ExpNonPositive(Vec x) {
  const Vec too_small = Splat(-87.3f);
  const IVec underflow = x < too_small;
  x = underflow ? too_small : x;
  const Vec round = Splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Vec n = (x * Splat(1.44269504088896341f) + round) - round;
  const Vec r = x - n * Splat(0.693359375f) - n * Splat(-2.12194440e-4f);
  Vec p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  p = p * r * r + r + Splat(1.0f);
  const IVec exponent = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &exponent, sizeof(Vec));
  return underflow ? Vec{} : p * scale;
}

constexpr int64_t kAhead = 12;  // rows of keys or values requested ahead of their use

inline void PrefetchRow(const float* row, int64_t floats) {
  for (int64_t i = 0; i < floats; i += 64 / sizeof(float)) __builtin_prefetch(row + i);
}

inline float MaxOf(Vec v) {
  float top = v[0];
  for (int i = 1; i < kLanes; ++i) top = std::max(top, v[i]);
  return top;
}

inline float SumOf(Vec v) {
  float total = 0.0f;
  for (int i = 0; i < kLanes; ++i) total += v[i];
  return total;
}

// Attention of the g query heads that share kv head `kv` of batch row `row`.
// `scores` holds g rows of `width` floats (`end` rounded up to whole vectors).
void AttendOnePair(const Shapes& n, const float* q, const float* keys, const float* values,
                   const int32_t* allowed, float* out, int64_t row, int64_t kv,
                   std::vector<float>& scores, std::vector<int32_t>& keep) {
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
  const int64_t width = (end + kLanes - 1) / kLanes * kLanes;
  scores.assign(n.g * width, 0.0f);
  keep.assign(width, 0);
  if (!none_allowed) std::copy(allowed_s, allowed_s + end, keep.begin());
  for (int64_t dd = 0; dd < n.d; ++dd) {
    const float* k_s = k_ds + dd * n.s;
    if (dd + kAhead < n.d) {
      PrefetchRow(k_s + kAhead * n.s, end);
    } else if (dd + kAhead - n.d < end) {  // the first rows of values, read after the softmax
      PrefetchRow(v_sd + (dd + kAhead - n.d) * n.d, n.d);
    }
    for (int64_t gi = 0; gi < n.g; ++gi) {
      const float qv = q_gd[gi * n.d + dd];
      float* row_scores = scores.data() + gi * width;
      for (int64_t j = 0; j < end; ++j) row_scores[j] += qv * k_s[j];
    }
  }
  const Vec scale = Splat(1.0f / std::sqrt(static_cast<float>(n.d)));
  const Vec lowest = Splat(std::numeric_limits<float>::lowest());
  for (int64_t gi = 0; gi < n.g; ++gi) {
    float* p = scores.data() + gi * width;
    Vec top = lowest;
    for (int64_t j = 0; j < width; j += kLanes) {  // masked, scaled scores and their max
      Vec x;
      IVec m;
      std::memcpy(&x, p + j, sizeof(Vec));
      std::memcpy(&m, keep.data() + j, sizeof(IVec));
      x = m != 0 ? x * scale : lowest;
      top = top > x ? top : x;
      std::memcpy(p + j, &x, sizeof(Vec));
    }
    const Vec shift = Splat(MaxOf(top));
    Vec total{};
    for (int64_t j = 0; j < width; j += kLanes) {  // weights exp(score - max) and their sum
      Vec x;
      std::memcpy(&x, p + j, sizeof(Vec));
      x = ExpNonPositive(x - shift);
      total += x;
      std::memcpy(p + j, &x, sizeof(Vec));
    }
    // The padding past `end` (all-lowest scores) adds weight only when nothing is allowed.
    const float sum = none_allowed ? static_cast<float>(end) : SumOf(total);
    float* o = out_gd + gi * n.d;
    std::fill(o, o + n.d, 0.0f);
    for (int64_t j = 0; j < end; ++j) {
      const float w = p[j];
      if (w == 0.0f) continue;
      const float* v = v_sd + j * n.d;
      if (gi == 0 && j + kAhead < end) PrefetchRow(v + kAhead * n.d, n.d);
      for (int64_t dd = 0; dd < n.d; ++dd) o[dd] += w * v[dd];
    }
    const float inverse = 1.0f / sum;
    for (int64_t dd = 0; dd < n.d; ++dd) o[dd] *= inverse;
  }
}

// Checks the shapes; on success fills `n`.
ffi::Error CheckShapes(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& keys,
                       const ffi::Buffer<ffi::F32>& values, const ffi::Buffer<ffi::S32>& allowed,
                       const ffi::Buffer<ffi::F32>& out, Shapes& n) {
  auto qd = q.dimensions();
  auto kd = keys.dimensions();
  auto vd = values.dimensions();
  auto ad = allowed.dimensions();
  auto od = out.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || ad.size() != 2 || od.size() != 4 ||
      od[0] != qd[0] || od[1] != qd[1] || od[2] != qd[2] || od[3] != qd[3]) {
    return ffi::Error::InvalidArgument("decode_attention: expected q [b, k, g, d], keys "
                                       "[b, k, d, s], values [b, k, s, d], allowed [b, s], out [b, k, g, d]");
  }
  n = Shapes{qd[0], qd[1], qd[2], qd[3], kd[3]};
  if (kd[0] != n.b || kd[1] != n.k || kd[2] != n.d || vd[0] != n.b || vd[1] != n.k ||
      vd[2] != n.s || vd[3] != n.d || ad[0] != n.b || ad[1] != n.s) {
    return ffi::Error::InvalidArgument("decode_attention: q, keys, values and allowed disagree "
                                       "on b, k, d or s");
  }
  return ffi::Error::Success();
}

// Attention of every (row, kv head) pair, split between the threads; `write`
// runs first for each pair (storing the step's key and value in the cache).
template <typename Write>
void AttendAllPairs(ffi::ThreadPool& pool, const Shapes& n, const float* q, const float* keys,
                    const float* values, const int32_t* allowed, float* out, Write write) {
  const bool parallel = n.b * n.k * n.g * n.d * n.s >= (1 << 15);
  rlhf_jax::ParallelFor(pool, n.b * n.k, parallel, [&](int64_t first, int64_t last) {
    std::vector<float> scores;
    std::vector<int32_t> keep;
    for (int64_t pair = first; pair < last; ++pair) {
      write(pair);
      AttendOnePair(n, q, keys, values, allowed, out, pair / n.k, pair % n.k, scores, keep);
    }
  });
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> keys, ffi::Buffer<ffi::F32> values,
                           ffi::Buffer<ffi::S32> allowed, ffi::ResultBuffer<ffi::F32> out) {
  Shapes n;
  if (auto error = CheckShapes(q, keys, values, allowed, *out, n); error.failure()) return error;
  AttendAllPairs(pool, n, q.typed_data(), keys.typed_data(), values.typed_data(),
                 allowed.typed_data(), out->typed_data(), [](int64_t) {});
  return ffi::Error::Success();
}

// The same after writing this step's key and value (new_keys/new_values
// [b, k, d]) at cache slot `slot`, in place: the cache outputs alias the inputs.
ffi::Error DecodeAttentionUpdatingCache(
    ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> new_keys,
    ffi::Buffer<ffi::F32> new_values, ffi::Buffer<ffi::S32> slot, ffi::Buffer<ffi::F32> keys,
    ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::S32> allowed, ffi::ResultBuffer<ffi::F32> out,
    ffi::ResultBuffer<ffi::F32> keys_out, ffi::ResultBuffer<ffi::F32> values_out) {
  Shapes n;
  if (auto error = CheckShapes(q, keys, values, allowed, *out, n); error.failure()) return error;
  auto nk = new_keys.dimensions();
  auto nv = new_values.dimensions();
  if (nk.size() != 3 || nv.size() != 3 || nk[0] != n.b || nk[1] != n.k || nk[2] != n.d ||
      nv[0] != n.b || nv[1] != n.k || nv[2] != n.d || slot.element_count() != 1 ||
      keys_out->typed_data() != keys.typed_data() ||
      values_out->typed_data() != values.typed_data()) {
    return ffi::Error::InvalidArgument(
        "decode_attention: expected new keys and values [b, k, d], one slot, and cache outputs "
        "aliasing the cache inputs");
  }
  const int64_t at = std::clamp<int64_t>(slot.typed_data()[0], 0, n.s - 1);  // as XLA's update
  float* k_cache = keys_out->typed_data();
  float* v_cache = values_out->typed_data();
  const float* k_new = new_keys.typed_data();
  const float* v_new = new_values.typed_data();
  AttendAllPairs(pool, n, q.typed_data(), k_cache, v_cache, allowed.typed_data(),
                 out->typed_data(), [&](int64_t pair) {
                   for (int64_t dd = 0; dd < n.d; ++dd) {
                     k_cache[(pair * n.d + dd) * n.s + at] = k_new[pair * n.d + dd];
                   }
                   std::copy(v_new + pair * n.d, v_new + (pair + 1) * n.d,
                             v_cache + (pair * n.s + at) * n.d);
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(RlhfDecodeAttentionUpdatingCache, DecodeAttentionUpdatingCache,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
