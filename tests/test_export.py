"""ONNX export: the engine's logits from onnxruntime at any shape, the folder transformers.js loads, int8, errors.

Exports are real (``torch.export`` and torch's ONNX exporter), scored by the real onnxruntime; one export per
checkpoint per session (the ``onnx_export`` fixture).
"""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest

from jina_local_rerank import Reranker
from jina_local_rerank.checkpoint.format import TOKENIZER_FILES
from jina_local_rerank.cli import main
from jina_local_rerank.errors import FileProblem
from jina_local_rerank.files.user_files import atomic_directory
from jina_local_rerank.ranking import best_first

np = pytest.importorskip("numpy")

CHECKPOINTS = ("tiny", "turbo", "heads8")
ATOL = 1e-4
EXPORT_PAGE = Path(__file__).resolve().parents[1] / "docs" / "export.md"


@pytest.fixture(scope="module")
def golden(parity_dir: Path) -> dict:
    return json.loads((parity_dir / "golden.json").read_text())


def session(folder: Path, file: str = "model.onnx"):
    import onnxruntime

    return onnxruntime.InferenceSession(str(folder / "onnx" / file), providers=["CPUExecutionProvider"])


def padded(sequences: list[list[int]], pad_id: int, left: bool = False) -> dict:
    """The graph's feed for ``sequences``, padded on the right (as tokenizers do by default) or on the left."""
    width = max(map(len, sequences))
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        columns = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        input_ids[row, columns] = sequence
        attention_mask[row, columns] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def onnx_logits(graph, feed: dict) -> list[float]:
    (logits,) = graph.run(None, feed)
    assert logits.shape == (len(feed["input_ids"]), 1) and logits.dtype == np.float32
    return logits[:, 0].tolist()


def max_error(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_onnxruntime_matches_the_engine_on_every_golden_case(name, parity_dir, golden, onnx_export):
    """The fp32 graph on golden's padded batches (right padding) and the same batches padded on the left.

    The long cases (1,500 and 3,000 tokens: most of the time) are padded on the left on heads8 only: the same graph
    code at a fraction of the cost.
    """
    engine = Reranker(parity_dir / name, device="cpu", dtype="float32").engine
    graph = session(onnx_export(parity_dir / name))
    for case in golden["cases"]:
        expected = golden["results"][name][case["name"]]
        sequences = [ids[:length] for ids, length in zip(expected["input_ids"], expected["seq_lens"])]
        reference = engine.logits(sequences, max_batch_tokens=16384)
        feeds = [("right", {key: np.array(expected[key], dtype=np.int64) for key in ("input_ids", "attention_mask")})]
        if name == "heads8" or max(expected["seq_lens"]) < 1024:
            feeds.append(("left", padded(sequences, engine.tokenizer.pad_id, left=True)))
        for padding, feed in feeds:
            error = max_error(onnx_logits(graph, feed), reference)
            assert error < ATOL, f"{name}/{case['name']} ({padding} padding): max |logit error| {error:.2e}"


def test_one_graph_runs_at_every_batch_size_and_length(checkpoint_dir, reranker, onnx_export):
    """The same graph from 1 x 1 to mixed batches and a 2,000-token row, padded either side."""
    graph = session(onnx_export(checkpoint_dir))
    rng = random.Random(0)
    vocabulary = reranker.engine.model.config.vocab_size
    for lengths in ([1], [2], [1, 5], [7, 7, 7], [3, 300, 17, 64, 2], list(range(1, 41)), [2000, 9]):
        sequences = [[0] + [rng.randrange(5, vocabulary) for _ in range(n - 1)] for n in lengths]
        reference = reranker.engine.logits(sequences, max_batch_tokens=1 << 20)
        for left in (False, True):
            error = max_error(onnx_logits(graph, padded(sequences, 1, left)), reference)
            assert error < ATOL, f"lengths {lengths} ({'left' if left else 'right'} padding): {error:.2e}"


def test_graph_declares_the_inputs_transformers_js_feeds(checkpoint_dir, onnx_export):
    graph = session(onnx_export(checkpoint_dir))
    inputs = [(i.name, i.type, i.shape) for i in graph.get_inputs()]
    dynamic = ["batch_size", "sequence_length"]
    assert inputs == [("input_ids", "tensor(int64)", dynamic), ("attention_mask", "tensor(int64)", dynamic)]
    assert [(o.name, o.type, o.shape) for o in graph.get_outputs()] == [("logits", "tensor(float)", ["batch_size", 1])]


def test_graph_is_written_for_the_oldest_transformers_js_runtime(checkpoint_dir, onnx_export):
    """IR version 8 and opset 18 of the standard domain only: what onnxruntime 1.14 (transformers.js 2.17) reads."""
    import onnx

    model = onnx.load(onnx_export(checkpoint_dir) / "onnx" / "model.onnx")
    assert model.ir_version == 8
    assert [(opset.domain, opset.version) for opset in model.opset_import] == [("", 18)]
    onnx.checker.check_model(model, full_check=True)
    assert sum(node.op_type == "Loop" for node in model.graph.node) == 1  # the one full attention layer of two


def test_exported_tokenizer_gives_the_same_ids(checkpoint_dir, onnx_export):
    """tokenizer.json's BPE merges are "a b" strings (transformers.js 2.x reads no other form), and ``tokenizers``
    reads it back to the checkpoint's own ids, pairs, unicode and special tokens included."""
    from tokenizers import Tokenizer

    exported = onnx_export(checkpoint_dir) / "tokenizer.json"
    merges = json.loads(exported.read_text(encoding="utf-8"))["model"]["merges"]
    original = json.loads((checkpoint_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert all(isinstance(merge, str) for merge in merges)
    assert merges == [" ".join(merge) if isinstance(merge, list) else merge for merge in original]
    texts = [
        "Organic skincare for sensitive skin",
        "  leading spaces\tand tabs\n",
        "Bio-Hautpflege für Haut",
        "针对敏感肌专门设计的天然有机护肤产品",
        "emoji 🙂 and <s> </s> <pad> tokens",
        "",
    ]
    before, after = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json")), Tokenizer.from_file(str(exported))
    for text in texts:
        assert after.encode(text).ids == before.encode(text).ids, text
        assert after.encode("a query", text).ids == before.encode("a query", text).ids, text


PEAK_PROCESS = """
import sys
import numpy as np
import onnxruntime

options = onnxruntime.SessionOptions()
options.enable_mem_pattern = False
session = onnxruntime.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
peaks = []
for batch in (1, 10):  # one 8,192-token pair; then the card's 10-document call padded to [10, 8192]
    lengths = [8192] + [40] * (batch - 1)
    input_ids = np.full((batch, 8192), 1, dtype=np.int64)
    attention_mask = np.zeros((batch, 8192), dtype=np.int64)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = np.random.default_rng(row).integers(5, 500, length)
        input_ids[row, 0] = 0
        attention_mask[row, :length] = 1
    (logits,) = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
    assert np.isfinite(logits).all()
    peaks.append(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) >> 10)
print(*peaks)
"""


@pytest.mark.slow
def test_graph_scores_8k_tokens_in_bounded_memory(checkpoint_dir, onnx_export):
    """Attention runs over blocks of query rows: on the 4-head test model an 8,192-token pair peaks under 500 MB in
    onnxruntime, and a padded [10, 8192] call under 1 GB, where a graph holding the whole [batch, heads, 8192, 8192]
    bias alone needs 1 GiB and 10 GiB. (The full tiny shape: docs/export.md, benchmarks/export_runtimes.py.)"""
    import subprocess
    import sys

    model = onnx_export(checkpoint_dir) / "onnx" / "model.onnx"
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_PROCESS, str(model)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    pair, padded_call = map(int, completed.stdout.split())
    assert pair < 500 and padded_call < 1024, (pair, padded_call)


def graph_tensors(model) -> list:
    """Every constant tensor of an ONNX model: initializers and ``Constant`` nodes' values."""
    from onnx import helper

    constants = [
        helper.get_attribute_value(attribute)
        for node in model.graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    ]
    return [*model.graph.initializer, *constants]


def test_graph_holds_the_weights_and_no_alibi_table(parity_dir, onnx_export):
    """No [heads, L, L] bias constant (the original's is 3.2 GB): the constants are the weights, nothing more."""
    import onnx

    checkpoint = parity_dir / "tiny"
    model = onnx.load(onnx_export(checkpoint) / "onnx" / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    parameters = sum(p.numel() for p in Reranker(checkpoint, device="cpu", dtype="float32").engine.model.parameters())
    heads = 12
    tensors = [(list(t.dims), int(np.prod(t.dims))) for t in graph_tensors(model)]
    # Weights are matrices and vectors; the only higher-rank constant is the per-head slopes, [1, heads, 1, 1].
    assert all(len(dims) <= 2 or size <= heads for dims, size in tensors), tensors
    elements = sum(size for _, size in tensors)
    # A bias table for even 64 tokens would add heads * 64 * 64 elements.
    assert parameters - 1024 <= elements < parameters + heads * 64 * 64, (elements, parameters)


def test_int8_graph_quantizes_every_linear_layer_and_stays_close_to_fp32(parity_dir, golden, onnx_export):
    import onnx

    folder = onnx_export(parity_dir / "tiny")
    quantized = onnx.load(folder / "onnx" / "model_quantized.onnx")
    layers = 4
    # Per layer: query, key, value, attention output, the two feed-forward halves, wo; then pooler and classifier.
    assert sum(node.op_type == "MatMulInteger" for node in quantized.graph.node) == 7 * layers + 2
    assert (
        sum(
            node.op_type == "MatMul" and node.input[1] in {t.name for t in quantized.graph.initializer}
            for node in quantized.graph.node
        )
        == 0
    )
    size = (folder / "onnx" / "model_quantized.onnx").stat().st_size
    assert size < 0.3 * (folder / "onnx" / "model.onnx").stat().st_size
    fp32, int8 = session(folder), session(folder, "model_quantized.onnx")
    for case in golden["cases"]:
        expected = golden["results"]["tiny"][case["name"]]
        if max(expected["seq_lens"]) >= 1024:
            continue  # the long cases: benchmarks/export_onnx.py measures them
        feed = {key: np.array(expected[key], dtype=np.int64) for key in ("input_ids", "attention_mask")}
        # The parity weights are scaled up so every component moves the logit; the engine's own int8 differs from
        # fp32 by up to 0.55 on them.
        assert max_error(onnx_logits(int8, feed), onnx_logits(fp32, feed)) < 0.75, case["name"]


@pytest.mark.slow
def test_int8_ranks_like_fp32_on_the_trained_reranker(trained_reranker, held_out_rankings, onnx_export):
    """On a model whose rankings mean something, int8 keeps them: onnxruntime's graphs and the engine's dtypes."""
    from jina_local_rerank.evaluation import ranking_agreement
    from jina_local_rerank.export import OnnxReranker, int8_agreement
    from jina_local_rerank.testing.docstring_task import held_out_ndcg

    folder = onnx_export(trained_reranker.output)
    rankings = [(query.query, list(query.documents)) for query in held_out_rankings]
    onnx = int8_agreement(folder, rankings)
    fp32, int8 = (
        [reranker.score(q, texts, raw=True).logits for q, texts in rankings]
        for reranker in (Reranker(trained_reranker.output, device="cpu", dtype=dtype) for dtype in ("float32", "int8"))
    )
    engine = ranking_agreement(fp32, int8)
    print(
        f"int8 vs fp32 on the docstring reranker ({onnx.queries} queries, {onnx.documents} documents): "
        f"onnxruntime {onnx}, engine {engine}"
    )
    assert onnx.queries == engine.queries >= 90  # the queries with 3+ candidates
    for agreement in (onnx, engine):
        assert agreement.mean_spearman >= 0.97 and agreement.top1 >= 0.8 and agreement.top3 >= 0.9, agreement

    def ndcg(logits: list[list[float]]) -> float:
        return held_out_ndcg(held_out_rankings, [best_first(scores) for scores in logits])

    reference = ndcg(fp32)
    assert reference >= trained_reranker.before["ndcg@10"] + 0.15
    onnx_int8 = OnnxReranker(folder, "model_quantized.onnx")
    assert ndcg([onnx_int8.logits(q, texts) for q, texts in rankings]) >= reference - 0.02
    assert ndcg(int8) >= reference - 0.02


def test_onnx_reranker_scores_like_the_engine_in_length_sorted_calls(checkpoint_dir, reranker, onnx_export):
    from jina_local_rerank.export import OnnxReranker

    words = "the closure keeps a reference to every variable of its scope".split()
    rng = random.Random(1)
    documents = [" ".join(rng.choices(words, k=rng.randrange(1, 120))) for _ in range(30)]
    scorer = OnnxReranker(onnx_export(checkpoint_dir), max_batch_tokens=300)  # many calls of a few rows
    expected = reranker.score("what does a closure keep?", documents, raw=True).logits
    assert max_error(scorer.logits("what does a closure keep?", documents), expected) < ATOL


def test_documented_onnxruntime_example_gives_the_engines_scores(parity_dir, onnx_export, capsys):
    """The Python example of docs/export.md (tokenizers + onnxruntime only), run on an export."""
    blocks = re.findall(r"^```python\n(.*?)^```", EXPORT_PAGE.read_text(encoding="utf-8"), re.M | re.S)
    code = next(block for block in blocks if "onnxruntime.InferenceSession" in block)
    folder = onnx_export(parity_dir / "tiny")
    code, replaced = re.subn(r'^folder = ".*"$', f"folder = {str(folder)!r}", code, flags=re.M)
    assert replaced == 1
    namespace: dict = {}
    exec(compile(code, str(EXPORT_PAGE), "exec"), namespace)
    expected = Reranker(parity_dir / "tiny", device="cpu", dtype="float32").score(
        namespace["query"], namespace["documents"]
    )
    assert max_error(namespace["scores"].tolist(), expected.scores) < ATOL
    assert len(capsys.readouterr().out.splitlines()) == len(namespace["documents"])


def test_cli_writes_the_folder_transformers_js_loads(checkpoint_dir, tmp_path):
    output = tmp_path / "exported"
    stdout = io.StringIO()
    assert main(["export", "onnx", "--model", str(checkpoint_dir), "--output", str(output)], stdout=stdout) == 0
    summary = json.loads(stdout.getvalue())
    copied = ["config.json", *TOKENIZER_FILES]
    assert sorted(summary["files"]) == sorted([*copied, "onnx/model.onnx"])
    assert summary["output"] == str(output)
    for name in copied:
        if name != "tokenizer.json":  # rewritten in the portable form: test_exported_tokenizer_gives_the_same_ids
            assert (output / name).read_bytes() == (checkpoint_dir / name).read_bytes(), name
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]  # no temporary folder left beside it


def test_python_export_takes_options_and_overwrites_only_when_asked(checkpoint_dir, tmp_path):
    from jina_local_rerank import RerankerOptions
    from jina_local_rerank.export import export_onnx

    output = tmp_path / "exported"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(FileProblem, match="not empty"):
        export_onnx(RerankerOptions(model=str(checkpoint_dir)), output)
    with pytest.raises(FileProblem, match="has no config.json: not a folder this command wrote"):
        export_onnx(RerankerOptions(model=str(checkpoint_dir)), output, overwrite=True)  # the user's own folder
    assert (output / "notes.txt").read_text() == "mine"
    (output / "config.json").write_text("{}")  # an earlier export (or checkpoint) folder: replaced when asked
    result = export_onnx(RerankerOptions(model=str(checkpoint_dir)), output, overwrite=True)
    assert result.directory == output and result.quantized_model is None
    assert result.model == output / "onnx" / "model.onnx" and result.model in result.files
    assert set(result.files) == {path for path in output.rglob("*") if path.is_file()}
    assert not (output / "notes.txt").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]
    # The scoring options have no command-line flags; from Python they are refused, naming the option.
    with pytest.raises(ValueError, match="--quantize int8"):
        export_onnx(RerankerOptions(model=str(checkpoint_dir), dtype="int8"), tmp_path / "out")
    with pytest.raises(ValueError, match="max_length"):
        export_onnx(RerankerOptions(model=str(checkpoint_dir), max_length=512), tmp_path / "out")
    assert [path.name for path in tmp_path.iterdir()] == ["exported"]


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        ("--model {tmp}/missing --output {tmp}/out", 1, "does not exist"),
        ("--model {checkpoint} --output {tmp}/a-file", 2, "is a file"),
        ("--model {checkpoint} --output {tmp}/full", 2, "not empty"),
        ("--model {checkpoint} --output {checkpoint} --overwrite", 2, "holds the input"),
        ("--model {checkpoint} --output {checkpoint}/onnx-export", 2, "is inside the input"),
        ("--model {checkpoint} --output {tmp}/a-file/out", 2, "a-file is a file, not a folder"),
    ],
    ids=[
        "missing-model",
        "output-is-a-file",
        "output-not-empty",
        "output-is-the-model",
        "output-in-the-model",
        "output-under-a-file",
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(checkpoint_dir, tmp_path, capsys, arguments, status, message):
    checkpoint_files = [path.name for path in checkpoint_dir.iterdir()]
    (tmp_path / "a-file").write_text("keep")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    argv = ["export", "onnx", *arguments.format(tmp=tmp_path, checkpoint=checkpoint_dir).split()]
    assert main(argv) == status
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "Traceback" not in error, error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "full"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep" and (tmp_path / "a-file").read_text() == "keep"
    assert sorted(path.name for path in checkpoint_dir.iterdir()) == sorted(checkpoint_files)


def test_an_empty_output_path_is_refused(checkpoint_dir, capsys):
    assert main(["export", "onnx", "--model", str(checkpoint_dir), "--output", ""]) == 2
    assert capsys.readouterr().err.strip().endswith("the export folder is an empty path; name a folder to write")


def test_int8_agreement_needs_the_int8_graph(checkpoint_dir, onnx_export, tmp_path):
    from jina_local_rerank.export import export_onnx, int8_agreement

    folder = export_onnx(checkpoint_dir, tmp_path / "fp32-only").directory
    with pytest.raises(FileProblem, match="no model_quantized.onnx"):
        int8_agreement(folder, [("q", ["a", "b", "c"])])


def test_a_failed_folder_write_leaves_the_old_folder_and_no_trace(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert [path.name for path in target.iterdir()] == ["old.txt"]
    with atomic_directory(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert [path.name for path in target.iterdir()] == ["new.txt"]


def test_whole_attention_scores_like_the_blocked_graph_without_a_loop(checkpoint_dir, reranker, tmp_path):
    """``--attention whole`` (for OpenVINO and NNCF): the same logits as the engine, and no ONNX Loop in the graph."""
    import onnx

    output = tmp_path / "whole"
    command = ["export", "onnx", "--model", str(checkpoint_dir), "--output", str(output), "--attention", "whole"]
    assert main(command, stdout=io.StringIO()) == 0
    nodes = onnx.load(str(output / "onnx" / "model.onnx")).graph.node
    operators = {node.op_type for node in nodes}
    assert "Loop" not in operators and "Softmax" in operators
    layers = reranker.engine.model.config.num_hidden_layers
    assert sum(node.op_type == "Softmax" for node in nodes) == layers
    graph = session(output)
    rng = random.Random(1)
    vocabulary = reranker.engine.model.config.vocab_size
    sequences = [[0] + [rng.randrange(5, vocabulary) for _ in range(n - 1)] for n in (3, 300, 17, 64)]
    reference = reranker.engine.logits(sequences, max_batch_tokens=1 << 20)
    for left in (False, True):
        assert max_error(onnx_logits(graph, padded(sequences, 1, left)), reference) < ATOL


def test_an_unknown_attention_layout_is_refused(checkpoint_dir, tmp_path):
    from jina_local_rerank.export import export_onnx

    with pytest.raises(ValueError, match="attention must be one of 'blocked', 'whole', got 'loop'"):
        export_onnx(checkpoint_dir, tmp_path / "out", attention="loop")
    assert not (tmp_path / "out").exists()
