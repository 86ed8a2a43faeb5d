// Element- and row-wise ops of the bf16 CPU mode where the native kernels run (see model/cpu_kernels.py): bf16 in
// and out, fp32 inside, one pass where torch takes two (GELU then product; sum then LayerNorm), rounded once.

#include <ATen/ATen.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "parallel.h"
#include "vector_math.h"

namespace {

constexpr int64_t kGrain = 4096;   // gelu_product: values per task
constexpr int64_t kGrainRows = 64;  // add_norm: rows per task at least

using jina_local_rerank::load16;
using jina_local_rerank::store16;

// gelu(gate) * up for bf16 tensors of one shape: the exact (erf) GELU and the product in fp32, rounded to bf16 once.
at::Tensor gelu_product(const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.scalar_type() == at::kBFloat16 && up.scalar_type() == at::kBFloat16, "gate and up must be bf16");
  TORCH_CHECK(gate.sizes() == up.sizes(), "gate and up must have one shape");
  const at::Tensor g = gate.contiguous(), u = up.contiguous();
  at::Tensor out = at::empty_like(g);
  const int64_t n = g.numel();
  TORCH_CHECK(n % 16 == 0, "gelu_product takes a multiple of 16 values");
  const c10::BFloat16* gp = g.data_ptr<c10::BFloat16>();
  const c10::BFloat16* up_ = u.data_ptr<c10::BFloat16>();
  c10::BFloat16* op = out.data_ptr<c10::BFloat16>();
  const int64_t tasks = (n + kGrain - 1) / kGrain;
  jina_local_rerank::parallel_for_each(tasks, 1, false, [&](int64_t task) {
    const int64_t end = std::min(n, (task + 1) * kGrain);
    for (int64_t i = task * kGrain; i < end; i += 16) {
      store16(op + i, _mm512_mul_ps(jina_local_rerank::gelu512(load16(gp + i)), load16(up_ + i)));
    }
  });
  return out;
}

// LayerNorm(x + x_bias + residual) * weight + bias for bf16 rows [rows, n] (n a multiple of 16; x_bias optional, one
// per column): the sum and the norm in fp32 (layer_norm_row), rounded to bf16 once. x and residual may be row
// slices (contiguous rows).
at::Tensor add_norm(const at::Tensor& x, const std::optional<at::Tensor>& x_bias, const at::Tensor& residual,
                    const at::Tensor& weight, const at::Tensor& bias, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && residual.scalar_type() == at::kBFloat16, "x, residual: bf16");
  TORCH_CHECK(x.dim() == 2 && x.sizes() == residual.sizes() && x.stride(1) == 1 && residual.stride(1) == 1,
              "x and residual must be [rows, n] with contiguous rows");
  const int64_t rows = x.size(0), n = x.size(1);
  TORCH_CHECK(n % 16 == 0 && weight.numel() == n && bias.numel() == n, "n a multiple of 16, one weight per column");
  TORCH_CHECK(!x_bias || x_bias->numel() == n, "one x_bias per column");
  const at::Tensor gamma = weight.to(at::kFloat).contiguous(), beta = bias.to(at::kFloat).contiguous();
  const at::Tensor shift = x_bias ? x_bias->to(at::kFloat).contiguous() : at::zeros({n}, gamma.options());
  at::Tensor out = at::empty({rows, n}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const c10::BFloat16* xp = x.data_ptr<c10::BFloat16>();
  const c10::BFloat16* rp = residual.data_ptr<c10::BFloat16>();
  const float* g = gamma.data_ptr<float>();
  const float* b = beta.data_ptr<float>();
  const float* xb = shift.data_ptr<float>();
  c10::BFloat16* op = out.data_ptr<c10::BFloat16>();
  jina_local_rerank::parallel_for_each(rows, kGrainRows, false, [&](int64_t r) {
    thread_local std::vector<float> sum;
    sum.resize(n);
    const c10::BFloat16* xr = xp + r * x.stride(0);
    const c10::BFloat16* rr = rp + r * residual.stride(0);
    for (int64_t c = 0; c < n; c += 16) {
      const __m512 shifted = _mm512_add_ps(load16(xr + c), _mm512_loadu_ps(xb + c));
      _mm512_storeu_ps(sum.data() + c, _mm512_add_ps(shifted, load16(rr + c)));
    }
    jina_local_rerank::layer_norm_row(sum.data(), n, g, b, static_cast<float>(eps), op + r * n);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jina_local_rerank_cpu, m) {
  m.def("gelu_product(Tensor gate, Tensor up) -> Tensor");
  m.impl("gelu_product", c10::DispatchKey::CPU, TORCH_FN(gelu_product));
  m.def("add_norm(Tensor x, Tensor? x_bias, Tensor residual, Tensor weight, Tensor bias, float eps) -> Tensor");
  m.impl("add_norm", c10::DispatchKey::CPU, TORCH_FN(add_norm));
}
