"""Training, export and the CLI against hostile input: labels and teacher scores that break float32, damaged caches,
folders that are not the trainer's, SIGTERM, file modes, inputs without end. Each names what was wrong."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jina_local_rerank import Reranker
from jina_local_rerank.checkpoint.writer import save_weights
from jina_local_rerank.cli import main
from jina_local_rerank.errors import CheckpointError, DatasetError, FileProblem, TrainingDivergedError
from jina_local_rerank.files import user_files as files_module
from jina_local_rerank.files.user_files import write_text_atomically
from jina_local_rerank.model.config import JinaBertConfig
from jina_local_rerank.options import RerankerOptions
from jina_local_rerank.training import TeacherScorer, Trainer, TrainingConfig, load_training_data
from jina_local_rerank.training.data import QueryGroup, TrainingData

QUIET = dict(negatives=2, show_progress="never")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def triplets(count: int) -> list[str]:
    return [
        json.dumps(
            {
                "query": f"query {i} about files",
                "positive": f"open file {i} for reading",
                "negatives": [f"unrelated text {i} {j}" for j in range(2)],
            }
        )
        for i in range(count)
    ]


def cli_env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root / "core"), str(root / "integrations"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}


# --- data: read and refused with the file and line ---------------------------------------------------------------


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"query": "q", "document": "d", "label": 1e39}', "field 'label' is 1e+39, outside -1e+06..1e+06"),
        ('{"query": "q", "document": "d", "label": ' + "9" * 310 + "}", "'label' is an integer of about 310 digits"),
        ('{"query": "q", "documents": ["a", "b"], "labels": [0, -1e7]}', "'labels'[1] is -1e+07, outside"),
        ('{"query": "q", "positive": "p", "negatives": ["n"], "scores": [1e39, 0]}', "'scores'[0] is 1e+39"),
        ('{"query": "q", "document": "d", "label": 1, "score": NaN}', "'score' must be a finite number, got nan"),
        ('{"query": "q", "document": "d", "label": ' + "1" * 5000 + "}", "line 2: not JSON we accept"),
        ('{"query": "q", "document": ' + "[" * 100_000 + "]" * 100_000 + "}", "line 2: JSON nested too deeply"),
    ],
    ids=[
        "label-1e39",
        "label-310-digits",
        "label-minus-1e7",
        "teacher-1e39",
        "teacher-nan",
        "label-5000-digits",
        "nested-100000-deep",
    ],
)
def test_labels_and_teacher_scores_a_loss_cannot_hold_are_refused_naming_file_and_line(tmp_path, row, message):
    path = write_lines(tmp_path / "train.jsonl", ['{"query": "fine", "positive": "row"}', row])
    with pytest.raises(DatasetError) as error:
        load_training_data(path)
    assert str(error.value).startswith(f"{path} line 2: ") and message in str(error.value)


def test_a_line_over_the_length_limit_is_refused_without_reading_on(tmp_path, monkeypatch):
    monkeypatch.setattr(files_module, "MAX_LINE_CHARS", 1000)
    path = write_lines(tmp_path / "train.jsonl", ['{"query": "fine", "positive": "row"}', "x" * 5000])
    with pytest.raises(DatasetError, match=r"train.jsonl line 2: longer than .* the limit for one line"):
        load_training_data(path)


# --- the run: never a non-finite checkpoint ------------------------------------------------------------------------


def data_with_labels(labels: tuple[float, ...]) -> TrainingData:
    groups = tuple(
        QueryGroup(
            f"query {i}", ("open the file", "close the door", "sort the list"), labels, None, f"rows.jsonl line {i + 1}"
        )
        for i in range(3)
    )
    return TrainingData("rows.jsonl", groups, tuple({doc for g in groups for doc in g.documents}), {}, 3)


@pytest.mark.parametrize("loss", ["softmax", "lambda"])
def test_a_non_finite_loss_stops_the_run_naming_step_rows_and_cause_and_writes_nothing(checkpoint_dir, tmp_path, loss):
    # Data built in code skips the reader's checks: labels beyond float32's range reach the loss.
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64)
    trainer = Trainer(
        options,
        train=data_with_labels((1e39, 0.0, 0.0)),
        output=tmp_path / "out",
        config=TrainingConfig(loss=loss, **QUIET),
    )
    with pytest.raises(TrainingDivergedError) as error:
        trainer.fit()
    message = str(error.value)
    assert message.startswith("step 1: the loss is not finite") and "rows.jsonl line" in message
    assert "labels or teacher scores" in message and "nothing non-finite was written" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.training").exists()


def test_weights_that_blow_up_stop_the_run_before_a_checkpoint_is_written(checkpoint_dir, tmp_path):
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64)
    config = TrainingConfig(
        learning_rate=1e36, warmup_ratio=0.0, max_grad_norm=0.0, epochs=20, step_tokens=200, **QUIET
    )
    with pytest.raises(TrainingDivergedError, match=r"step \d+: the (loss|gradient norm) is not finite"):
        Trainer(options, train=data_with_labels((1.0, 0.0, 0.0)), output=tmp_path / "out", config=config).fit()
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_is_never_written_with_non_finite_weights(tmp_path):
    config = JinaBertConfig(
        vocab_size=8,
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=16,
    )
    from jina_local_rerank.checkpoint.format import expected_shapes

    tensors = {name: torch.zeros(shape) for name, shape in expected_shapes(config).items()}
    name = next(iter(tensors))
    tensors[name][0] = float("nan")
    with pytest.raises(CheckpointError, match=f"tensor '{name}' holds NaN or infinite values"):
        save_weights(tmp_path / "model.safetensors", tensors, config)
    assert not (tmp_path / "model.safetensors").exists()


def test_no_query_left_says_why_even_when_the_data_holds_none(checkpoint_dir, tmp_path):
    empty = TrainingData("empty.jsonl", (), (), {}, 0)
    with pytest.raises(DatasetError, match=r"no query left to train on \(the data holds no query\)"):
        Trainer(
            RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64),
            train=empty,
            output=tmp_path / "out",
            config=TrainingConfig(**QUIET),
        ).fit()


def test_a_seed_beyond_what_torch_takes_is_refused_naming_seed(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--train", "t.jsonl", "--output", "o", "--seed", str(2**70)])
    assert exit_.value.code == 2
    assert "argument --seed: must be from -2**63 to 2**64-1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be from"):
        TrainingConfig(seed=2**70)


# --- the teacher's cache ---------------------------------------------------------------------------------------------


def test_a_damaged_teacher_cache_is_named_and_its_pairs_scored_again(checkpoint_dir, tmp_path, caplog):
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64)
    pairs = [("sort a list", "list.sort sorts in place"), ("zip", "open a file"), ("q", "d")]
    fresh = Reranker(options).score_pairs(pairs, raw=True).logits
    scorer = TeacherScorer(options, tmp_path / "cache")
    scorer.cache_file.parent.mkdir(parents=True)

    np.savez(scorer.cache_file, keys=np.array([object()], dtype=object), logits=np.zeros(1))  # pickled objects
    with caplog.at_level(logging.WARNING):
        logits, report = scorer.score_pairs(pairs)
    assert str(scorer.cache_file) in caplog.text and "cannot be read" in caplog.text
    assert report.scored == 3 and logits == pytest.approx(fresh, abs=1e-6)

    with np.load(scorer.cache_file) as saved:  # now whole again; poison one entry
        keys, values = saved["keys"], saved["logits"].copy()
    values[1] = np.nan
    with scorer.cache_file.open("wb") as handle:
        np.savez(handle, keys=keys, logits=values)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        logits, report = scorer.score_pairs(pairs)
    assert "1 damaged teacher scores" in caplog.text and str(scorer.cache_file) in caplog.text
    assert (report.scored, report.cached) == (1, 2) and logits == pytest.approx(fresh, abs=1e-6)


# --- folders: only the trainer's own -----------------------------------------------------------------------------


def test_a_state_dir_that_is_a_users_folder_or_the_model_is_refused_and_left_alone(checkpoint_dir, tmp_path):
    train = write_lines(tmp_path / "train.jsonl", triplets(4))
    options = RerankerOptions(model=str(checkpoint_dir), device="cpu", max_length=64)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("log.jsonl", "run.json", "notes.txt"):
        (mine / name).write_text("the user's")
    with pytest.raises(FileProblem, match="state folder .*mine is not empty and has no .jina-local-rerank-training"):
        Trainer(
            options,
            train=train,
            output=tmp_path / "out",
            state_dir=mine,
            overwrite=True,
            config=TrainingConfig(**QUIET),
        )
    assert all((mine / name).read_text() == "the user's" for name in ("log.jsonl", "run.json", "notes.txt"))
    before = sorted(path.name for path in checkpoint_dir.iterdir())
    with pytest.raises(FileProblem, match="holds the input"):
        Trainer(
            options,
            train=train,
            output=tmp_path / "out",
            state_dir=checkpoint_dir,
            overwrite=True,
            config=TrainingConfig(**QUIET),
        )
    with pytest.raises(FileProblem, match="is inside the input"):
        Trainer(
            options,
            train=train,
            output=tmp_path / "out",
            state_dir=checkpoint_dir / "state",
            config=TrainingConfig(**QUIET),
        )
    for state_dir in (tmp_path / "out" / "state", tmp_path / "out", tmp_path):
        with pytest.raises(FileProblem, match="and output .* overlap"):
            Trainer(options, train=train, output=tmp_path / "out", state_dir=state_dir, config=TrainingConfig(**QUIET))
    assert sorted(path.name for path in checkpoint_dir.iterdir()) == before

    # A folder the trainer made (it holds the marker) is its own to replace.
    result = Trainer(
        options, train=train, output=tmp_path / "out", state_dir=tmp_path / "state", config=TrainingConfig(**QUIET)
    ).fit()
    assert (tmp_path / "state" / ".jina-local-rerank-training").is_file() and result.steps >= 1
    Trainer(
        options,
        train=train,
        output=tmp_path / "out",
        state_dir=tmp_path / "state",
        overwrite=True,
        config=TrainingConfig(**QUIET),
    ).fit()


# --- SIGTERM: cleaned up as Ctrl-C ---------------------------------------------------------------------------------


def terminate_when(command: list[str], appeared, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI; send SIGTERM as soon as ``appeared()`` is true; return the finished process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jina_local_rerank.cli", *command],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not appeared():
        if process.poll() is not None or time.monotonic() > deadline:
            out, err = process.communicate()
            pytest.fail(f"the command ended (or stalled) before the moment to terminate it: {err}")
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.slow
def test_sigterm_during_train_leaves_no_state_of_a_run_that_saved_none(checkpoint_dir, tmp_path):
    train = write_lines(tmp_path / "train.jsonl", triplets(8))
    held_out = write_lines(tmp_path / "eval.jsonl", triplets(300))  # evaluated before training: time to stop it
    state = tmp_path / "out.training"
    done = terminate_when(
        [
            "train",
            "--model",
            str(checkpoint_dir),
            "--device",
            "cpu",
            "--train",
            str(train),
            "--eval",
            str(held_out),
            "--output",
            str(tmp_path / "out"),
            "--negatives",
            "2",
            "--max-length",
            "64",
            "--quiet",
        ],
        lambda: (state / "run.json").exists(),
    )
    assert done.returncode in (143, 130), done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().endswith(("terminated", "interrupted"))
    # As after Ctrl-C: no state at all, or (stopped inside the loop) a whole step saved to resume from.
    assert not state.exists() or (state / "state.pt").is_file()
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.slow
def test_sigterm_during_export_leaves_no_partial_folder(checkpoint_dir, tmp_path):
    pytest.importorskip("onnx")
    done = terminate_when(
        ["export", "onnx", "--model", str(checkpoint_dir), "--output", str(tmp_path / "exported")],
        lambda: bool(list(tmp_path.glob(".exported.*.partial"))),
    )
    assert done.returncode == 143, done.stderr
    assert done.stderr == "jina-local-rerank: terminated\n"
    assert list(tmp_path.iterdir()) == []


# --- file modes, bounded inputs -----------------------------------------------------------------------------------


def test_written_checkpoints_and_files_follow_the_umask(checkpoint_dir, tmp_path):
    from jina_local_rerank.checkpoint.loading import load_checkpoint
    from jina_local_rerank.checkpoint.writer import source_config, write_checkpoint

    previous = os.umask(0o022)
    try:
        model = load_checkpoint(checkpoint_dir, torch.float32, torch.device("cpu"))
        write_checkpoint(
            tmp_path / "copy", source_config(checkpoint_dir), model.state_dict(), checkpoint_dir, {"README.md": "card"}
        )
        write_text_atomically(tmp_path / "file.txt", "text")
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "copy").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
    assert (tmp_path / "copy").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o644


def test_rerank_input_from_a_device_without_end_stops_at_the_limit_naming_it(checkpoint_dir, monkeypatch, capsys):
    monkeypatch.setattr(files_module, "MAX_INPUT_BYTES", 2**20)
    status = main(["rerank", "--model", str(checkpoint_dir), "--device", "cpu", "--query", "q", "--input", "/dev/zero"])
    assert status == 2
    assert capsys.readouterr().err == (
        "jina-local-rerank: error: --input /dev/zero is larger than 1,048,576 bytes, the limit for one input; "
        "split it\n"
    )
    endless = io.TextIOWrapper(io.BytesIO(b"a" * (2**20 + 1)))
    assert main(["rerank", "--model", str(checkpoint_dir), "--device", "cpu", "--query", "q"], stdin=endless) == 2
    assert "standard input is larger than 1,048,576 bytes" in capsys.readouterr().err


def test_rerank_input_from_a_fifo_still_works(checkpoint_dir, tmp_path, capsys):
    fifo = tmp_path / "documents.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write(json.dumps({"query": "llama", "documents": ["a llama", "paris"]}))

    writer = threading.Thread(target=write)
    writer.start()
    status = main(["rerank", "--model", str(checkpoint_dir), "--device", "cpu", "--input", str(fifo)])
    writer.join()
    assert status == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


def test_line_oriented_inputs_from_a_device_without_end_stop_at_the_line_limit(monkeypatch):
    from jina_local_rerank.evaluation.runs import read_trec_run

    monkeypatch.setattr(files_module, "MAX_LINE_CHARS", 4096)
    with pytest.raises(DatasetError, match=r"^run file /dev/zero line 1: longer than .* the limit for one line"):
        read_trec_run("/dev/zero")
    with pytest.raises(DatasetError, match=r"^/dev/zero line 1: longer than .* the limit for one line"):
        load_training_data("/dev/zero")


@pytest.mark.parametrize(
    "grade, message", [("9" * 400, "is outside -1,000,000..1,000,000"), ("9" * 5000, "is not an integer")]
)
def test_a_qrels_grade_no_metric_or_loss_can_hold_is_refused_naming_the_line(tmp_path, grade, message):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a llama"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "llama"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t{grade}\n")
    with pytest.raises(DatasetError, match=f"train.tsv line 2: score .* {message}"):
        load_training_data(tmp_path)
