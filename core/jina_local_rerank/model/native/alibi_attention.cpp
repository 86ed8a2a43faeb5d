// Symmetric ALiBi self-attention over packed sequences for CPUs with AVX512_BF16: the low-precision CPU modes'
// attention (see model/native_kernels.py, which builds this file on first use).
//
// softmax(q k^T / sqrt(d) - slope * |i - j|) v per sequence and head, with bf16 products summed in fp32
// (vdpbf16ps), the scale, the ALiBi bias and the softmax in fp32, and the softmax weights rounded to bf16 for the
// second product. Keys whose weight cannot reach e^-20 of the row's largest (the ALiBi penalty alone, bounded as in
// attention.py's _key_windows) are skipped: past that reach the weights fall geometrically, so all skipped keys
// together weigh under 2 e^-20 / (1 - e^-slope) of the largest (1.1e-6 at the smallest slope, 2^-8), far below the
// bf16 rounding of each weight (2^-9 relative). One task per (sequence, head); no score matrix is ever held, only
// the scores of four query rows at a time.

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "packed_sequences.h"
#include "parallel.h"
#include "vector_math.h"

namespace {

using jina_local_rerank::exp2_nonpositive;
using jina_local_rerank::store16;

constexpr float kNegligibleLogit = 20.0f;  // attention.py's NEGLIGIBLE_LOGIT is 40 for exact fp32
constexpr int64_t kChunk = 16;              // keys per score vector
constexpr int kRows = 4;                    // query rows computed together
constexpr int kCols = 4;                    // key chunks computed together

// 32 consecutive values as bf16 (rounded to nearest even from fp32).
inline __m512i bf16_vector(const float* x) {
  return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
}
inline __m512i bf16_vector(const c10::BFloat16* x) { return _mm512_loadu_si512(x); }

// `squares` plus the squares of 32 consecutive values (as given, before any rounding), lane by lane.
inline __m512 add_squares(const float* x, __m512 squares) {
  const __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
  return _mm512_fmadd_ps(hi, hi, _mm512_fmadd_ps(lo, lo, squares));
}
inline __m512 add_squares(const c10::BFloat16* x, __m512 squares) {
  const __m512i raw = _mm512_loadu_si512(x);
  const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));  // even elements
  const __m512 hi = _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000))));
  return _mm512_fmadd_ps(hi, hi, _mm512_fmadd_ps(lo, lo, squares));
}

// Rounds a row of D values to bf16 into `bits` (in order); with kNorm, returns the row's Euclidean norm (of the
// inputs), else 0.
template <int D, bool kNorm, typename T>
inline float bf16_row(const T* row, uint16_t* bits) {
  __m512 squares = _mm512_setzero_ps();
  for (int b = 0; b < D; b += 32) {
    if (kNorm) squares = add_squares(row + b, squares);
    _mm512_storeu_si512(bits + b, bf16_vector(row + b));
  }
  return kNorm ? std::sqrt(_mm512_reduce_add_ps(squares)) : 0.0f;
}

// One head of one sequence. Strides count elements; the last dimension (D) is contiguous.
template <typename T, int D>
void attend_head(const T* q, int64_t q_stride, int64_t num_queries, bool cls_only, const T* k, const T* v,
                 int64_t kv_stride, int64_t length, float slope, T* out, int64_t out_stride) {
  constexpr int kPairs = D / 2;    // (dim 2p, dim 2p + 1) pairs of a row
  constexpr int kOutVecs = D / 16;  // output vectors of 16 dims
  const int64_t chunks = (length + kChunk - 1) / kChunk;
  const int64_t padded = chunks * kChunk;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // keys[c][p][j]: dims (2p, 2p + 1) of key 16c + j; values[t][d]: dim d of keys (2t, 2t + 1). Zero past `length`.
  // Each thread's buffers are reused from task to task; only the padding past `length` needs zeros.
  thread_local std::vector<uint32_t> keys, values;
  thread_local std::vector<float> scores;
  thread_local std::vector<uint16_t> weights;
  keys.resize(std::max(keys.size(), static_cast<size_t>(chunks * kPairs * kChunk)));
  values.resize(std::max(values.size(), static_cast<size_t>(padded / 2 * D)));
  scores.resize(std::max(scores.size(), static_cast<size_t>(kRows * padded)));
  weights.resize(std::max(weights.size(), static_cast<size_t>(kRows * (padded + kChunk))));
  std::fill(keys.begin() + (chunks - 1) * kPairs * kChunk, keys.begin() + chunks * kPairs * kChunk, 0u);
  std::fill(values.begin() + (length / 2) * D, values.begin() + padded / 2 * D, 0u);
  // Where the ALiBi penalty alone cannot push any key below e^-20 (short sequences, shallow slopes), every row
  // attends to every key and no norm is needed.
  const bool whole = kNegligibleLogit >= slope * static_cast<float>(length);
  // Keys 2t and 2t + 1 in turn: each key's pairs into its chunk, their values interleaved, 32 dims per permute.
  alignas(64) uint16_t row[D];
  const __m512i first_half = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38,
                                              6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i second_half = _mm512_add_epi16(first_half, _mm512_set1_epi16(16));
  float key_norm = 0.0f;
  for (int64_t j = 0; j < length; j += 2) {
    for (int64_t i = j; i < std::min(j + 2, length); ++i) {
      const float norm = whole ? bf16_row<D, false>(k + i * kv_stride, row) : bf16_row<D, true>(k + i * kv_stride, row);
      key_norm = std::max(key_norm, norm);
      const uint32_t* pairs = reinterpret_cast<const uint32_t*>(row);
      uint32_t* block = keys.data() + (i / kChunk) * kPairs * kChunk + i % kChunk;
      for (int p = 0; p < kPairs; ++p) block[p * kChunk] = pairs[p];
    }
    uint16_t* pair = reinterpret_cast<uint16_t*>(values.data() + (j / 2) * D);
    for (int b = 0; b < D; b += 32) {
      const __m512i a = bf16_vector(v + j * kv_stride + b);
      const __m512i c = j + 1 < length ? bf16_vector(v + (j + 1) * kv_stride + b) : _mm512_setzero_si512();
      _mm512_storeu_si512(pair + 2 * b, _mm512_permutex2var_epi16(a, first_half, c));
      _mm512_storeu_si512(pair + 2 * b + 32, _mm512_permutex2var_epi16(a, second_half, c));
    }
  }

  // Query rows go kRows at a time, so each key or value vector loaded serves kRows rows. A group's keys are the
  // union of its rows' windows (a key outside a row's own window only adds its exactly computed, negligible weight).
  // The last group repeats its last row where rows run out; only real rows are written.
  const int64_t weight_stride = padded + kChunk;
  alignas(64) uint32_t query[kRows][kPairs];
  const __m512 lane = _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512 end = _mm512_set1_ps(static_cast<float>(length));
  for (int64_t group = 0; group < num_queries; group += kRows) {
    int64_t first = chunks, last = 0;
    int64_t position[kRows];
    for (int r = 0; r < kRows; ++r) {
      const int64_t i = std::min(group + r, num_queries - 1);
      position[r] = cls_only ? 0 : i;
      if (whole) {
        bf16_row<D, false>(q + i * q_stride, reinterpret_cast<uint16_t*>(query[r]));
        first = 0;
        last = chunks;
        continue;
      }
      const float norm = bf16_row<D, true>(q + i * q_stride, reinterpret_cast<uint16_t*>(query[r]));
      // Keys farther than `reach` from the query get an ALiBi penalty that alone puts them below e^-20.
      const double reach = (2.0 * norm * key_norm * scale + kNegligibleLogit) / slope;
      if (std::isfinite(reach) && reach < static_cast<double>(length)) {
        const int64_t radius = static_cast<int64_t>(std::ceil(reach));
        first = std::min(first, std::max<int64_t>(0, position[r] - radius) / kChunk);
        last = std::max(last, std::min<int64_t>(chunks, (position[r] + radius + kChunk) / kChunk));
      } else {
        first = 0;
        last = chunks;
      }
    }

    // Scores in units of 1/scale (q.k plus the ALiBi bias divided by the scale); the softmax multiplies by the scale
    // (and log2 e) when it subtracts the row's largest. Keys past `length` (in the last chunk only) get -inf.
    __m512 best[kRows], position_v[kRows];
    for (int r = 0; r < kRows; ++r) {
      best[r] = _mm512_set1_ps(-INFINITY);
      position_v[r] = _mm512_set1_ps(static_cast<float>(position[r]));
    }
    const __m512 bias_per_key = _mm512_set1_ps(-slope / scale);
    auto finish = [&](int r, int64_t c, __m512 key, __m512 acc) {
      const __m512 distance = _mm512_abs_ps(_mm512_sub_ps(key, position_v[r]));
      __m512 score = _mm512_fmadd_ps(distance, bias_per_key, acc);
      if (c == chunks - 1) {
        score = _mm512_mask_blend_ps(_mm512_cmplt_ps_mask(key, end), _mm512_set1_ps(-INFINITY), score);
      }
      _mm512_storeu_ps(scores.data() + r * padded + c * kChunk, score);
      best[r] = _mm512_max_ps(best[r], score);
    };
    auto key_positions = [&](int64_t c) {
      return _mm512_add_ps(_mm512_set1_ps(static_cast<float>(c * kChunk)), lane);
    };
    int64_t c = first;
    for (; c + kCols <= last; c += kCols) {
      __m512 acc[kRows][kCols];
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 16
        for (int u = 0; u < kCols; ++u) acc[r][u] = _mm512_setzero_ps();
      const uint32_t* block = keys.data() + c * kPairs * kChunk;
#pragma GCC unroll 2
      for (int p = 0; p < kPairs; ++p) {
        __m512bh key[kCols];
#pragma GCC unroll 16
        for (int u = 0; u < kCols; ++u) key[u] = (__m512bh)_mm512_loadu_si512(block + (u * kPairs + p) * kChunk);
#pragma GCC unroll 16
        for (int r = 0; r < kRows; ++r) {
          const __m512bh qp = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(query[r][p]));
#pragma GCC unroll 16
          for (int u = 0; u < kCols; ++u) acc[r][u] = _mm512_dpbf16_ps(acc[r][u], key[u], qp);
        }
      }
#pragma GCC unroll 16
      for (int u = 0; u < kCols; ++u) {
        const __m512 key = key_positions(c + u);
#pragma GCC unroll 16
        for (int r = 0; r < kRows; ++r) finish(r, c + u, key, acc[r][u]);
      }
    }
    for (; c < last; ++c) {  // the remaining chunks, one at a time (the rows' sums still independent)
      __m512 acc[kRows];
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
      const uint32_t* block = keys.data() + c * kPairs * kChunk;
#pragma GCC unroll 2
      for (int p = 0; p < kPairs; ++p) {
        const __m512bh key = (__m512bh)_mm512_loadu_si512(block + p * kChunk);
#pragma GCC unroll 16
        for (int r = 0; r < kRows; ++r)
          acc[r] = _mm512_dpbf16_ps(acc[r], key, (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(query[r][p])));
      }
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) finish(r, c, key_positions(c), acc[r]);
    }

    // Softmax weights in fp32, rounded to bf16 in key order (so consecutive keys form the pairs vdpbf16ps reads).
    float inverse[kRows];
    for (int r = 0; r < kRows; ++r) {
      const float* row_scores = scores.data() + r * padded;
      uint16_t* row_weights = weights.data() + r * weight_stride;
      // e^(scale (s - top)) = 2^(s scale log2(e) - top scale log2(e)): one fused multiply-subtract per score.
      const __m512 log2_scale = _mm512_set1_ps(scale * 1.44269504088896341f);
      const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(best[r]) * scale * 1.44269504088896341f);
      auto weight = [&](int64_t chunk) {
        return exp2_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(row_scores + chunk * kChunk), log2_scale, top));
      };
      __m512 total = _mm512_setzero_ps();
      for (c = first; c < last; c += 2) {
        const __m512 lo = weight(c);
        const __m512 hi = c + 1 < last ? weight(c + 1) : _mm512_setzero_ps();
        _mm512_storeu_si512(row_weights + c * kChunk, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
        total = _mm512_add_ps(total, _mm512_add_ps(lo, hi));
      }
      inverse[r] = 1.0f / _mm512_reduce_add_ps(total);
    }

    // Context: the weighted sum of values over key pairs [8 first, 8 last), each value vector serving kRows rows.
    __m512 acc[kRows][kOutVecs];
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 16
      for (int o = 0; o < kOutVecs; ++o) acc[r][o] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t t = first * (kChunk / 2); t < last * (kChunk / 2); ++t) {
      __m512bh value[kOutVecs];
#pragma GCC unroll 16
      for (int o = 0; o < kOutVecs; ++o) value[o] = (__m512bh)_mm512_loadu_si512(values.data() + t * D + o * 16);
#pragma GCC unroll 16
      for (int r = 0; r < kRows; ++r) {
        const uint32_t w = reinterpret_cast<const uint32_t*>(weights.data() + r * weight_stride)[t];
        const __m512bh wp = (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(w));
#pragma GCC unroll 16
        for (int o = 0; o < kOutVecs; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], value[o], wp);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {  // constant indices keep acc in registers
      if (group + r >= num_queries) break;
      T* target = out + (group + r) * out_stride;
#pragma GCC unroll 16
      for (int o = 0; o < kOutVecs; ++o) {
        store16(target + o * 16, _mm512_mul_ps(acc[r][o], _mm512_set1_ps(inverse[r])));
      }
    }
  }
}

template <typename T, int D>
void attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
            const jina_local_rerank::PackedSequences& sequences, const std::vector<float>& slopes, bool cls_only,
            at::Tensor& out) {
  const int64_t heads = static_cast<int64_t>(slopes.size());
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  // One task per (sequence, head), handed out one at a time: sequences differ in length.
  jina_local_rerank::parallel_for_each(sequences.count() * heads, 1, true, [&](int64_t task) {
    const int64_t s = task / heads, h = task % heads;
    const int64_t start = sequences.offsets[s], length = sequences.lengths[s];
    const int64_t q_row = cls_only ? s : start;
    attend_head<T, D>(qp + q_row * q.stride(0) + h * q.stride(1), q.stride(0), cls_only ? 1 : length, cls_only,
                      kp + start * k.stride(0) + h * k.stride(1), vp + start * v.stride(0) + h * v.stride(1),
                      k.stride(0), length, slopes[h], op + q_row * out.stride(0) + h * out.stride(1), out.stride(0));
  });
}

at::Tensor alibi_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& lengths,
                           const at::Tensor& slopes, bool cls_only) {
  TORCH_CHECK(q.dim() == 3 && k.sizes() == v.sizes() && k.dim() == 3, "q, k, v must be [rows, heads, d]");
  TORCH_CHECK(q.size(1) == k.size(1) && q.size(2) == k.size(2), "q, k, v must share heads and d");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && k.scalar_type() == v.scalar_type(), "q, k, v: one dtype");
  TORCH_CHECK(k.stride(1) == v.stride(1) && k.stride(0) == v.stride(0), "k and v must share strides");
  TORCH_CHECK(q.stride(2) == 1 && k.stride(2) == 1, "the last dimension must be contiguous");
  const int64_t d = q.size(2);
  const jina_local_rerank::PackedSequences sequences(lengths, k.size(0));
  TORCH_CHECK(q.size(0) == (cls_only ? sequences.count() : k.size(0)), "q has the wrong rows");
  const std::vector<float> slope = jina_local_rerank::float_values(slopes);
  TORCH_CHECK(static_cast<int64_t>(slope.size()) == q.size(1), "one slope per head");
  at::Tensor out = at::empty(q.sizes(), q.options());
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || q.scalar_type() == at::kFloat, "q, k, v must be float32 or bfloat16");
  if (d == 32) {
    bf16 ? attend<c10::BFloat16, 32>(q, k, v, sequences, slope, cls_only, out)
         : attend<float, 32>(q, k, v, sequences, slope, cls_only, out);
  } else if (d == 64) {
    bf16 ? attend<c10::BFloat16, 64>(q, k, v, sequences, slope, cls_only, out)
         : attend<float, 64>(q, k, v, sequences, slope, cls_only, out);
  } else {
    TORCH_CHECK(false, "head size must be 32 or 64, not ", d);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jina_local_rerank_cpu, m) {
  m.def("alibi_attention(Tensor q, Tensor k, Tensor v, Tensor lengths, Tensor slopes, bool cls_only) -> Tensor");
  m.impl("alibi_attention", c10::DispatchKey::CPU, TORCH_FN(alibi_attention));
}
