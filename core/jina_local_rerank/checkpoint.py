"""Finding a checkpoint (local directory or Hugging Face Hub id) and loading its weights, with validation.

Only data files are ever read: ``config.json``, tokenizer files and ``model.safetensors`` (or, failing that,
``pytorch_model.bin`` through torch's weights-only unpickler). Remote code in the repository is never
downloaded or executed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint_files import check_regular_file
from .config import JinaBertConfig
from .errors import CheckpointError, ModelNotFoundError
from .attention import alibi_slopes
from .model import JinaBertForReranking
from .cpu_kernels import prepare_bf16
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


def public_model_name(model: str | os.PathLike[str]) -> str:
    """What to call ``model`` where others read it (a model card): a Hub id as given; a local directory's Hub id
    when it is a snapshot in a Hugging Face cache (``models--org--name/snapshots/REV``), else the folder's name.
    Never a filesystem path."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if not path.is_dir() and _HUB_ID.match(name):
        return name
    path = path.resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name or name


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
        raise ModelNotFoundError(f"model directory {name!r} does not exist (relative to {Path.cwd()})")
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
        # "org/name" may also have been meant as a relative directory: say that none exists.
        not_a_folder = f"; no directory {repo_id} exists under {Path.cwd()} either" if "/" in repo_id else ""
        raise ModelNotFoundError(
            f"{repo_id!r} (revision {revision or 'main'}) is not in the Hugging Face cache at {cache} and the Hub "
            f"cannot be reached{offline}{not_a_folder}. Download it on a connected machine (`hf download "
            f"{repo_id}`) and copy the cache, or use a local checkpoint directory: --model /path/to/dir on the "
            f"command line, model='/path/to/dir' in Python, or ${MODEL_ENV_VAR}=/path/to/dir for both."
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


# Tensor dtypes a checkpoint may store, as safetensors names them and as torch does.
SAFETENSORS_FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
FLOAT_DTYPES = frozenset(SAFETENSORS_FLOAT_DTYPES.values())
_LAYER_NAME = re.compile(r"bert\.encoder\.layer\.(\d{1,9})\.")

# What a weights file holds, read before its data: tensor name -> (shape, dtype name).
Header = dict[str, tuple[tuple[int, ...], str]]


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
        check({name: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in state.items()})
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


def _check_tensors(path: Path, config: JinaBertConfig, config_path: Path, header: Header) -> None:
    """Raise ``CheckpointError`` unless ``header`` (of the weights file ``path``) holds exactly the tensors of
    ``config`` (read from ``config_path``), with their shapes and floating-point dtypes."""
    # Layers first: expected_shapes() grows with num_hidden_layers, which must not exceed what the file holds.
    layers = {int(match[1]) for name in header if (match := _LAYER_NAME.match(name))}
    if len(layers) != config.num_hidden_layers:
        raise CheckpointError(
            f"{config_path}: num_hidden_layers is {config.num_hidden_layers}, but {path} holds "
            f"{len(layers)} layers (bert.encoder.layer.N)"
        )
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in header]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]!r}{more}")
    unexpected = sorted(set(header) - set(expected))
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]!r}{more} (not part of a JinaBERT reranker)")
    for key, shape in expected.items():
        stored_shape, dtype = header[key]
        if stored_shape != shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(stored_shape)}, config.json implies {list(shape)}"
            )
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {key!r} has dtype {dtype}, expected one of {', '.join(sorted(FLOAT_DTYPES))}"
            )


def load_checkpoint(directory: Path, dtype: torch.dtype, device: torch.device) -> JinaBertForReranking:
    """Build the model from ``directory`` in ``dtype`` on ``device``.

    ``config.json`` is checked key by key, every tensor by name, shape and dtype before any is read, and every
    value for being finite before the model is built. ``torch.qint8`` loads fp32 weights and quantizes the
    encoder's linear layers to int8 (CPU; see :mod:`~jina_local_rerank.quantization`); bf16 on a CPU without
    native bf16 matmuls gets the fallback of :mod:`~jina_local_rerank.cpu_kernels`.
    """
    config_path = directory / "config.json"
    config = JinaBertConfig.from_json_file(config_path)
    path = _weights_path(directory)
    state = _read_weights(path, lambda header: _check_tensors(path, config, config_path, header))
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
    return model
