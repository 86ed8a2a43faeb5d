"""JinaBERT cross-encoder in plain PyTorch: the readable specification (``shared/spec/jinabert.md``).

Module names mirror the checkpoint's tensor names (``bert.encoder.layer.0.mlp.gated_layers.weight`` is
``model.bert.encoder.layer[0].mlp.gated_layers.weight``), so loading is a straight key match. The model knows
nothing of tokenization, batching or files: it maps packed ``input_ids`` to one logit per sequence, attending as
the :class:`~jina_local_rerank.model.attention.PackedAttention` it is given says (how attention is computed lives in
``attention.py``, CPU row blocking in ``row_blocks.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import PackedAttention, alibi_slopes
from .config import JinaBertConfig
from .cpu_kernels import eager_inference, gelu_product, linear_add_norm
from .first_layer_projections import FirstLayerProjections
from .quantization import Int8Linear
from .row_blocks import blocked_linears, blocked_rows


def fp32_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in fp32 whatever the weights' dtype: for the small head (pooler and classifier, never
    quantized), where a bf16 logit would keep only three significant digits."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


def add_norm(linear: nn.Module, x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(linear(x) + residual)``, the end of every attention and feed-forward block: the product's scaling,
    the sum and the norm in one native pass for int8 layers, the bias, the sum and the norm for bf16, where the kernels
    run."""
    if isinstance(linear, Int8Linear) and linear.fuses_norm:
        return linear.add_norm(x, residual, norm)
    return linear_add_norm(linear, x, residual, norm)


class JinaBertEmbeddings(nn.Module):
    """``LayerNorm(word[ids] + token_type[0])``: no position embeddings (ALiBi replaces them)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        # Uninitialized (the checkpoint fills them): nn.Embedding's random init on the meta device would import
        # torch._dynamo, seconds of load time.
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.token_type_embeddings = nn.Embedding(
            config.type_vocab_size,
            config.hidden_size,
            _weight=torch.empty(config.type_vocab_size, config.hidden_size),
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Token type ids are always 0 for this model; row 0 is added to every position.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class JinaBertSelfAttention(nn.Module):
    """Multi-head self-attention with the symmetric ALiBi bias, over packed sequences."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        attention: PackedAttention,
        cls_only: bool = False,
        qkv: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """``x`` packed ``[T, H]`` -> attention context ``[T, H]``, or with ``cls_only`` ``[sequences, H]`` for
        each sequence's ``<s>`` token only. ``qkv``: the projections of ``x``, where they are known already."""
        if cls_only:
            (q,) = blocked_linears([self.query], x[attention.cls_rows])
            q = q.view(len(q), self.num_heads, self.head_dim)
            return attention.cls_context(x, q, self.key, self.value).reshape(len(q), -1)
        q, k, v = qkv or blocked_linears([self.query, self.key, self.value], x)
        q, k, v = (t.view(len(t), self.num_heads, self.head_dim) for t in (q, k, v))
        # Scores are fp32 in every mode (the ALiBi bias is too large for fp16/bf16); each mode sees to it.
        return attention(q, k, v, cls_only=False).reshape(len(q), -1)


class JinaBertSelfOutput(nn.Module):
    """Attention output projection, residual and post-norm."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return add_norm(self.dense, context, residual, self.LayerNorm)


class JinaBertAttention(nn.Module):
    """``attention.self`` and ``attention.output``, which :class:`JinaBertLayer` runs in turn."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)


class JinaBertGLUMLP(nn.Module):
    """GEGLU feed-forward: exact (erf) GELU on the first half of ``gated_layers``, times the second half."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.gated_layers, Int8Linear) and self.gated_layers.fuses_geglu:
            # int8 with the native kernels: GELU, product and the next layer's quantization in one pass.
            return add_norm(self.wo, self.gated_layers.geglu(x), x, self.layernorm)
        if isinstance(self.gated_layers, nn.Linear):
            # One GEMM per half gives contiguous outputs, so GELU and the product run without strided copies.
            weight = self.gated_layers.weight
            gated = F.linear(x, weight[: self.intermediate_size])
            non_gated = F.linear(x, weight[self.intermediate_size :])
        else:  # Int8Linear, Bf16ViaFp32Linear (CPU int8, bf16): one call, then split (packed int8 cannot be sliced)
            gated, non_gated = self.gated_layers(x).split(self.intermediate_size, dim=-1)
        return add_norm(self.wo, gelu_product(gated, non_gated), x, self.layernorm)


class JinaBertLayer(nn.Module):
    """One encoder layer: attention, then the GEGLU feed-forward."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaBertAttention(config)
        self.mlp = JinaBertGLUMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        attention: PackedAttention,
        cls_only: bool = False,
        qkv: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """``[T, H]`` -> ``[T, H]``; with ``cls_only``, ``[sequences, H]`` for each sequence's ``<s>`` only."""
        context = self.attention.self(x, attention, cls_only, qkv)
        residual = x[attention.cls_rows] if cls_only else x
        return blocked_rows(lambda c, r: self.mlp(self.attention.output(c, r)), context, residual)


class JinaBertEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers (``encoder.layer.N``)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))


class JinaBertPooler(nn.Module):
    """``tanh(dense(x[<s>]))``: the pair representation the classifier reads (fp32)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return torch.tanh(fp32_linear(self.dense, first_token))


class JinaBertModel(nn.Module):
    """Embeddings, encoder and pooler: the ``bert.`` prefix of the checkpoint."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.pooler = JinaBertPooler(config)


class JinaBertForReranking(nn.Module):
    """JinaBERT encoder + tanh pooler + one-logit classifier: ``(input_ids, lengths) -> logits [sequences]``."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = JinaBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        # Where set (CPU bf16, by load_checkpoint), inference reads the first layer's q, k, v per token id from this
        # table instead of multiplying.
        self.first_layer_projections: FirstLayerProjections | None = None

    def _first_layer_qkv(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """The first layer's q, k, v from the table, where it is kept and inference runs on a CPU outside graph
        capture (training, export and compile multiply)."""
        if self.first_layer_projections is None or input_ids.device.type != "cpu" or not eager_inference():
            return None
        attention = self.bert.encoder.layer[0].attention.self
        return self.first_layer_projections(
            input_ids, self.bert.embeddings, [attention.query, attention.key, attention.value]
        )

    def forward(self, input_ids: torch.Tensor, attention: PackedAttention) -> torch.Tensor:
        """Raw logits (fp32, before sigmoid), one per sequence.

        ``input_ids`` ``[T]`` holds the sequences end to end (each starting with ``<s>``); ``attention`` was built
        for their lengths (e.g. ``ExactLengthAttention(lengths, model.alibi_slopes)``). Dense layers run on the
        ``T`` real tokens only.
        """
        x = self.bert.embeddings(input_ids)
        *layers, last = self.bert.encoder.layer
        for index, layer in enumerate(layers):
            x = layer(x, attention, qkv=self._first_layer_qkv(input_ids) if index == 0 else None)
        # The pooler reads only <s>: the last layer needs keys and values of every token but queries, attention,
        # output and feed-forward for <s> alone (a quarter of the model's work skipped, same result).
        cls = last(x, attention, cls_only=True)
        return fp32_linear(self.classifier, self.bert.pooler(cls)).squeeze(-1)
