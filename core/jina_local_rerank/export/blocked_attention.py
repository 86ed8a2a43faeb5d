"""ALiBi attention over blocks of query rows inside the exported graph: bounded memory at any batch and length.

A plain graph of attention holds ``[batch, heads, length, length]`` scores (and bias, and probabilities) at once:
32 GB for the model card's padded ``[10, 8192]`` call. Here the export's attention is one operator,
``jina_local_rerank::alibi_attention`` (a torch custom op the tracer keeps whole), which the exporter writes as a
placeholder node and :func:`expand_attention` then replaces with a standard ONNX ``Loop`` over blocks of
query rows: each iteration builds its rows' ALiBi bias from the token positions and computes
``softmax(q k^T + bias) v`` for them, so a call holds about ``BLOCK_ELEMENTS`` scores per tensor whatever its
shape. ``Loop`` (opset 1+) and the operators in its body run in every onnxruntime release transformers.js ships
(onnxruntime-web/node 1.14 in @xenova/transformers 2.17 onwards). com.microsoft's fused ``Attention`` /
``MultiHeadAttention`` would not help: their bias input is itself a ``[batch, heads, length, length]`` tensor. Nor
would a key window shared by all heads (the engine skips keys beyond each head's ALiBi reach): the smallest slope's
reach exceeds the 8,192-token window.

Graph optimizers and post-training quantizers that look for the usual attention pattern cannot see into the
``Loop`` (OpenVINO's NNCF fails on it): for them the export writes the same computation for all rows at once
(``attention="whole"``), at ``[batch, heads, length, length]`` memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.attention import ATTENTION_BLOCK_ELEMENTS

DOMAIN = "jina_local_rerank"
PLACEHOLDER = "AlibiAttention"
# Scores (and bias, probabilities) per block: as in the engine, 64 MiB per tensor in fp32.
BLOCK_ELEMENTS = ATTENTION_BLOCK_ELEMENTS
INPUTS = ("q", "k", "v", "positions", "key_mask", "neg_slopes")


@torch.library.custom_op(f"{DOMAIN}::alibi_attention", mutates_args=())
def alibi_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    key_mask: torch.Tensor,
    neg_slopes: torch.Tensor,
) -> torch.Tensor:
    """``softmax(q k^T - slope[h] |pos_i - pos_j| + key_mask_j) v`` for ``q, k, v`` ``[batch, heads, length, d]``
    (``q`` already scaled by ``1/sqrt(d)``), ``positions`` and ``key_mask`` (0 or a large negative) fp32
    ``[batch, length]``, ``neg_slopes`` ``[heads]``."""
    bias = neg_slopes[None, :, None, None] * (positions[:, None, :, None] - positions[:, None, None, :]).abs()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias + key_mask[:, None, None, :], scale=1.0)


@alibi_attention.register_fake
def _(q, k, v, positions, key_mask, neg_slopes):  # noqa: ANN001, ANN202 (torch.library's signature)
    return torch.empty_like(q)


def _placeholder_opset():  # type: ignore[no-untyped-def]
    """The onnxscript opset of the placeholder node (its schema registered with onnx once)."""
    import onnx.defs
    from onnxscript.values import Opset

    if not onnx.defs.has(PLACEHOLDER, DOMAIN):
        parameter = onnx.defs.OpSchema.FormalParameter
        onnx.defs.register_schema(
            onnx.defs.OpSchema(
                PLACEHOLDER,
                DOMAIN,
                1,
                inputs=[parameter(name, "tensor(float)") for name in INPUTS],
                outputs=[parameter("context", "tensor(float)")],
            )
        )
    return Opset(DOMAIN, 1)


def translation_table() -> dict:
    """The exporter's ``custom_translation_table`` entry: the custom op as one placeholder node."""
    opset = _placeholder_opset()

    def placeholder(q, k, v, positions, key_mask, neg_slopes):  # type: ignore[no-untyped-def]
        return getattr(opset, PLACEHOLDER)(q, k, v, positions, key_mask, neg_slopes)

    return {torch.ops.jina_local_rerank.alibi_attention.default: placeholder}


def _whole_nodes(node, prefix: str) -> list:  # type: ignore[no-untyped-def]
    """The standard ONNX nodes computing one placeholder ``node`` for all query rows at once: the attention pattern
    graph optimizers and quantizers (OpenVINO's NNCF) recognise, at ``[batch, heads, length, length]`` memory."""
    import numpy as np
    from onnx import helper, numpy_helper

    q, k, v, positions, key_mask, neg_slopes = node.input
    (output,) = node.output
    nodes = []

    def add(op: str, inputs: list[str], label: str, **attributes) -> str:  # type: ignore[no-untyped-def]
        nodes.append(helper.make_node(op, inputs, [f"{prefix}/{label}"], name=f"{prefix}/{label}", **attributes))
        return f"{prefix}/{label}"

    def axes(label: str, values: list[int]) -> str:
        return add("Constant", [], label, value=numpy_helper.from_array(np.array(values, dtype=np.int64), label))

    query_positions = add("Unsqueeze", [positions, axes(f"{prefix}/axes_13", [1, 3])], "query_positions")
    key_positions = add("Unsqueeze", [positions, axes(f"{prefix}/axes_12", [1, 2])], "key_positions")
    mask = add("Unsqueeze", [key_mask, axes(f"{prefix}/axes_12b", [1, 2])], "mask")  # [B, 1, 1, L]
    slopes = add("Unsqueeze", [neg_slopes, axes(f"{prefix}/axes_023", [0, 2, 3])], "slopes")  # [1, H, 1, 1]
    distance = add("Abs", [add("Sub", [query_positions, key_positions], "offset")], "distance")  # [B, 1, L, L]
    bias = add("Add", [add("Mul", [distance, slopes], "alibi"), mask], "bias")
    keys_t = add("Transpose", [k], "keys_t", perm=[0, 1, 3, 2])
    scores = add("Add", [add("MatMul", [q, keys_t], "products"), bias], "scores")
    probabilities = add("Softmax", [scores], "probabilities", axis=-1)
    nodes.append(helper.make_node("MatMul", [probabilities, v], [output], name=f"{prefix}/context"))
    return nodes


def _blocked_nodes(node, prefix: str) -> list:  # type: ignore[no-untyped-def]
    """The standard ONNX nodes computing one placeholder ``node``: a ``Loop`` over blocks of query rows."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    q, k, v, positions, key_mask, neg_slopes = node.input
    (output,) = node.output
    nodes = []

    def name(label: str) -> str:
        return f"{prefix}/{label}"

    def add(op: str, inputs: list[str], label: str, **attributes) -> str:  # type: ignore[no-untyped-def]
        nodes.append(helper.make_node(op, inputs, [name(label)], name=name(label), **attributes))
        return name(label)

    def constant(label: str, values: list[int] | int) -> str:
        array = np.array(values, dtype=np.int64)
        return add("Constant", [], label, value=numpy_helper.from_array(array, name(label)))

    one_vector = constant("one_vector", [1])
    budget = constant("budget", BLOCK_ELEMENTS)
    shape = add("Shape", [q], "shape")
    batch = add("Slice", [shape, constant("i0", [0]), constant("i1", [1])], "batch")
    heads = add("Slice", [shape, constant("i1b", [1]), constant("i2", [2])], "heads")
    length = add("Slice", [shape, constant("i2b", [2]), constant("i3", [3])], "length")
    head_dim = add("Slice", [shape, constant("i3b", [3]), constant("i4", [4])], "head_dim")
    # Rows per block: BLOCK_ELEMENTS // (batch * heads * length), at least 1, at most length.
    keys_per_row = add("Mul", [add("Mul", [batch, heads], "batch_heads"), length], "scores_per_row")
    rows = add(
        "Max",
        [add("Min", [add("Div", [budget, keys_per_row], "budget_rows"), length], "rows_capped"), one_vector],
        "rows",
    )
    blocks = add(
        "Div",
        [add("Sub", [add("Add", [length, rows], "length_plus_rows"), one_vector], "ceil_numerator"), rows],
        "blocks",
    )
    padding = add("Sub", [add("Mul", [blocks, rows], "padded_length"), length], "padding")
    # Query rows (and their positions) padded to whole blocks; padded rows compute values nobody reads.
    padded_q = add(
        "Pad",
        [
            q,
            add(
                "Concat",
                [constant("pad_q_head", [0, 0, 0, 0, 0, 0]), padding, constant("pad_q_tail", [0])],
                "pads_q",
                axis=0,
            ),
        ],
        "padded_q",
    )
    padded_positions = add(
        "Pad",
        [positions, add("Concat", [constant("pad_p_head", [0, 0, 0]), padding], "pads_p", axis=0)],
        "padded_positions",
    )
    keys_t = add("Transpose", [k], "keys_t", perm=[0, 1, 3, 2])
    key_positions = add("Unsqueeze", [positions, constant("axes_12", [1, 2])], "key_positions")  # [B, 1, 1, L]
    mask = add("Unsqueeze", [key_mask, constant("axes_12b", [1, 2])], "mask")  # [B, 1, 1, L]
    slopes = add("Unsqueeze", [neg_slopes, constant("axes_023", [0, 2, 3])], "slopes")  # [1, H, 1, 1]

    def body_node(op: str, inputs: list[str], label: str, **attributes):  # type: ignore[no-untyped-def]
        body.append(helper.make_node(op, inputs, [name(f"body/{label}")], name=name(f"body/{label}"), **attributes))
        return name(f"body/{label}")

    body: list = []
    iteration, condition = name("body/iteration"), name("body/condition")
    start = body_node(
        "Mul", [body_node("Unsqueeze", [iteration, constant("axis_0", [0])], "iteration_1d"), rows], "start"
    )
    stop = body_node("Add", [start, rows], "stop")
    q_block = body_node("Slice", [padded_q, start, stop, constant("axis_2", [2])], "q")
    query_positions = body_node("Slice", [padded_positions, start, stop, one_vector], "query_positions")
    query_positions = body_node("Unsqueeze", [query_positions, constant("axes_13", [1, 3])], "query_positions_4d")
    distance = body_node("Abs", [body_node("Sub", [query_positions, key_positions], "offset")], "distance")
    bias = body_node("Add", [body_node("Mul", [distance, slopes], "alibi"), mask], "bias")
    scores = body_node("Add", [body_node("MatMul", [q_block, keys_t], "products"), bias], "scores")
    context = body_node("MatMul", [body_node("Softmax", [scores], "probabilities", axis=-1), v], "context")
    condition_out = body_node("Identity", [condition], "condition_out")
    graph = helper.make_graph(
        body,
        name("body"),
        [
            helper.make_tensor_value_info(iteration, TensorProto.INT64, []),
            helper.make_tensor_value_info(condition, TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info(condition_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(context, TensorProto.FLOAT, None),
        ],
    )
    true = add("Constant", [], "true", value=numpy_helper.from_array(np.array(True), name("true")))
    count = add("Squeeze", [blocks, constant("axis_0b", [0])], "count")
    looped = add("Loop", [count, true], "blocks_out", body=graph)  # [blocks, B, H, rows, d]
    stacked = add("Transpose", [looped], "stacked", perm=[1, 2, 0, 3, 4])
    joined_shape = add("Concat", [batch, heads, constant("minus_one", [-1]), head_dim], "joined_shape", axis=0)
    joined = add("Reshape", [stacked, joined_shape], "joined")
    nodes.append(
        helper.make_node(
            "Slice",
            [joined, constant("start_0", [0]), length, constant("axis_2b", [2])],
            [output],
            name=name("context"),
        )
    )
    return nodes


def expand_attention(model, layout: str = "blocked") -> int:  # type: ignore[no-untyped-def]
    """Replace every placeholder node of ``model`` (an ``onnx.ModelProto``) with standard ONNX nodes, in place: a
    ``Loop`` over blocks of query rows (``"blocked"``, bounded memory), or all rows at once (``"whole"``). Drops
    the placeholder's domain; returns how many were replaced."""
    expand = {"blocked": _blocked_nodes, "whole": _whole_nodes}[layout]
    replaced, nodes = 0, []
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == PLACEHOLDER:
            nodes += expand(node, f"{layout}_attention_{replaced}")
            replaced += 1
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    kept = [opset for opset in model.opset_import if opset.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return replaced
