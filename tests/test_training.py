"""Training: data formats and their errors, the losses against hand-computed values, hard-negative mining,
gradients against a float64 reference, teacher scores and their cache, students, the output format, resuming,
and the proof: a reranker trained here ranks held-out queries far better than before, through every runtime."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jina_local_rerank import Reranker
from jina_local_rerank.checkpoint.files import read_config
from jina_local_rerank.checkpoint.format import expected_shapes
from jina_local_rerank.checkpoint.loading import load_checkpoint
from jina_local_rerank.errors import DatasetError, FileProblem
from jina_local_rerank.model.attention import ExactLengthAttention, PaddedAttention
from jina_local_rerank.model.config import JinaBertConfig
from jina_local_rerank.options import RerankerOptions
from jina_local_rerank.ranking import best_first
from jina_local_rerank.testing.docstring_task import write_docstring_dataset
from jina_local_rerank.testing.random_checkpoint import CheckpointShape, write_random_checkpoint
from jina_local_rerank.training import (
    BinaryCrossEntropyLoss,
    KLDivergenceLoss,
    LambdaLoss,
    MarginMSELoss,
    SoftmaxCrossEntropyLoss,
    TeacherScorer,
    Trainer,
    TrainingConfig,
    build_student,
    default_layers,
    load_training_data,
    mine_hard_negatives,
)
from jina_local_rerank.training.data import QueryGroup, TrainingData
from jina_local_rerank.training.modeling import enable_activation_checkpointing, trainable_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = CheckpointShape(2, 64, 4, 128)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows), encoding="utf-8"
    )
    return path


# --- data formats ---------------------------------------------------------------------------------------------


def test_every_row_format_becomes_a_group(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "query": "sort a list",
                "positive": "list.sort sorts in place",
                "negatives": ["open a file", "read bytes"],
            },
            {"query": "graded", "document": "best", "label": 2},
            {"query": "graded", "document": "good", "label": 1},
            {"query": "sort a list", "positive": "sorted returns a new list", "negative": "zip iterables"},
            {"query": "graded", "document": "bad", "label": 0},
            {"query": "teacher", "documents": ["a", "b", "c"], "scores": [1.5, -0.5, 0.25]},
            {"query": "labelled list", "documents": ["x", "y"], "labels": [0, 3], "extra": "ignored column"},
            "",
        ],
    )
    data = load_training_data(path)
    assert data.rows == 7
    groups = {(g.query, g.documents[0]): g for g in data.groups}
    assert len(data.groups) == 5  # two triplet rows stay two lists; the pairs of "graded" form one group
    first = groups[("sort a list", "list.sort sorts in place")]
    assert first.labels == (1.0, 0.0, 0.0) and first.teacher is None and first.where.endswith("line 1")
    assert groups[("sort a list", "sorted returns a new list")].documents == (
        "sorted returns a new list",
        "zip iterables",
    )
    graded = groups[("graded", "best")]
    assert graded.documents == ("best", "good", "bad") and graded.labels == (2.0, 1.0, 0.0)
    assert groups[("teacher", "a")].teacher == (1.5, -0.5, 0.25) and groups[("teacher", "a")].labels is None
    assert groups[("labelled list", "x")].labels == (0.0, 3.0)
    assert data.relevant["graded"] == {"best", "good"}
    assert set(data.corpus) >= {"list.sort sorts in place", "zip iterables", "bad", "c", "y"}
    assert data.skipped == {}


def test_a_custom_teacher_column_and_pair_scores(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "api.jsonl",
        [
            {"query": "q", "document": "d1", "jina_api": 0.9},
            {"query": "q", "document": "d2", "jina_api": 0.1},
            {"query": "r", "positive": "p", "negatives": ["n"], "jina_api": [2.0, -1.0]},
        ],
    )
    groups = load_training_data(path, teacher_column="jina_api").groups
    assert [g.teacher for g in groups] == [(0.9, 0.1), (2.0, -1.0)]
    assert [g.labels for g in groups] == [None, (1.0, 0.0)]


def test_duplicates_are_set_aside_and_counted(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "dup.jsonl",
        [
            {"query": "q", "positive": "same", "negatives": ["same", "other", "other"]},
        ],
    )
    data = load_training_data(path)
    assert data.groups[0].documents == ("same", "other") and data.groups[0].labels == (1.0, 0.0)
    assert data.skipped == {"documents listed twice for one query": 2}


@pytest.mark.parametrize(
    "row, message",
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
        ({"positive": "p"}, "line 2: field 'query' is missing"),
        ({"query": 3, "positive": "p"}, "line 2: field 'query' must be a string, got int"),
        ({"query": "  ", "positive": "p"}, "line 2: field 'query' is empty"),
        ({"query": "q", "positive": "p", "negatives": "n"}, "line 2: field 'negatives' must be a list of strings"),
        (
            {"query": "q", "positive": "p", "negatives": ["n", 5]},
            "line 2: field 'negatives'[1] must be a string, got int",
        ),
        (
            {"query": "q", "positive": "p", "negatives": ["n"], "scores": [1.0]},
            "line 2: field 'scores' has 1 values for 2 documents",
        ),
        ({"query": "q", "document": "d", "label": "1"}, "line 2: field 'label' must be a number, got str"),
        ({"query": "q", "document": "d", "label": True}, "line 2: field 'label' must be a number, got bool"),
        ({"query": "q", "documents": ["a"], "labels": [float("nan")]}, "line 2: field 'labels'[0] must be a finite"),
        ({"query": "q", "documents": []}, "line 2: field 'documents' is empty"),
        ({"query": "q", "text": "d"}, "line 2: no 'positive', 'document' or 'documents' field"),
    ],
)
def test_bad_rows_name_the_file_line_and_field(tmp_path: Path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"query": "fine", "positive": "row"}, row])
    with pytest.raises(DatasetError) as error:
        load_training_data(path)
    assert str(error.value).startswith(f"{path} {message}")


def test_a_query_whose_pairs_are_labelled_only_in_part_is_an_error(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"query": "q", "document": "a", "label": 1},
            {"query": "other", "document": "x", "label": 0},
            {"query": "q", "document": "b"},
        ],
    )
    with pytest.raises(DatasetError, match=r"mixed.jsonl line 3: this row of query 'q' has no label while others"):
        load_training_data(path)


def test_missing_and_empty_sources(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        load_training_data(tmp_path / "nothing.jsonl")
    with pytest.raises(DatasetError, match="no rows"):
        load_training_data(write_jsonl(tmp_path / "empty.jsonl", ["", ""]))


def write_beir(root: Path, splits: dict[str, list[tuple[str, str, int]]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = {
        "d1": "Paris is the capital of France.",
        "d2": "Berlin is the capital of Germany.",
        "d3": "Bread is baked from flour.",
        "d4": "The Seine flows through Paris.",
        "d5": "Capital gains are taxed.",
        "d6": "Germany borders France.",
    }
    write_jsonl(root / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in corpus.items()])
    write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q1", "text": "capital of France"},
            {"_id": "q2", "text": "capital of Germany"},
            {"_id": "q3", "text": "how is bread made"},
        ],
    )
    for split, rows in splits.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows)
        )
    return root


def test_a_beir_folder_trains_on_its_train_split_else_test(tmp_path: Path):
    both = write_beir(
        tmp_path / "both", {"train": [("q1", "d1", 2), ("q1", "d5", 0), ("q3", "d3", 0)], "test": [("q2", "d2", 1)]}
    )
    data = load_training_data(both)
    assert [(g.query, g.documents, g.labels) for g in data.groups] == [
        ("capital of France", ("Paris is the capital of France.", "Capital gains are taxed."), (2.0, 0.0))
    ]
    assert data.skipped == {"judged queries without a relevant document": 1}
    assert len(data.corpus) == 6 and data.relevant == {"capital of France": {"Paris is the capital of France."}}
    only_test = write_beir(tmp_path / "test-only", {"test": [("q2", "d2", 1)]})
    assert [g.query for g in load_training_data(only_test).groups] == ["capital of Germany"]


# --- mining ---------------------------------------------------------------------------------------------------


def test_mining_takes_bm25s_best_and_guards_against_false_negatives(tmp_path: Path):
    pytest.importorskip("bm25s")
    corpus = (
        "paris capital france",
        "paris capital france seine river city",
        "capital of germany berlin",
        "bread flour water",
        "france wine cheese",
        "paris hilton",
    )
    positive = corpus[0]
    group = QueryGroup("paris capital france seine", (positive,), (1.0,), None, "test")
    data = TrainingData("test", (group,), corpus, {"paris capital france seine": frozenset({positive, corpus[5]})}, 1)

    unguarded = mine_hard_negatives(data, 3, margin=None, seed=0).groups[0]
    # BM25's order after the positive: the document sharing most words first; the judged-relevant one never.
    assert unguarded.documents[:2] == (positive, corpus[1]) and corpus[5] not in unguarded.documents
    assert len(unguarded.documents) == 4 and unguarded.labels == (1.0, 0.0, 0.0, 0.0)

    guarded = mine_hard_negatives(data, 3, margin=0.0, seed=0)
    # corpus[1] matches the query better than the positive does: a likely false negative, skipped and counted.
    assert corpus[1] not in guarded.groups[0].documents and len(guarded.groups[0].documents) == 4
    assert guarded.skipped == {
        "mined candidates judged relevant (qrels)": 1,
        "mined candidates scored above the positive by more than the margin": 1,
    }
    assert guarded.mined == 3
    assert mine_hard_negatives(data, 3, margin=0.0, seed=0).groups == guarded.groups  # seeded
    tolerant = mine_hard_negatives(data, 3, margin=10.0, seed=0).groups[0]
    assert corpus[1] in tolerant.documents


def test_mining_counts_what_it_cannot_fill(tmp_path: Path):
    pytest.importorskip("bm25s")
    scored = QueryGroup("q", ("a",), (1.0,), (0.5,), "row 1")
    lonely = QueryGroup("r", ("b",), (1.0,), None, "row 2")
    data = TrainingData("test", (scored, lonely), ("a", "b", "c"), {}, 2)  # stopwords only: no BM25 term
    mined = mine_hard_negatives(data, 5, margin=None)
    assert mined.groups[0] == scored  # the data's teacher scores cannot cover mined documents
    assert set(mined.groups[1].documents) == {"a", "b", "c"}
    assert mined.skipped == {
        "queries short of negatives (the data's teacher scores cover only its documents)": 1,
        "queries short of negatives (corpus exhausted)": 1,
    }


# --- losses against hand-computed values ----------------------------------------------------------------------


def lists(*rows: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths as a padded tensor and its mask."""
    width = max(map(len, rows))
    padded = torch.tensor([row + [0.0] * (width - len(row)) for row in rows], dtype=torch.float64)
    mask = torch.tensor([[True] * len(row) + [False] * (width - len(row)) for row in rows])
    return padded, mask


def test_bce_is_the_mean_binary_cross_entropy_of_each_list():
    logits, mask = lists([2.0, -1.0], [0.5, 0.0, 3.0])
    labels, _ = lists([1.0, 0.0], [0.5, 0.0, 1.0])
    sp = lambda x: math.log1p(math.exp(x))  # softplus: -log sigmoid(-x)
    expected = [(sp(-2.0) + sp(-1.0)) / 2, (0.5 * sp(-0.5) + 0.5 * sp(0.5) + sp(0.0) + sp(-3.0)) / 3]
    assert BinaryCrossEntropyLoss()(logits, labels, mask).tolist() == pytest.approx(expected, abs=1e-12)


def test_softmax_cross_entropy_with_one_positive_and_with_grades():
    logits, mask = lists([2.0, 1.0, 0.0], [1.0, 3.0])
    labels, _ = lists([1.0, 0.0, 0.0], [2.0, 1.0])
    z = math.exp(2) + math.exp(1) + 1
    first = -math.log(math.exp(2) / z)
    second = -(
        2 / 3 * math.log(math.exp(1) / (math.exp(1) + math.exp(3)))
        + 1 / 3 * math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    )
    assert SoftmaxCrossEntropyLoss()(logits, labels, mask).tolist() == pytest.approx([first, second], abs=1e-12)


def test_lambda_loss_weights_misordered_pairs_by_their_ndcg_change():
    # Predicted order: d0 (label 0), d1 (label 2), d2 (label 1); ideal DCG = 2/log2(2) + 1/log2(3).
    logits, mask = lists([3.0, 1.0, 0.0])
    labels, _ = lists([0.0, 2.0, 1.0])
    D = lambda r: math.log2(1 + r)
    max_dcg = 2 / D(1) + 1 / D(2)
    G = [0.0, 2 / max_dcg, 1 / max_dcg]  # gains in predicted order
    s = [3.0, 1.0, 0.0]

    def weight(i: int, j: int) -> float:  # ranks i, j are 1-based
        delta = abs(i - j)
        loss2 = abs(1 / D(delta) - 1 / D(delta + 1))
        lambda_rank = abs(1 / D(i) - 1 / D(j))
        return (10 * loss2 + lambda_rank) * abs(G[i - 1] - G[j - 1])

    def cost(i: int, j: int) -> float:  # -w log2 sigmoid(s_i - s_j), the better-labelled document first
        return -weight(i, j) * math.log2(1 / (1 + math.exp(-(s[i - 1] - s[j - 1]))))

    expected = cost(2, 1) + cost(3, 1) + cost(2, 3)  # pairs with y_i > y_j: (d1,d0), (d2,d0), (d1,d2)
    assert LambdaLoss()(logits, labels, mask).tolist() == pytest.approx([expected], abs=1e-12)
    right, _ = lists([1.0, 3.0, 2.0])  # the ideal order costs less
    assert LambdaLoss()(right, labels, mask).item() < expected / 5


def test_margin_mse_and_kl_against_the_teacher():
    logits, mask = lists([1.0, 0.0, -1.0], [0.5, 0.5])
    teacher, _ = lists([2.0, 0.0, 0.0], [3.0, 1.0])
    # Pair margins: (1-0)-(2-0) = -1, (1+1)-(2-0) = 0, (0+1)-(0-0) = 1 -> mean of squares 2/3; the pair: (0-2)^2 = 4.
    assert MarginMSELoss()(logits, teacher, mask).tolist() == pytest.approx([2 / 3, 4.0], abs=1e-12)

    def kl(s: list[float], t: list[float], temperature: float) -> float:
        p = [math.exp(x / temperature) / sum(math.exp(y / temperature) for y in t) for x in t]
        q = [math.exp(x / temperature) / sum(math.exp(y / temperature) for y in s) for x in s]
        return temperature**2 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))

    for temperature in (1.0, 2.0):
        expected = [kl([1.0, 0.0, -1.0], [2.0, 0.0, 0.0], temperature), kl([0.5, 0.5], [3.0, 1.0], temperature)]
        got = KLDivergenceLoss(temperature=temperature)(logits, teacher, mask).tolist()
        assert got == pytest.approx(expected, abs=1e-12)


# --- the model trains through the inference code --------------------------------------------------------------


def reference_logits(
    params: dict[str, torch.Tensor], sequences: list[torch.Tensor], config: JinaBertConfig, slopes: torch.Tensor
) -> torch.Tensor:
    """The spec's forward pass, one padded-free sequence at a time, in whatever dtype ``params`` are."""
    h, d, inner = config.num_attention_heads, config.head_dim, config.intermediate_size
    norm = lambda x, name: F.layer_norm(
        x, (config.hidden_size,), params[f"{name}.weight"], params[f"{name}.bias"], config.layer_norm_eps
    )
    linear = lambda x, name: F.linear(x, params[f"{name}.weight"], params.get(f"{name}.bias"))
    logits = []
    for ids in sequences:
        n = len(ids)
        x = norm(
            params["bert.embeddings.word_embeddings.weight"][ids]
            + params["bert.embeddings.token_type_embeddings.weight"][0],
            "bert.embeddings.LayerNorm",
        )
        distance = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs().to(x.dtype)
        bias = -slopes.to(x.dtype)[:, None, None] * distance
        for i in range(config.num_hidden_layers):
            p = f"bert.encoder.layer.{i}."
            q, k, v = (
                linear(x, p + "attention.self." + name).view(n, h, d).transpose(0, 1)
                for name in ("query", "key", "value")
            )
            context = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, -1) @ v
            x = norm(
                linear(context.transpose(0, 1).reshape(n, -1), p + "attention.output.dense") + x,
                p + "attention.output.LayerNorm",
            )
            gated = linear(x, p + "mlp.gated_layers")
            x = norm(linear(F.gelu(gated[:, :inner]) * gated[:, inner:], p + "mlp.wo") + x, p + "mlp.layernorm")
        pooled = torch.tanh(linear(x[0], "bert.pooler.dense"))
        logits.append(linear(pooled, "classifier")[0])
    return torch.stack(logits)


@pytest.mark.parametrize("mode", [ExactLengthAttention, PaddedAttention])
@pytest.mark.parametrize("lengths", [[5, 9, 3], [1100, 40]], ids=["short", "windowed"])
def test_attention_modes_backpropagate_like_a_float64_reference(checkpoint_dir: Path, mode, lengths):
    """Every parameter's gradient through the packed fp32 model matches float64 autograd of the spec (the 1100-token
    sequence takes the exact mode's windowed path; GEGLU's in-place product is differentiated correctly)."""
    model = trainable_model(checkpoint_dir, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (sum(lengths),), generator=generator)
    weights = torch.randn(len(lengths), generator=generator)
    params64 = {name: tensor.detach().double().requires_grad_(True) for name, tensor in model.state_dict().items()}
    reference = reference_logits(params64, list(ids.split(lengths)), model.config, model.alibi_slopes)
    (reference * weights.double()).sum().backward()

    logits = model(ids, mode(lengths, model.alibi_slopes))
    (logits * weights).sum().backward()
    assert logits.double().tolist() == pytest.approx(reference.tolist(), abs=1e-5)
    scale = max(p.grad.abs().max().item() for p in params64.values())
    for name, parameter in model.named_parameters():
        # Key biases have a gradient of exactly 0 (softmax ignores a shift): compare against the global scale.
        assert parameter.grad.double().sub(params64[name].grad).abs().max().item() <= 1e-4 * scale, name


def test_activation_checkpointing_gives_the_same_gradients(checkpoint_dir: Path):
    lengths = [30, 12, 50]
    ids = torch.randint(5, 1000, (sum(lengths),), generator=torch.Generator().manual_seed(1))
    grads = []
    for checkpointed in (False, True):
        model = trainable_model(checkpoint_dir, torch.device("cpu"))
        if checkpointed:
            enable_activation_checkpointing(model)
        model(ids, PaddedAttention(lengths, model.alibi_slopes)).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        assert sorted(model.state_dict()) == sorted(expected_shapes(model.config))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6)


def test_trainable_model_has_fp32_leaf_parameters(checkpoint_dir: Path):
    model = trainable_model(checkpoint_dir, torch.device("cpu"))
    assert model.training
    for name, parameter in model.named_parameters():
        assert parameter.is_leaf and parameter.requires_grad and parameter.dtype == torch.float32, name


# --- teacher scores, students, the output format --------------------------------------------------------------


def test_teacher_scores_come_from_the_engine_and_a_rerun_reads_them_from_disk(tmp_path: Path):
    from jina_local_rerank import cached_engines

    teacher = write_random_checkpoint(tmp_path / "teacher", TINY, seed=5)
    options = RerankerOptions(model=str(teacher), device="cpu")
    pairs = [
        ("sort a list", "list.sort sorts in place"),
        ("sort a list", "open a file"),
        ("zip", "open a file"),
        ("sort a list", "list.sort sorts in place"),
    ]
    logits, report = TeacherScorer(options, tmp_path / "cache").score_pairs(pairs)
    assert (report.scored, report.cached) == (3, 0) and report.cache_file.is_file()
    assert logits == pytest.approx(Reranker(options).score_pairs(pairs, raw=True).logits, abs=1e-6)
    Reranker(options).release()

    again, report = TeacherScorer(options, tmp_path / "cache").score_pairs(pairs[:3])
    assert (report.scored, report.cached) == (0, 3) and again == logits[:3]
    assert not any(key.model == str(teacher.resolve()) for key in cached_engines())  # never loaded
    more, report = TeacherScorer(options, tmp_path / "cache").score_pairs([*pairs, ("new", "pair")])
    assert (report.scored, report.cached) == (1, 3) and more[:4] == logits

    # Other weights under the same path, or other settings that change logits: another cache.
    write_random_checkpoint(teacher, TINY, seed=6)
    assert TeacherScorer(options, tmp_path / "cache").cache_file != report.cache_file
    assert TeacherScorer(options.replace(max_length=64), tmp_path / "cache").cache_file != report.cache_file


def test_default_layers_are_evenly_spaced_with_first_and_last_kept():
    assert default_layers(12, 4) == [0, 4, 7, 11]
    assert default_layers(6, 4) == [0, 2, 3, 5]
    assert default_layers(4, 4) == [0, 1, 2, 3] and default_layers(6, 1) == [0]
    with pytest.raises(ValueError, match="1 to 6 layers"):
        default_layers(6, 7)


def read_safetensors(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict]:
    """Names, shapes and dtypes of a safetensors file, and its metadata, from its header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        return {
            key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype()) for key in handle.keys()
        }, metadata


def test_a_student_of_turbo_has_exactly_tinys_format(parity_dir: Path, tmp_path: Path):
    student = build_student(parity_dir / "turbo", tmp_path / "student", num_layers=4)
    assert json.loads((student / "config.json").read_text()) == json.loads(
        (parity_dir / "tiny" / "config.json").read_text()
    )
    assert read_safetensors(student / "model.safetensors") == read_safetensors(
        parity_dir / "tiny" / "model.safetensors"
    )
    teacher = load_checkpoint(parity_dir / "turbo", torch.float32, torch.device("cpu")).state_dict()
    weights = load_checkpoint(student, torch.float32, torch.device("cpu")).state_dict()
    for new, old in enumerate(default_layers(6, 4)):  # 0, 2, 3, 5
        key = "attention.self.query.weight"
        assert torch.equal(weights[f"bert.encoder.layer.{new}.{key}"], teacher[f"bert.encoder.layer.{old}.{key}"])
    assert torch.equal(weights["classifier.weight"], teacher["classifier.weight"])
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (student / name).read_bytes() == (parity_dir / "turbo" / name).read_bytes()
    with pytest.raises(ValueError, match="distinct and increasing"):
        build_student(parity_dir / "turbo", tmp_path / "bad", layers=[3, 1])


def triplets(count: int, seed: int = 0) -> list[dict]:
    """Small triplets from the docstring task's pairs (real text, offline)."""
    from jina_local_rerank.testing.docstring_task import docstring_pairs

    pairs = docstring_pairs()
    rows = []
    for index in range(count):
        _, summary, rest = pairs[(seed + 7 * index) % len(pairs)]
        negatives = [pairs[(seed + 7 * index + k * 31) % len(pairs)][2][:300] for k in (1, 2)]
        rows.append({"query": summary, "positive": rest[:300], "negatives": negatives})
    return rows


def test_fine_tuning_writes_exactly_the_input_format(parity_dir: Path, tmp_path: Path):
    """The saved tensors have the names, shapes and dtypes (bf16) of the published format, config.json the same
    keys and values, the tokenizer files the same bytes; the resumable state stays out of the folder."""
    data = write_jsonl(tmp_path / "train.jsonl", triplets(4))
    options = RerankerOptions(model=str(parity_dir / "tiny"), device="cpu", max_length=96)
    config = TrainingConfig(negatives=2, step_tokens=2048, show_progress="never")
    result = Trainer(options, train=data, output=tmp_path / "out", config=config).fit()
    out = result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "vocab.json",
            "merges.txt",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
    )
    assert (out / "config.json").read_text() and json.loads((out / "config.json").read_text()) == json.loads(
        (parity_dir / "tiny" / "config.json").read_text()
    )
    tensors, metadata = read_safetensors(out / "model.safetensors")
    original, original_metadata = read_safetensors(parity_dir / "tiny" / "model.safetensors")
    assert tensors == original and metadata == original_metadata == {"format": "pt"}
    config_shapes = expected_shapes(read_config(out / "config.json"))
    assert {name: shape for name, (shape, _) in tensors.items()} == config_shapes
    assert {dtype for _, dtype in tensors.values()} == {"BF16"}
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).read_bytes() == (parity_dir / "tiny" / name).read_bytes()
    trained = load_checkpoint(out, torch.float32, torch.device("cpu")).state_dict()
    start = load_checkpoint(parity_dir / "tiny", torch.float32, torch.device("cpu")).state_dict()
    assert any(not torch.equal(trained[name], start[name]) for name in start)  # it did train
    assert result.steps == result.total_steps >= 1 and result.tokens > 0
    assert not (tmp_path / "out.training" / "state.pt").exists()  # finished: nothing to resume
    assert (tmp_path / "out.training" / "log.jsonl").read_text().count('"loss"') == result.steps
    card = (out / "README.md").read_text()
    assert "base_model:" in card and "| queries | 4 |" in card and "| learning_rate | `2e-05` |" in card

    with pytest.raises(ValueError, match="exists; pass overwrite"):
        Trainer(options, train=data, output=out, config=config)
    with pytest.raises(ValueError, match="is the starting checkpoint"):
        Trainer(options.replace(model=str(out)), train=data, output=out, config=config, overwrite=True).fit()


def test_failed_runs_leave_the_users_folders_and_the_process_as_they_were(checkpoint_dir: Path, tmp_path: Path):
    import random

    teacher = tmp_path / "teacher"
    shutil.copytree(checkpoint_dir, teacher)
    (teacher / "NOTES.txt").write_text("mine")
    train = write_jsonl(tmp_path / "train.jsonl", triplets(4))
    run = RerankerOptions(device="cpu", max_length=64)
    config = TrainingConfig(loss="margin-mse", negatives=2, mining_margin=None, show_progress="never")
    with pytest.raises(FileProblem, match="holds the input"):  # replacing the output would delete the teacher
        Trainer(
            run,
            teacher=str(teacher),
            student_layers=1,
            train=train,
            output=teacher,
            config=config,
            overwrite=True,
            teacher_cache_dir=tmp_path / "cache",
        ).fit()
    assert (teacher / "NOTES.txt").read_text() == "mine" and not (tmp_path / "teacher.training").exists()

    # Evaluation data with neither judgments nor a teacher: refused before anything is written.
    unjudged = write_jsonl(tmp_path / "eval.jsonl", [{"query": "q", "documents": ["a b", "c d", "e f"]}])
    with pytest.raises(DatasetError, match="no relevance labels and no teacher scores"):
        Trainer(
            run.replace(model=str(checkpoint_dir)),
            train=train,
            eval=unjudged,
            output=tmp_path / "out",
            config=TrainingConfig(negatives=2, show_progress="never"),
        ).fit()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval.jsonl", "teacher", "train.jsonl"]

    # A damaged saved state is a one-line FileProblem, not an unpickling traceback.
    (tmp_path / "out.training").mkdir()
    (tmp_path / "out.training" / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(FileProblem, match="cannot read the saved training state"):
        Trainer(
            run.replace(model=str(checkpoint_dir)),
            train=train,
            output=tmp_path / "out",
            resume=True,
            config=TrainingConfig(negatives=2, show_progress="never"),
        ).fit()

    # A run seeds its own generators: the caller's random and torch states are untouched.
    random.seed(123)
    torch.manual_seed(123)
    expected = (random.random(), torch.rand(1))
    random.seed(123)
    torch.manual_seed(123)
    Trainer(
        run.replace(model=str(checkpoint_dir)),
        train=train,
        output=tmp_path / "fine",
        config=TrainingConfig(negatives=2, epochs=1, step_tokens=600, seed=7, show_progress="never"),
    ).fit()
    assert (random.random(), torch.rand(1)) == expected


def test_distilling_lists_that_judge_nothing_relevant(checkpoint_dir: Path, tmp_path: Path):
    """Labels all 0 with a teacher column: a teacher's loss still learns from them (any documents of the list)."""
    rows = [
        {"query": f"query {i}", "document": f"document {i} {j}", "label": 0, "score": float(j - i)}
        for i in range(3)
        for j in range(3)
    ]
    result = Trainer(
        RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64),
        train=write_jsonl(tmp_path / "scored.jsonl", rows),
        output=tmp_path / "out",
        config=TrainingConfig(loss="kl", negatives=2, teacher_column="score", show_progress="never"),
    ).fit()
    assert result.steps >= 1 and result.data["queries"] == 3


# --- resuming ---------------------------------------------------------------------------------------------------


def test_ctrl_c_saves_and_resuming_gives_the_uninterrupted_result(checkpoint_dir: Path, tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", triplets(12))
    held_out = write_jsonl(tmp_path / "eval.jsonl", triplets(4, seed=3))
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64)
    config = TrainingConfig(
        epochs=2, learning_rate=1e-3, negatives=2, step_tokens=600, save_every=None, eval_every=2, show_progress="never"
    )

    def run(output: Path, **kwargs) -> Trainer:
        return Trainer(options, train=train, eval=held_out, output=output, config=config, **kwargs)

    straight = run(tmp_path / "straight").fit()
    assert straight.total_steps >= 6

    def press_ctrl_c(report) -> None:
        if report.step == 3:
            signal.raise_signal(signal.SIGINT)  # as the terminal sends it: the trainer finishes the step, saves

    steps_seen = []
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed").fit(on_step=lambda report: (steps_seen.append(report.step), press_ctrl_c(report)))
    assert steps_seen == [1, 2, 3]
    state = torch.load(tmp_path / "resumed.training" / "state.pt", weights_only=True)
    assert state["run"]["step"] == 3
    with pytest.raises(ValueError, match="unfinished run; pass resume"):
        run(tmp_path / "resumed")
    with pytest.raises(ValueError, match="cannot resume .* learning_rate was 0.001, now 0.002"):
        Trainer(
            options,
            train=train,
            eval=held_out,
            output=tmp_path / "resumed",
            resume=True,
            config=config.replace(learning_rate=2e-3),
        ).fit()

    steps_after = []
    resumed = run(tmp_path / "resumed", resume=True).fit(on_step=lambda report: steps_after.append(report.step))
    assert steps_after == list(range(4, straight.total_steps + 1))
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == (
        tmp_path / "straight" / "model.safetensors"
    ).read_bytes()
    assert (resumed.before, resumed.best, resumed.best_step, resumed.after) == (
        straight.before,
        straight.best,
        straight.best_step,
        straight.after,
    )
    log = [json.loads(line) for line in (tmp_path / "resumed.training" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, straight.total_steps + 1))
    with pytest.raises(ValueError, match="no saved run to resume"):
        run(tmp_path / "resumed", resume=True)


# --- the command line -------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "jina_local_rerank.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
def test_cli_train_and_its_one_line_errors(checkpoint_dir: Path, tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", triplets(6))
    completed = run_cli(
        "train",
        "--model",
        str(checkpoint_dir),
        "--device",
        "cpu",
        "--train",
        str(train),
        "--eval-fraction",
        "0.34",
        "--output",
        str(tmp_path / "out"),
        "--negatives",
        "2",
        "--max-length",
        "64",
        "--learning-rate",
        "1e-3",
        "--quiet",
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"wrote {tmp_path / 'out'}: ") and "ndcg@10" in completed.stdout
    assert Reranker(tmp_path / "out", device="cpu").score("a", ["b"]).logits

    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "positive": "p"}, {"query": "q", "positive": 7}])
    completed = run_cli("train", "--model", str(checkpoint_dir), "--train", str(bad), "--output", str(tmp_path / "x"))
    assert completed.returncode == 2
    assert completed.stderr == f"jina-local-rerank: error: {bad} line 2: field 'positive' must be a string, got int\n"
    assert not (tmp_path / "x").exists()

    completed = run_cli(
        "distill",
        "--teacher",
        str(checkpoint_dir),
        "--student-layers",
        "1",
        "--device",
        "cpu",
        "--train",
        str(train),
        "--eval-fraction",
        "0.34",
        "--output",
        str(tmp_path / "student"),
        "--negatives",
        "2",
        "--max-length",
        "64",
        "--teacher-cache",
        str(tmp_path / "cache"),
        "--quiet",
    )
    assert completed.returncode == 0, completed.stderr
    assert "spearman" in completed.stdout and "ndcg@10" in completed.stdout
    assert json.loads((tmp_path / "student" / "config.json").read_text())["num_hidden_layers"] == 1
    assert "distilled from" in (tmp_path / "student" / "README.md").read_text()

    completed = run_cli("distill", "--train", str(train), "--output", str(tmp_path / "y"))
    assert completed.returncode == 2 and "distill needs --teacher" in completed.stderr
    completed = run_cli(
        "distill", "--teacher", str(checkpoint_dir), "--train", str(train), "--output", str(tmp_path / "y")
    )
    assert completed.returncode == 2 and "give --student-layers N" in completed.stderr


# --- the proof: a trained reranker, through every runtime; distillation ----------------------------------------


def held_out_ndcg(rank, held_out_rankings) -> float:
    """Mean NDCG@10 over the held-out queries, each ranking its BM25 candidates with ``rank(query, texts)``."""
    from jina_local_rerank.testing.docstring_task import held_out_ndcg as mean_ndcg

    return mean_ndcg(held_out_rankings, [rank(query.query, list(query.documents)) for query in held_out_rankings])


@pytest.mark.slow
def test_training_raises_held_out_ndcg_far_above_the_untrained_model(trained_reranker):
    before, after = trained_reranker.before["ndcg@10"], trained_reranker.after["ndcg@10"]
    print(
        f"docstring reranker: held-out NDCG@10 {before:.4f} before, {after:.4f} after training "
        f"({trained_reranker.steps} steps, {trained_reranker.tokens:,} tokens, {trained_reranker.seconds:.0f} s)"
    )
    assert after >= before + 0.15 and after >= 0.4
    assert trained_reranker.best_step > 0 and trained_reranker.data["queries"] > 900
    card = (trained_reranker.output / "README.md").read_text()
    assert f"| ndcg@10 | {before:.4f} | {after:.4f} | {after - before:+.4f} |" in card


@pytest.mark.slow
def test_the_gain_holds_through_reranker_and_every_adapter(trained_reranker, held_out_rankings):
    from jina_local_rerank.testing.docstring_task import DOCSTRING_MAX_LENGTH

    path, after = trained_reranker.output, trained_reranker.after["ndcg@10"]
    reranker = Reranker(path, device="cpu", max_length=DOCSTRING_MAX_LENGTH)
    assert held_out_ndcg(lambda q, texts: best_first(reranker.score(q, texts).logits), held_out_rankings) == (
        pytest.approx(after, abs=1e-9)
    )

    # The adapters at their defaults (the model's full window): the ranking still holds its gain.
    llama = pytest.importorskip("llama_index.postprocessor.jina_local_rerank")
    langchain = pytest.importorskip("langchain_jina_local_rerank")
    haystack = pytest.importorskip("haystack_integrations.components.rankers.jina_local_rerank")
    from haystack import Document
    from langchain_core.documents import Document as LangchainDocument
    from llama_index.core.schema import NodeWithScore, TextNode

    def llama_rank(query: str, texts: list[str]) -> list[int]:
        nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i))) for i, text in enumerate(texts)]
        ranked = llama.JinaLocalRerank(model=str(path), device="cpu", top_n=None).postprocess_nodes(
            nodes, query_str=query
        )
        return [int(node.node.node_id) for node in ranked]

    def langchain_rank(query: str, texts: list[str]) -> list[int]:
        docs = [LangchainDocument(page_content=text, metadata={"i": i}) for i, text in enumerate(texts)]
        ranked = langchain.JinaLocalRerank(model=str(path), device="cpu", top_n=None).compress_documents(docs, query)
        return [doc.metadata["i"] for doc in ranked]

    ranker = haystack.JinaLocalRanker(model=str(path), top_k=None)
    ranker.warm_up()

    def haystack_rank(query: str, texts: list[str]) -> list[int]:
        docs = [Document(content=text, meta={"i": i}) for i, text in enumerate(texts)]
        return [doc.meta["i"] for doc in ranker.run(query=query, documents=docs)["documents"]]

    full_window = Reranker(path, device="cpu")
    expected = held_out_ndcg(lambda q, texts: best_first(full_window.score(q, texts).logits), held_out_rankings)
    assert expected >= trained_reranker.before["ndcg@10"] + 0.15
    for name, rank in (("llama_index", llama_rank), ("langchain", langchain_rank), ("haystack", haystack_rank)):
        assert held_out_ndcg(rank, held_out_rankings) == pytest.approx(expected, abs=1e-9), name


@pytest.mark.slow
def test_distillation_raises_the_students_rank_correlation_with_its_teacher(
    trained_reranker, docstring_task, tmp_path: Path
):
    from jina_local_rerank.testing.docstring_task import DOCSTRING_MAX_LENGTH

    train, test = docstring_task
    run = RerankerOptions(device="cpu", max_length=DOCSTRING_MAX_LENGTH)  # the student's (and teacher's) engine
    config = TrainingConfig(
        loss="margin-mse",
        epochs=5,
        learning_rate=2e-3,
        negatives=7,
        step_tokens=4096,
        eval_top_k=20,
        mining_margin=None,
        show_progress="never",
    )
    result = Trainer(
        run,
        teacher=str(trained_reranker.output),
        student_layers=2,
        train=train,
        eval=test,
        output=tmp_path / "student",
        config=config,
        teacher_cache_dir=tmp_path / "cache",
    ).fit()
    before, after = result.before["spearman"], result.after["spearman"]
    print(
        f"distillation into 2 of the teacher's 4 layers: held-out Spearman with the teacher {before:.3f} before, "
        f"{after:.3f} after ({result.steps} steps); NDCG@10 {result.before['ndcg@10']:.3f} -> "
        f"{result.after['ndcg@10']:.3f}"
    )
    assert after >= 0.8 and after >= before + 0.4
    assert result.best_step > 0
    assert json.loads((tmp_path / "student" / "config.json").read_text())["num_hidden_layers"] == 2
    assert sorted(read_safetensors(tmp_path / "student" / "model.safetensors")[0]) == sorted(
        expected_shapes(read_config(tmp_path / "student" / "config.json"))
    )


# --- memory: passes within the budget; what a run shows and writes ------------------------------------------------


def test_a_list_over_the_pass_budget_runs_in_chunks_with_the_same_gradients(checkpoint_dir: Path):
    """A list longer than ``batch_tokens`` (the listwise loss needs all its logits) runs as chunks of its pairs:
    every logit without a graph, then each chunk with its share of the loss's gradient. Same losses and gradients
    as one pass, in passes of at most the budget (a forward hook records every pass's tokens)."""
    from jina_local_rerank.training.batches import EncodedGroup, TrainingList, collate
    from jina_local_rerank.training.modeling import forward_backward

    generator = torch.Generator().manual_seed(3)
    lengths = [30, 12, 50, 20, 41]
    sequences = tuple(torch.randint(5, 1000, (n,), generator=generator).numpy() for n in lengths)
    groups = [EncodedGroup(sequences, (1.0, 0.0, 0.0, 0.0, 0.0), None)]
    batch = collate(groups, [TrainingList(0, (0, 1, 2, 3, 4))], "labels", torch.device("cpu"))
    results = []
    for budget in (1000, 64):
        model = trainable_model(checkpoint_dir, torch.device("cpu"))
        passes: list[int] = []
        model.register_forward_hook(lambda module, args, output, passes=passes: passes.append(len(args[0])))
        losses = forward_backward(
            model, batch, SoftmaxCrossEntropyLoss(), weight=0.5, batch_tokens=budget, autocast=None
        )
        results.append((losses, {name: p.grad.clone() for name, p in model.named_parameters()}, passes))
    (one_loss, one_grads, one_pass), (chunked_loss, chunked_grads, chunked_passes) = results
    assert one_pass == [153]
    assert chunked_passes == [42, 50, 61, 42, 50, 61]  # the logits, then each chunk again with its gradient
    torch.testing.assert_close(chunked_loss, one_loss, rtol=0, atol=1e-6)
    for name in one_grads:
        torch.testing.assert_close(chunked_grads[name], one_grads[name], rtol=1e-4, atol=1e-6)


def test_every_long_phase_shows_our_progress_and_never_bm25s(checkpoint_dir: Path, tmp_path: Path, capsys):
    """With progress on, every phase of a distillation run has its bar on stderr (BM25 indexing, mining,
    tokenizing, teacher scoring, every evaluation, the steps); bm25s's own bars never appear."""
    pytest.importorskip("bm25s")
    train = write_jsonl(tmp_path / "train.jsonl", triplets(6))
    _, test = write_docstring_dataset(tmp_path / "docstrings", test_queries=12)
    config = TrainingConfig(
        loss="margin-mse", negatives=3, eval_top_k=4, eval_max_queries=3, epochs=2, show_progress="always"
    )
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=48)
    Trainer(
        options,
        teacher=options,
        train=train,
        eval=test,
        output=tmp_path / "out",
        config=config,
        teacher_cache_dir=tmp_path / "cache",
    ).fit()
    stderr = capsys.readouterr().err
    bars = [
        "BM25 index",
        "mining negatives",
        "BM25 retrieval",
        "teacher scoring",
        "tokenizing",
        "evaluating the starting model",
        "training",
        "evaluating step 1",
        "evaluating step 2",
        "evaluating the saved checkpoint",
    ]
    assert [bar for bar in bars if f"{bar}: 100%" not in stderr] == []
    assert "Split strings" not in stderr and "BM25S" not in stderr and "Tokenize" not in stderr

    # The eval command: our bars with --progress, nothing at all for quick work by default.
    from jina_local_rerank.cli import main

    for flags, shown in ((["--progress"], True), ([], False)):
        assert (
            main(
                [
                    "eval",
                    str(test),
                    "--model",
                    str(checkpoint_dir),
                    "--device",
                    "cpu",
                    "--top-k",
                    "3",
                    "--max-queries",
                    "2",
                    *flags,
                ],
                stdout=io.StringIO(),
            )
            == 0
        )
        stderr = capsys.readouterr().err
        assert (
            "BM25 index: 100%" in stderr and "BM25 retrieval: 100%" in stderr and "reranking: 100%" in stderr
        ) == shown
        assert shown or stderr == ""


def test_the_model_card_names_the_base_model_and_says_which_checkpoint_it_holds(tmp_path: Path):
    """``base_model`` is a Hub id or the folder's name, never a path; a checkpoint that no evaluation improved is
    called the starting model's weights, and one scoring below the starting model says so, with every evaluation
    in a table."""
    from jina_local_rerank.checkpoint.hub import public_model_name
    from jina_local_rerank.training.model_card import RunDescription, model_card

    snapshot = tmp_path / "hub" / "models--jinaai--jina-reranker-v1-turbo-en" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "my-model").mkdir()
    assert public_model_name("jinaai/jina-reranker-v1-tiny-en") == "jinaai/jina-reranker-v1-tiny-en"
    assert public_model_name(snapshot) == "jinaai/jina-reranker-v1-turbo-en"
    assert public_model_name(str(tmp_path / "my-model") + "/") == "my-model"

    def card(best_step: int, after: float) -> str:
        return model_card(
            RunDescription(
                name="out",
                base_model="my-model",
                command="train",
                teacher=None,
                student_layers=None,
                data={},
                settings={"loss": "softmax"},
                steps=4,
                total_steps=4,
                tokens=100,
                seconds=1.0,
                evaluation="set, 3 queries",
                metric="ndcg@10",
                before={"ndcg@10": 0.5},
                after={"ndcg@10": after},
                best_step=best_step,
                history=[(0, {"ndcg@10": 0.5}), (2, {"ndcg@10": 0.4}), (4, {"ndcg@10": 0.6})],
            )
        )

    improved, unchanged = card(4, 0.59), card(0, 0.49)
    assert "\nbase_model: my-model\n" in improved and str(tmp_path) not in improved
    assert "holds the weights of step 4 of 4, the evaluation with the highest ndcg@10." in improved
    assert "below the starting model's" not in improved and "best evaluation" not in improved
    assert "| 4 (kept) | 0.6000 |" in improved and "| 0 | 0.5000 |" in improved
    assert "holds the starting model's weights, not trained ones (4 steps were run)" in unchanged
    assert "Its ndcg@10 is below the starting model's." in unchanged
    assert "| ndcg@10 | 0.5000 | 0.4900 | -0.0100 |" in unchanged and "| 0 (kept) | 0.5000 |" in unchanged
