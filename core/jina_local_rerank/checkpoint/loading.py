"""Loading a checkpoint's weights into the model, each tensor checked before anything is built.

Only data files are ever read: ``config.json``, tokenizer files and ``model.safetensors`` (or, failing that,
``pytorch_model.bin`` through torch's weights-only unpickler).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..model.attention import alibi_slopes
from ..model.cpu_kernels import prepare_bf16
from ..model.first_layer_projections import FirstLayerProjections
from ..model.jinabert import JinaBertForReranking
from ..model.quantization import quantize_linear_layers
from ..validation import torch_name
from .files import check_regular_file, read_config
from .format import PYTORCH_BIN_FILE, SAFETENSORS_FILE, SAFETENSORS_FLOAT_DTYPES, Header, check_tensors


def _weights_path(directory: Path) -> Path:
    for name in (SAFETENSORS_FILE, PYTORCH_BIN_FILE):
        # exists(), not is_file(): a FIFO or device under the name is reported, not skipped.
        if (directory / name).exists():
            return directory / name
    raise CheckpointError(f"{directory}: no weights found (expected {SAFETENSORS_FILE} or {PYTORCH_BIN_FILE})")


def _read_weights(path: Path, check: Callable[[Header], None]) -> dict[str, torch.Tensor]:
    """The tensors in ``path``, read once ``check`` has passed on their names, shapes and dtypes.

    For safetensors these come from the file's header, so a file that does not match its config fails before
    any tensor is read; a ``pytorch_model.bin`` is read whole by torch's weights-only unpickler first.
    """
    check_regular_file(path)
    if path.name == PYTORCH_BIN_FILE:
        state = _read_pickle(path)
        check({name: (tuple(t.shape), torch_name(t.dtype)) for name, t in state.items()})
        return state
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            header: Header = {}
            for name in file.keys():
                tensor = file.get_slice(name)
                dtype = tensor.get_dtype()
                header[name] = (tuple(tensor.get_shape()), SAFETENSORS_FLOAT_DTYPES.get(dtype, dtype))
            check(header)
            return {name: file.get_tensor(name) for name in header}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types; all mean "not a plain weights file"
        raise CheckpointError(
            f"{path}: cannot be read with torch's weights-only loader ({exc}); convert it to safetensors"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a named tensor")
    return state


def load_checkpoint(directory: Path, dtype: torch.dtype, device: torch.device) -> JinaBertForReranking:
    """Build the model from ``directory`` in ``dtype`` on ``device``.

    ``config.json`` is checked key by key, every tensor by name, shape and dtype before any is read, and every
    value for being finite before the model is built. ``torch.qint8`` loads fp32 weights and quantizes the
    encoder's linear layers to int8 (CPU; see :mod:`~jina_local_rerank.model.quantization`); bf16 on a CPU without
    native bf16 matmuls gets the fallback of :mod:`~jina_local_rerank.model.cpu_kernels`. CPU bf16 keeps the first
    layer's projections per token id (:mod:`~jina_local_rerank.model.first_layer_projections`).
    """
    config_path = directory / "config.json"
    config = read_config(config_path)
    path = _weights_path(directory)
    state = _read_weights(path, lambda header: check_tensors(path, config, config_path, header))
    for key, tensor in state.items():
        # min and max propagate NaN and show infinities: one pass, no temporary (isfinite().all() is 4x slower).
        if not all(torch.isfinite(bound) for bound in torch.aminmax(tensor)):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values")
    with torch.device("meta"):
        model = JinaBertForReranking(config)
    weight_dtype = torch.float32 if dtype == torch.qint8 else dtype
    weights = {key: tensor.to(device=device, dtype=weight_dtype) for key, tensor in state.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    # Non-persistent buffers are not in the file: rebuild the slopes off the meta device.
    model.alibi_slopes = alibi_slopes(config.num_attention_heads).to(device)
    model.eval()
    if dtype == torch.qint8:
        quantize_linear_layers(model.bert.encoder)
    elif dtype == torch.bfloat16 and device.type == "cpu":
        prepare_bf16(model)
        model.first_layer_projections = FirstLayerProjections()
    return model
