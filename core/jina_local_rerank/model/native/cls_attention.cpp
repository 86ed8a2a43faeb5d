// The last layer's <s> attention without its key and value rows: the low-precision CPU modes' last layer (see
// model/attention.py, NativeAttention.cls_context, which builds the inputs; model/native_kernels.py builds this file).
//
// The pooler reads <s> alone, so the last layer has one query q per sequence. Per head h, with u = W_k,h^T q over the
// layer's input width, q . k_j = u . x_j + q . b_k,h, whose second term is the same for every key (the softmax drops
// it); and as the weights add up to 1, sum_j p_j v_j = W_v,h (sum_j p_j x_j) + b_v,h. This kernel computes
// y = sum_j softmax_j(scale u . x_j - slope j) x_j for every head and sequence in fp32 from the input rows x_j: per
// token, 2 x heads x width multiply-adds instead of the two projections' 2 x width^2.

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "packed_sequences.h"
#include "parallel.h"
#include "vector_math.h"

namespace {

using jina_local_rerank::exp2_nonpositive;
using jina_local_rerank::load16;

constexpr int kHeads = 4;  // heads computed together, so each loaded input vector serves four

// One sequence: x its `length` input rows (`stride` apart, `width` values each); u and y its heads' rows of `width`
// values, `head_stride` apart; scores are u . x_j times `scale`.
template <typename T>
void attend_cls(const T* x, int64_t stride, int64_t length, int64_t width, const float* u, float* y,
                int64_t head_stride, int64_t heads, float scale, const float* slopes) {
  thread_local std::vector<float> weights;  // [heads][padded]: scores, then the softmax's unnormalized weights
  const int64_t padded = (length + 15) / 16 * 16;
  weights.resize(std::max(weights.size(), static_cast<size_t>(heads * padded)));
  for (int64_t h0 = 0; h0 < heads; h0 += kHeads) {
    for (int64_t j = 0; j < length; ++j) {
      __m512 acc[kHeads];
      for (int r = 0; r < kHeads; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t c = 0; c < width; c += 16) {
        const __m512 value = load16(x + j * stride + c);
#pragma GCC unroll 4
        for (int r = 0; r < kHeads; ++r) {
          acc[r] = _mm512_fmadd_ps(value, _mm512_loadu_ps(u + (h0 + r) * head_stride + c), acc[r]);
        }
      }
      for (int r = 0; r < kHeads; ++r) {
        weights[(h0 + r) * padded + j] = _mm512_reduce_add_ps(acc[r]) * scale - slopes[h0 + r] * static_cast<float>(j);
      }
    }
  }
  // Softmax per head: e^(s - top) = 2^((s - top) log2 e); keys past `length` are masked out of the sum.
  thread_local std::vector<float> inverse;
  inverse.resize(std::max(inverse.size(), static_cast<size_t>(heads)));
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
  for (int64_t h = 0; h < heads; ++h) {
    float* row = weights.data() + h * padded;
    const __m512 top = _mm512_set1_ps(*std::max_element(row, row + length));
    __m512 total = _mm512_setzero_ps();
    for (int64_t j = 0; j < length; j += 16) {
      const __mmask16 lanes = length - j >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (length - j)) - 1);
      const __m512 w = exp2_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + j), top), log2e));
      _mm512_storeu_ps(row + j, w);
      total = _mm512_mask_add_ps(total, lanes, total, w);
    }
    inverse[h] = 1.0f / _mm512_reduce_add_ps(total);
  }
  // y: the weighted sum of input rows, 16 values of four heads at a time.
  for (int64_t c = 0; c < width; c += 16) {
    for (int64_t h0 = 0; h0 < heads; h0 += kHeads) {
      __m512 acc[kHeads];
      for (int r = 0; r < kHeads; ++r) acc[r] = _mm512_setzero_ps();
      for (int64_t j = 0; j < length; ++j) {
        const __m512 value = load16(x + j * stride + c);
#pragma GCC unroll 4
        for (int r = 0; r < kHeads; ++r) {
          acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(weights[(h0 + r) * padded + j]), value, acc[r]);
        }
      }
      for (int r = 0; r < kHeads; ++r) {
        _mm512_storeu_ps(y + (h0 + r) * head_stride + c, _mm512_mul_ps(acc[r], _mm512_set1_ps(inverse[h0 + r])));
      }
    }
  }
}

template <typename T>
void attend_all(const at::Tensor& x, const at::Tensor& u, const jina_local_rerank::PackedSequences& sequences,
                float scale, const std::vector<float>& slopes, at::Tensor& y) {
  const int64_t heads = u.size(0), width = u.size(2), count = u.size(1);
  const T* xp = x.data_ptr<T>();
  const float* up = u.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  jina_local_rerank::parallel_for_each(count, 1, true, [&](int64_t s) {
    attend_cls<T>(xp + sequences.offsets[s] * x.stride(0), x.stride(0), sequences.lengths[s], width, up + s * width,
                  yp + s * width, count * width, heads, scale, slopes.data());
  });
}

// x [rows, width] (fp32 or bf16; the sequences end to end), u [heads, sequences, width] fp32, lengths [sequences],
// slopes [heads] -> y [heads, sequences, width] fp32.
at::Tensor cls_attention(const at::Tensor& x, const at::Tensor& u, const at::Tensor& lengths, const at::Tensor& slopes,
                         double scale) {
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [rows, width] with contiguous rows");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "x must be float32 or bfloat16");
  TORCH_CHECK(u.dim() == 3 && u.scalar_type() == at::kFloat && u.is_contiguous(),
              "u must be contiguous float32 [heads, sequences, width]");
  TORCH_CHECK(u.size(2) == x.size(1) && x.size(1) % 16 == 0, "u's width must be x's, a multiple of 16");
  TORCH_CHECK(u.size(0) % kHeads == 0, "heads must be a multiple of 4");
  const jina_local_rerank::PackedSequences sequences(lengths, x.size(0));
  TORCH_CHECK(sequences.count() == u.size(1), "one length per sequence of u");
  const std::vector<float> slope = jina_local_rerank::float_values(slopes);
  TORCH_CHECK(static_cast<int64_t>(slope.size()) == u.size(0), "one slope per head");
  at::Tensor y = at::empty(u.sizes(), u.options());
  if (x.scalar_type() == at::kBFloat16) {
    attend_all<c10::BFloat16>(x, u, sequences, static_cast<float>(scale), slope, y);
  } else {
    attend_all<float>(x, u, sequences, static_cast<float>(scale), slope, y);
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jina_local_rerank_cpu, m) {
  m.def("cls_attention(Tensor x, Tensor u, Tensor lengths, Tensor slopes, float scale) -> Tensor");
  m.impl("cls_attention", c10::DispatchKey::CPU, TORCH_FN(cls_attention));
}
