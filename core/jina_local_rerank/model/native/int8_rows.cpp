// Per-row (per-token) int8 activations around torch._int_mm: the int8 CPU mode's linear layers where the native
// kernels run (see model/quantization.py). Each row is scaled by its own largest magnitude, so a row's result never
// depends on the other rows of its batch.

#include <ATen/ATen.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "parallel.h"
#include "vector_math.h"

namespace {

constexpr float kLevels = 127.0f;  // symmetric int8: -127..127 times the row's scale
constexpr int64_t kGrainRows = 64;
constexpr float kSmallestMagnitude = 1e-30f;

// Quantizes one row of k values into `out`; returns its scale, max|row| / 127.
float quantize_row(const float* row, int64_t k, int8_t* out) {
  const int64_t full = k / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (k - full)) - 1);
  __m512 top = _mm512_setzero_ps();
  for (int64_t c = 0; c < full; c += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(row + c)));
  if (tail) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, row + full)));
  // Floored so that 127 / magnitude stays finite (a zero row, or one of subnormals, quantizes to zeros).
  const float magnitude = std::max(_mm512_reduce_max_ps(top), kSmallestMagnitude);
  const __m512 factor = _mm512_set1_ps(kLevels / magnitude);
  for (int64_t c = 0; c < full; c += 16) {
    const __m512i rounded = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(row + c), factor));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + c), _mm512_cvtsepi32_epi8(rounded));
  }
  if (tail) {
    const __m512i rounded = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, row + full), factor));
    _mm512_mask_cvtsepi32_storeu_epi8(out + full, tail, rounded);
  }
  return magnitude / kLevels;
}

// x fp32 [rows, k] -> (int8 [rows, k], fp32 scales [rows]) with x ~= q * scale.
std::tuple<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 2 && input.scalar_type() == at::kFloat, "quantize_rows takes fp32 [rows, k]");
  const at::Tensor x = input.contiguous();
  const int64_t rows = x.size(0), k = x.size(1);
  at::Tensor q = at::empty({rows, k}, x.options().dtype(at::kChar));
  at::Tensor scales = at::empty({rows}, x.options());
  const float* src = x.data_ptr<float>();
  int8_t* dst = q.data_ptr<int8_t>();
  float* scale = scales.data_ptr<float>();
  jina_local_rerank::parallel_for_each(rows, kGrainRows, false,
                                       [&](int64_t r) { scale[r] = quantize_row(src + r * k, k, dst + r * k); });
  return {q, scales};
}

// An int8 layer's integer products acc int32 [rows, n], checked and read as the fp32 values they stand for:
// acc[r, c] * row_scale[r] * col_scale[c] (+ bias[c] where the layer has one).
class ScaledProducts {
 public:
  ScaledProducts(const at::Tensor& acc, const at::Tensor& row_scale, const at::Tensor& col_scale,
                 const c10::optional<at::Tensor>& bias)
      : rows(checked(acc).size(0)), n(acc.size(1)) {
    TORCH_CHECK(row_scale.numel() == rows && col_scale.numel() == n, "one scale per row and per column");
    row_scale_ = row_scale.to(at::kFloat).contiguous();
    col_scale_ = col_scale.to(at::kFloat).contiguous();
    if (bias.has_value()) {
      bias_ = bias->to(at::kFloat).contiguous();
      TORCH_CHECK(bias_.numel() == n, "one bias per column");
      add_ = bias_.data_ptr<float>();
    }
    acc_ = acc.data_ptr<int32_t>();
    row_ = row_scale_.data_ptr<float>();
    col_ = col_scale_.data_ptr<float>();
  }

  // One row's values: at(c) are columns [c, c + 16), at(c, lanes) those in `lanes` (the others zero).
  struct Row {
    const int32_t* acc;
    const float *col, *add;  // add: nullptr without a bias
    __m512 factor;

    __m512 at(int64_t c) const {
      const __m512 value = _mm512_cvtepi32_ps(_mm512_loadu_si512(acc + c));
      const __m512 scale = _mm512_mul_ps(_mm512_loadu_ps(col + c), factor);
      return add ? _mm512_fmadd_ps(value, scale, _mm512_loadu_ps(add + c)) : _mm512_mul_ps(value, scale);
    }
    __m512 at(int64_t c, __mmask16 lanes) const {
      const __m512 value = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lanes, acc + c));
      const __m512 scale = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, col + c), factor);
      return add ? _mm512_fmadd_ps(value, scale, _mm512_maskz_loadu_ps(lanes, add + c)) : _mm512_mul_ps(value, scale);
    }
  };

  Row row(int64_t r) const { return {acc_ + r * n, col_, add_, _mm512_set1_ps(row_[r])}; }

  const int64_t rows, n;

 private:
  static const at::Tensor& checked(const at::Tensor& acc) {
    TORCH_CHECK(acc.dim() == 2 && acc.scalar_type() == at::kInt && acc.is_contiguous(), "acc: int32 [rows, n]");
    return acc;
  }

  at::Tensor row_scale_, col_scale_, bias_;
  const int32_t* acc_;
  const float *row_, *col_, *add_ = nullptr;
};

// The GEGLU feed-forward between two int8 layers: acc int32 [rows, 2i] (the gated layer's integer products) ->
// gelu(gate) * up, quantized per row: (int8 [rows, i], fp32 scales [rows]). gate is the first half of the
// columns, up the second; column c is acc * row_scale * col_scale[c] (the layer has no bias).
std::tuple<at::Tensor, at::Tensor> geglu_rows(const at::Tensor& acc, const at::Tensor& row_scale,
                                              const at::Tensor& col_scale) {
  const ScaledProducts products(acc, row_scale, col_scale, c10::nullopt);
  const int64_t rows = products.rows, width = products.n / 2;
  TORCH_CHECK(products.n == 2 * width && width % 16 == 0, "acc's columns must be 2i with i a multiple of 16");
  at::Tensor q = at::empty({rows, width}, acc.options().dtype(at::kChar));
  at::Tensor scales = at::empty({rows}, acc.options().dtype(at::kFloat));
  int8_t* dst = q.data_ptr<int8_t>();
  float* scale = scales.data_ptr<float>();
  jina_local_rerank::parallel_for_each(rows, kGrainRows, false, [&](int64_t r) {
    thread_local std::vector<float> hidden;
    hidden.resize(width);
    const ScaledProducts::Row values = products.row(r);
    for (int64_t c = 0; c < width; c += 16) {
      const __m512 gate = values.at(c), up = values.at(width + c);
      _mm512_storeu_ps(hidden.data() + c, _mm512_mul_ps(jina_local_rerank::gelu512(gate), up));
    }
    scale[r] = quantize_row(hidden.data(), width, dst + r * width);
  });
  return {q, scales};
}

// out[r, c] = acc[r, c] * row_scale[r] * col_scale[c] (+ bias[c]); out fp32 [rows, n] with contiguous rows.
void dequantize_rows(const at::Tensor& acc, const at::Tensor& row_scale, const at::Tensor& col_scale,
                     const c10::optional<at::Tensor>& bias, at::Tensor out) {
  const ScaledProducts products(acc, row_scale, col_scale, bias);
  const int64_t rows = products.rows, n = products.n;
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.size(0) == rows && out.size(1) == n && out.stride(1) == 1,
              "out: fp32 [rows, n] with contiguous rows");
  float* dst = out.data_ptr<float>();
  const int64_t out_stride = out.stride(0);
  const int64_t full = n / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - full)) - 1);
  jina_local_rerank::parallel_for_each(rows, kGrainRows, false, [&](int64_t r) {
    const ScaledProducts::Row values = products.row(r);
    float* target = dst + r * out_stride;
    for (int64_t c = 0; c < full; c += 16) _mm512_storeu_ps(target + c, values.at(c));
    if (tail) _mm512_mask_storeu_ps(target + full, tail, values.at(full, tail));
  });
}

// The output layer of an attention or feed-forward block: out = LayerNorm(acc * row_scale * col_scale + bias +
// residual) * weight + norm_bias (layer_norm_row), in one call.
at::Tensor dequantize_add_norm(const at::Tensor& acc, const at::Tensor& row_scale, const at::Tensor& col_scale,
                               const c10::optional<at::Tensor>& bias, const at::Tensor& residual,
                               const at::Tensor& weight, const at::Tensor& norm_bias, double eps) {
  const ScaledProducts products(acc, row_scale, col_scale, bias);
  const int64_t rows = products.rows, n = products.n;
  TORCH_CHECK(n % 16 == 0, "the rows' width must be a multiple of 16");
  TORCH_CHECK(residual.scalar_type() == at::kFloat && residual.dim() == 2 && residual.size(0) == rows &&
                  residual.size(1) == n && residual.stride(1) == 1,
              "residual: fp32 [rows, n] with contiguous rows");
  TORCH_CHECK(weight.numel() == n && norm_bias.numel() == n, "one norm weight and bias per column");
  const at::Tensor gamma = weight.to(at::kFloat).contiguous(), beta = norm_bias.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({rows, n}, residual.options().memory_format(at::MemoryFormat::Contiguous));
  const float* res = residual.data_ptr<float>();
  const float* g = gamma.data_ptr<float>();
  const float* be = beta.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t res_stride = residual.stride(0);
  jina_local_rerank::parallel_for_each(rows, kGrainRows, false, [&](int64_t r) {
    const ScaledProducts::Row values = products.row(r);
    const float* skip = res + r * res_stride;
    float* target = dst + r * n;
    for (int64_t c = 0; c < n; c += 16) {
      _mm512_storeu_ps(target + c, _mm512_add_ps(values.at(c), _mm512_loadu_ps(skip + c)));
    }
    jina_local_rerank::layer_norm_row(target, n, g, be, static_cast<float>(eps), target);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jina_local_rerank_cpu, m) {
  m.def("quantize_rows(Tensor x) -> (Tensor, Tensor)");
  m.def("geglu_rows(Tensor acc, Tensor row_scale, Tensor col_scale) -> (Tensor, Tensor)");
  m.impl("geglu_rows", c10::DispatchKey::CPU, TORCH_FN(geglu_rows));
  m.def("dequantize_rows(Tensor acc, Tensor row_scale, Tensor col_scale, Tensor? bias, Tensor(a!) out) -> ()");
  m.impl("quantize_rows", c10::DispatchKey::CPU, TORCH_FN(quantize_rows));
  m.impl("dequantize_rows", c10::DispatchKey::CPU, TORCH_FN(dequantize_rows));
  m.def(
      "dequantize_add_norm(Tensor acc, Tensor row_scale, Tensor col_scale, Tensor? bias, Tensor residual, "
      "Tensor weight, Tensor norm_bias, float eps) -> Tensor");
  m.impl("dequantize_add_norm", c10::DispatchKey::CPU, TORCH_FN(dequantize_add_norm));
}
