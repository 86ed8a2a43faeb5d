"""Checkpoint loading: local directories, the Hugging Face cache (offline), validation errors."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from jina_local_rerank import CheckpointError, ModelNotFoundError, Reranker, UnsupportedModelError


@pytest.fixture()
def broken_copy(checkpoint_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(checkpoint_dir, target)
    return target


def _rewrite_weights(directory: Path, edit) -> None:
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_directory_is_model_not_found(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Reranker(tmp_path / "nope", device="cpu")


def test_missing_config_names_the_file(broken_copy: Path):
    (broken_copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        Reranker(broken_copy, device="cpu")


def test_unknown_architecture_is_rejected(broken_copy: Path):
    config = json.loads((broken_copy / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (broken_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="architectures"):
        Reranker(broken_copy, device="cpu")


def test_non_alibi_model_is_rejected(broken_copy: Path):
    config = json.loads((broken_copy / "config.json").read_text())
    config["position_embedding_type"] = "absolute"
    (broken_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="position_embedding_type"):
        Reranker(broken_copy, device="cpu")


def test_missing_tensor_names_file_and_tensor(broken_copy: Path):
    _rewrite_weights(broken_copy, lambda t: t.pop("bert.encoder.layer.1.mlp.wo.bias"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*bert\.encoder\.layer\.1\.mlp\.wo\.bias"):
        Reranker(broken_copy, device="cpu")


def test_unexpected_tensor_names_it(broken_copy: Path):
    _rewrite_weights(
        broken_copy, lambda t: t.update({"bert.embeddings.position_embeddings.weight": torch.zeros(4, 64)})
    )
    with pytest.raises(CheckpointError, match="unexpected tensor 'bert.embeddings.position_embeddings.weight'"):
        Reranker(broken_copy, device="cpu")


def test_wrong_shape_names_tensor_and_shapes(broken_copy: Path):
    def shrink(tensors):
        tensors["classifier.weight"] = torch.zeros(2, 64, dtype=torch.bfloat16)

    _rewrite_weights(broken_copy, shrink)
    with pytest.raises(CheckpointError, match=r"'classifier.weight' has shape \[2, 64\].*\[1, 64\]"):
        Reranker(broken_copy, device="cpu")


def test_missing_weights_and_tokenizer_are_named(broken_copy: Path):
    (broken_copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        Reranker(broken_copy, device="cpu")
    (broken_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        Reranker(broken_copy, device="cpu")


def test_corrupt_safetensors_is_a_checkpoint_error(broken_copy: Path):
    (broken_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Reranker(broken_copy, device="cpu")


def test_pytorch_bin_loads_weights_only_and_scores_the_same(checkpoint_dir: Path, broken_copy: Path):
    torch.save(load_file(broken_copy / "model.safetensors"), broken_copy / "pytorch_model.bin")
    (broken_copy / "model.safetensors").unlink()
    docs = ["a list is a mutable sequence", "tuples are immutable"]
    from_bin = Reranker(broken_copy, device="cpu").score("what is a list?", docs).scores
    from_safetensors = Reranker(checkpoint_dir, device="cpu").score("what is a list?", docs).scores
    assert from_bin == from_safetensors


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(broken_copy: Path):
    (broken_copy / "model.safetensors").unlink()
    (broken_copy / "pytorch_model.bin").write_bytes(pickle.dumps({"x": _Payload()}))
    with pytest.raises(CheckpointError, match="weights-only"):
        Reranker(broken_copy, device="cpu")


def _hub_cache(checkpoint_dir: Path, cache: Path, repo_id: str) -> None:
    """Lay out ``repo_id`` in a Hugging Face Hub cache exactly as huggingface_hub does (blobs + symlinks)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for index, file in enumerate(sorted(checkpoint_dir.iterdir())):
        blob = repo / "blobs" / f"blob{index:04d}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))


def test_hub_id_loads_from_the_cache_offline(checkpoint_dir: Path, tmp_path: Path):
    cache = tmp_path / "hub"
    _hub_cache(checkpoint_dir, cache, "acme/jina-reranker-test")
    hub = Reranker("acme/jina-reranker-test", cache_dir=cache, device="cpu")
    local = Reranker(checkpoint_dir, device="cpu")
    docs = ["first document", "second one"]
    assert hub.score("query", docs).scores == local.score("query", docs).scores
    assert hub.engine.directory.is_relative_to(cache)


def test_hub_id_not_cached_offline_says_how_to_fix(tmp_path: Path):
    with pytest.raises(ModelNotFoundError) as info:
        Reranker("acme/missing-model", cache_dir=tmp_path / "empty", device="cpu")
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "local checkpoint directory" in message
    # What a shell user and a Python user each type, and that "acme/missing-model" is no folder here either.
    assert "--model /path/to/dir" in message and "model='/path/to/dir'" in message
    assert "$JINA_LOCAL_RERANK_MODEL" in message and "no directory acme/missing-model exists" in message


def test_cli_uses_hub_cache_with_hf_hub_offline(checkpoint_dir: Path, tmp_path: Path):
    cache = tmp_path / "hub"
    _hub_cache(checkpoint_dir, cache, "acme/jina-reranker-test")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    command = [sys.executable, "-m", "jina_local_rerank.cli", "rerank", "--device", "cpu", "--quiet", "-q", "query"]
    ok = subprocess.run(
        [*command, "--model", "acme/jina-reranker-test", "doc a", "doc b"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    expected = Reranker(checkpoint_dir, device="cpu").rerank("query", ["doc a", "doc b"])
    results = json.loads(ok.stdout)["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [
        (r["index"], r["relevance_score"]) for r in expected
    ]
    missing = subprocess.run(
        [*command, "--model", "acme/not-cached", "doc"], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1
    assert "HF_HUB_OFFLINE is set" in missing.stderr and "Traceback" not in missing.stderr


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("layers", [10**6, 10**7])
def test_absurd_layer_count_fails_before_allocating(broken_copy: Path, layers: int):
    _edit_config(broken_copy, num_hidden_layers=layers)
    message = rf"config\.json: num_hidden_layers is {layers}, but .* holds 2 layers"
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=message):
            Reranker(broken_copy, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20  # the expected-tensor table alone would take gigabytes


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"])
def test_a_link_to_a_device_is_refused(broken_copy: Path, name: str):
    (broken_copy / name).unlink()
    (broken_copy / name).symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} is not a regular file \(a character device\)"):
        Reranker(broken_copy, device="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX only")
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "special_tokens_map.json", "model.safetensors"])
def test_a_fifo_is_refused_without_blocking(broken_copy: Path, name: str):
    fifo = broken_copy / name
    fifo.unlink()
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def load() -> None:
        try:
            Reranker(broken_copy, device="cpu")
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():  # blocked opening the FIFO: open the other end so that the thread can finish
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(60)
        pytest.fail(f"loading blocked on the FIFO {name}")
    assert len(errors) == 1 and isinstance(errors[0], CheckpointError)
    assert f"{name} is not a regular file (a FIFO)" in str(errors[0])


def test_a_json_file_over_the_size_limit_is_refused(broken_copy: Path, monkeypatch):
    import jina_local_rerank.checkpoint.files as checkpoint_files

    monkeypatch.setattr(checkpoint_files, "MAX_JSON_BYTES", 4096)
    path = broken_copy / "config.json"
    path.write_text(path.read_text() + " " * 4096)
    with pytest.raises(CheckpointError, match=r"config\.json is larger than"):
        Reranker(broken_copy, device="cpu")


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "special_tokens_map.json"])
def test_deeply_nested_json_is_a_checkpoint_error(broken_copy: Path, name: str):
    (broken_copy / name).write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} is nested too deeply"):
        Reranker(broken_copy, device="cpu")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architectures": 5}, "architectures must be a list of strings, got 5"),
        ({"architectures": ["JinaBertModel", 3]}, "architectures must be a list of strings"),
        ({"layer_norm_eps": "1e-12"}, "layer_norm_eps must be a finite number > 0, got '1e-12'"),
        ({"layer_norm_eps": float("nan")}, "layer_norm_eps must be a finite number > 0, got nan"),
        ({"layer_norm_eps": 0}, "layer_norm_eps must be a finite number > 0, got 0"),
        ({"max_position_embeddings": 2.5}, "max_position_embeddings must be an integer >= 1, got 2.5"),
        ({"type_vocab_size": 0}, "type_vocab_size must be an integer >= 1, got 0"),
        ({"num_attention_heads": True}, "num_attention_heads must be an integer >= 1, got True"),
        ({"hidden_size": [64]}, "hidden_size must be an integer >= 1, got a list"),
        ({"vocab_size": None}, "vocab_size must be an integer >= 1, got None"),
        ({"id2label": ["LABEL_0"]}, "id2label must be an object, got"),
        ({"position_embedding_type": {"a": 1}}, "position_embedding_type is an object, but"),
    ],
)
def test_malformed_config_values_name_the_file_and_key(broken_copy: Path, changes: dict, message: str):
    _edit_config(broken_copy, **changes)
    with pytest.raises(CheckpointError, match=r"config\.json: " + re.escape(message)):
        Reranker(broken_copy, device="cpu")


def test_missing_config_key_is_named(broken_copy: Path):
    config = json.loads((broken_copy / "config.json").read_text())
    del config["intermediate_size"]
    (broken_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: intermediate_size is missing"):
        Reranker(broken_copy, device="cpu")


@pytest.mark.parametrize("content", ["[]", '"<s>"', "null"])
def test_tokenizer_config_must_be_an_object(broken_copy: Path, content: str):
    (broken_copy / "tokenizer_config.json").write_text(content)
    with pytest.raises(CheckpointError, match=r"tokenizer_config\.json: .* must hold a JSON object"):
        Reranker(broken_copy, device="cpu")


def test_wrongly_typed_special_token_names_the_file_and_key(broken_copy: Path):
    path = broken_copy / "special_tokens_map.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pad_token": 1}))
    with pytest.raises(CheckpointError, match=r"special_tokens_map\.json: pad_token must be a string"):
        Reranker(broken_copy, device="cpu")


def test_tokenizer_ids_beyond_the_embedding_rows_are_refused(broken_copy: Path):
    rows = 64  # the test tokenizer has 2,000 tokens
    _rewrite_weights(
        broken_copy,
        lambda t: t.update(
            {"bert.embeddings.word_embeddings.weight": t["bert.embeddings.word_embeddings.weight"][:rows].clone()}
        ),
    )
    _edit_config(broken_copy, vocab_size=rows)
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: the tokenizer has ids up to 1999, but .* 64 rows"):
        Reranker(broken_copy, device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(broken_copy: Path, value: float):
    def spoil(tensors):
        tensors["bert.encoder.layer.1.mlp.wo.weight"].view(-1)[123] = value

    _rewrite_weights(broken_copy, spoil)
    message = r"model\.safetensors: tensor 'bert\.encoder\.layer\.1\.mlp\.wo\.weight' holds NaN or infinite values"
    with pytest.raises(CheckpointError, match=message):
        Reranker(broken_copy, device="cpu")


def test_integer_tensor_is_refused_from_the_header(broken_copy: Path):
    _rewrite_weights(broken_copy, lambda t: t.update({"classifier.bias": torch.zeros(1, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match=r"'classifier\.bias' has dtype I32, expected one of"):
        Reranker(broken_copy, device="cpu")
