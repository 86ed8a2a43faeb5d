// Vectorized fp32 math the native kernels share (AVX512F).

#pragma once

#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace jina_local_rerank {

// 2^x for x <= 0: 2^n * p(r) with n = round(x), |r| <= 1/2, p the degree-5 Taylor polynomial of e^(r ln 2)
// (relative error below 3e-6: enough for weights that are rounded to bf16 next).
inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.3333558146428443e-3f);  // ln(2)^5 / 5!
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.618129107628477e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.550410866482158e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.2402265069591007f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.6931471805599453f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// erf(x): x P(x^2) / Q(x^2) on x clamped to [-4, 4], the rational minimax fit Eigen and XLA use for fp32 (absolute
// error below 5e-7; erf(4) is 1 - 2e-8). No exp; the division is the 14-bit reciprocal and one Newton step.
inline __m512 erf512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.77068142495902e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.10102402082508e-06f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.69250639462346e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-7.34990630326855e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-2.95459980854025e-03f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-1.60960333262415e-02f));
  __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-2.13374055278905e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.68282697438203e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-7.37332916720468e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(-1.42647390514189e-02f));
  __m512 inverse = _mm512_rcp14_ps(q);
  inverse = _mm512_mul_ps(inverse, _mm512_fnmadd_ps(q, inverse, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(_mm512_mul_ps(p, x), inverse);
}

// The exact (erf) GELU: x / 2 * (1 + erf(x / sqrt(2))).
inline __m512 gelu512(__m512 x) {
  const __m512 half = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
  return _mm512_fmadd_ps(half, erf512(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f))), half);
}

// 16 values stored as fp32, or rounded to bf16 (to nearest even, as c10::BFloat16 does).
inline void store16(float* out, __m512 x) { _mm512_storeu_ps(out, x); }
inline void store16(c10::BFloat16* out, __m512 x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), (__m256i)_mm512_cvtneps_pbh(x));
}

// 16 values as fp32: fp32 as they are, bf16 widened (exactly).
inline __m512 load16(const float* in) { return _mm512_loadu_ps(in); }
inline __m512 load16(const c10::BFloat16* in) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// LayerNorm of one row of n fp32 values (n a multiple of 16) into `out`: mean, then the variance of the centered
// values (two passes, as torch computes it), then (x - mean) / sqrt(variance + eps) * gamma + beta.
template <typename Out>
inline void layer_norm_row(const float* row, int64_t n, const float* gamma, const float* beta, float eps, Out* out) {
  __m512 sum = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(row + c));
  const float inverse_n = 1.0f / static_cast<float>(n);
  const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) * inverse_n);
  __m512 squares = _mm512_setzero_ps();
  for (int64_t c = 0; c < n; c += 16) {
    const __m512 centered = _mm512_sub_ps(_mm512_loadu_ps(row + c), mean);
    squares = _mm512_fmadd_ps(centered, centered, squares);
  }
  const __m512 inverse_std = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(squares) * inverse_n + eps));
  for (int64_t c = 0; c < n; c += 16) {
    const __m512 normalized = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + c), mean), inverse_std);
    store16(out + c, _mm512_fmadd_ps(normalized, _mm512_loadu_ps(gamma + c), _mm512_loadu_ps(beta + c)));
  }
}

}  // namespace jina_local_rerank
