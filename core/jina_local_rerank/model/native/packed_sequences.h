// The sequences of a packed forward pass as the attention kernels read them.

#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace jina_local_rerank {

// Each sequence's length (from a tensor of lengths) and first row, checked to add up to `rows`.
struct PackedSequences {
  std::vector<int64_t> lengths, offsets;

  PackedSequences(const at::Tensor& lengths_tensor, int64_t rows) {
    const at::Tensor sizes = lengths_tensor.to(at::kLong).contiguous();
    lengths.assign(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + sizes.numel());
    offsets.assign(lengths.size(), 0);
    for (size_t s = 1; s < lengths.size(); ++s) offsets[s] = offsets[s - 1] + lengths[s - 1];
    for (const int64_t n : lengths) TORCH_CHECK(n > 0, "every sequence needs a row");
    TORCH_CHECK(lengths.empty() || offsets.back() + lengths.back() == rows, "lengths must add up to the rows");
  }

  int64_t count() const { return static_cast<int64_t>(lengths.size()); }
};

// A small tensor's values (the heads' ALiBi slopes) as fp32.
inline std::vector<float> float_values(const at::Tensor& t) {
  const at::Tensor values = t.to(at::kFloat).contiguous();
  return std::vector<float>(values.data_ptr<float>(), values.data_ptr<float>() + values.numel());
}

}  // namespace jina_local_rerank
