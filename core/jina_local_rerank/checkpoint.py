"""Finding a checkpoint (local directory or Hugging Face Hub id) and loading its weights, with validation.

Only data files are ever read: ``config.json``, tokenizer files and ``model.safetensors`` (or, failing that,
``pytorch_model.bin`` through torch's weights-only unpickler). Remote code in the repository is never
downloaded or executed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .config import JinaBertConfig
from .errors import CheckpointError, ModelNotFoundError
from .attention import alibi_slopes
from .model import JinaBertForReranking
from .quantization import quantize_linear_layers

DEFAULT_MODEL = "jinaai/jina-reranker-v1-tiny-en"
MODEL_ENV_VAR = "JINA_LOCAL_RERANK_MODEL"
SAFETENSORS_FILE = "model.safetensors"
PYTORCH_BIN_FILE = "pytorch_model.bin"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def default_model() -> str:
    """The model used when none is given: ``$JINA_LOCAL_RERANK_MODEL`` if set, else the tiny reranker's Hub id."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def resolve_model_dir(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> Path:
    """Return a local directory holding the checkpoint ``model`` (a directory or a Hub id).

    Hub ids are fetched through ``huggingface_hub`` (its cache, ``revision``, ``token`` and ``HF_HUB_OFFLINE``
    apply), downloading only configuration, tokenizer and weight files.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Hub id or a directory path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = os.fspath(model)
    if path.exists():
        raise ModelNotFoundError(f"model {name!r} is a file; pass the checkpoint's directory")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model directory {name!r} does not exist")
    return _download_from_hub(name, revision=revision, cache_dir=cache_dir, token=token)


def _download_from_hub(
    repo_id: str, *, revision: str | None, cache_dir: str | os.PathLike[str] | None, token: str | bool | None
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = ["config.json", *TOKENIZER_FILES, SAFETENSORS_FILE]
    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, token=token, allow_patterns=patterns
            )
        )
        if not (folder / SAFETENSORS_FILE).is_file():
            # Older repositories (and turbo's .bin copy) may only have the pickle; it is read weights-only.
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    allow_patterns=[PYTORCH_BIN_FILE],
                )
            )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(f"{repo_id!r} (revision {revision or 'main'}) on the Hugging Face Hub: {exc}") from None
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise ModelNotFoundError(
            f"{repo_id!r} (revision {revision or 'main'}) is not in the Hugging Face cache at {cache} and the Hub "
            f"cannot be reached{offline}. Download it on a connected machine (`hf download {repo_id}`) and copy "
            f"the cache, or pass a local directory: Reranker(model='/path/to/{repo_id.split('/')[-1]}')."
        ) from None
    return folder


def expected_shapes(config: JinaBertConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``config`` holds, by name, with its shape."""
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (config.vocab_size, h),
        "bert.embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "bert.embeddings.LayerNorm.weight": (h,),
        "bert.embeddings.LayerNorm.bias": (h,),
        "bert.pooler.dense.weight": (h, h),
        "bert.pooler.dense.bias": (h,),
        "classifier.weight": (1, h),
        "classifier.bias": (1,),
    }
    for n in range(config.num_hidden_layers):
        p = f"bert.encoder.layer.{n}."
        for name in ("query", "key", "value"):
            shapes[f"{p}attention.self.{name}.weight"] = (h, h)
            shapes[f"{p}attention.self.{name}.bias"] = (h,)
        shapes[f"{p}attention.output.dense.weight"] = (h, h)
        shapes[f"{p}attention.output.dense.bias"] = (h,)
        shapes[f"{p}attention.output.LayerNorm.weight"] = (h,)
        shapes[f"{p}attention.output.LayerNorm.bias"] = (h,)
        shapes[f"{p}mlp.gated_layers.weight"] = (2 * i, h)
        shapes[f"{p}mlp.wo.weight"] = (h, i)
        shapes[f"{p}mlp.wo.bias"] = (h,)
        shapes[f"{p}mlp.layernorm.weight"] = (h,)
        shapes[f"{p}mlp.layernorm.bias"] = (h,)
    return shapes


def _read_state_dict(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    safetensors_path = directory / SAFETENSORS_FILE
    bin_path = directory / PYTORCH_BIN_FILE
    if safetensors_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return safetensors_path, load_file(safetensors_path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{safetensors_path}: not a readable safetensors file ({exc})") from None
    if bin_path.is_file():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # the unpickler raises many types; all mean "not a plain weights file"
            raise CheckpointError(
                f"{bin_path}: cannot be read with torch's weights-only loader ({exc}); convert it to safetensors"
            ) from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{bin_path}: holds a {type(state).__name__}, not a state dict")
        return bin_path, state
    raise CheckpointError(f"{directory}: no weights found (expected {SAFETENSORS_FILE} or {PYTORCH_BIN_FILE})")


def load_checkpoint(directory: Path, dtype: torch.dtype, device: torch.device) -> JinaBertForReranking:
    """Build the model from ``directory`` in ``dtype`` on ``device``; every tensor is checked by name and shape.

    ``torch.qint8`` loads fp32 weights and quantizes the encoder's linear layers to int8 (CPU; see
    :mod:`~jina_local_rerank.quantization`).
    """
    config = JinaBertConfig.from_json_file(directory / "config.json")
    path, state = _read_state_dict(directory)
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in state]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]!r}{more}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]!r}{more} (not part of a JinaBERT reranker)")
    for key, shape in expected.items():
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(tensor.shape)}, config.json implies {list(shape)}"
            )
        if not tensor.is_floating_point():
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {tensor.dtype}, expected floating point")
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
    return model
