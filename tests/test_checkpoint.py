"""Checkpoint loading: local directories, the Hugging Face cache (offline), validation errors."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
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
    _rewrite_weights(broken_copy, lambda t: t.update({"bert.embeddings.position_embeddings.weight": torch.zeros(4, 64)}))
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
    assert "not in the Hugging Face cache" in message and "local directory" in message


def test_cli_uses_hub_cache_with_hf_hub_offline(checkpoint_dir: Path, tmp_path: Path):
    cache = tmp_path / "hub"
    _hub_cache(checkpoint_dir, cache, "acme/jina-reranker-test")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    command = [sys.executable, "-m", "jina_local_rerank.cli", "rerank", "--device", "cpu", "--quiet", "-q", "query"]
    ok = subprocess.run([*command, "--model", "acme/jina-reranker-test", "doc a", "doc b"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    expected = Reranker(checkpoint_dir, device="cpu").rerank("query", ["doc a", "doc b"])
    results = json.loads(ok.stdout)["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [
        (r["index"], r["relevance_score"]) for r in expected
    ]
    missing = subprocess.run([*command, "--model", "acme/not-cached", "doc"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert "HF_HUB_OFFLINE is set" in missing.stderr and "Traceback" not in missing.stderr
