"""The command line: nothing the user owns is lost, every error is one clear line, shared flags mean one thing.

Most checks call ``main()`` in this process; those that need a real process (a closed pipe, a file-size limit,
raw bytes on stdin, what ``--help`` imports) run the installed command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jina_local_rerank.cli import build_parser, main

QUERY = "how to sort a list"
PAIRS = [{"query": QUERY, "document": text} for text in ("use sorted()", "the weather", "list.sort() sorts in place")]


def run(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old_err, sys.stderr = sys.stderr, err
    try:
        status = main(argv, stdin=io.StringIO(stdin), stdout=out)
    finally:
        sys.stderr = old_err
    return status, out.getvalue(), err.getvalue()


def one_line_error(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jina-local-rerank: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr


def command() -> list[str]:
    return [str(Path(sys.executable).with_name("jina-local-rerank"))]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS), encoding="utf-8")
    return path


@pytest.fixture
def model_args(checkpoint_dir: Path) -> list[str]:
    return ["--model", str(checkpoint_dir), "--device", "cpu"]


# --- nothing is lost -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("through", ["same path", "symlink", "hard link"])
def test_score_pairs_refuses_to_overwrite_its_input(pairs_file: Path, model_args: list[str], through: str) -> None:
    original = pairs_file.read_bytes()
    output = pairs_file
    if through == "symlink":
        output = pairs_file.with_name("alias.jsonl")
        output.symlink_to(pairs_file)
    elif through == "hard link":
        output = pairs_file.with_name("linked.jsonl")
        os.link(pairs_file, output)
    status, _, stderr = run(["score-pairs", str(pairs_file), str(output), *model_args])
    assert status == 2
    one_line_error(stderr, "is the input file", "choose another output file")
    assert pairs_file.read_bytes() == original


def test_invalid_input_leaves_an_existing_output_untouched(tmp_path: Path, model_args: list[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"query": QUERY, "document": None}) + "\n")
    output = tmp_path / "scored.jsonl"
    output.write_text("results of an earlier run\n")
    status, _, stderr = run(["score-pairs", str(bad), str(output), *model_args])
    assert status == 2
    one_line_error(stderr, "'document'")
    assert output.read_text() == "results of an earlier run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "scored.jsonl"]  # no temporary left


def test_missing_input_creates_no_output(tmp_path: Path, model_args: list[str]) -> None:
    status, _, stderr = run(["score-pairs", str(tmp_path / "none.jsonl"), str(tmp_path / "out.jsonl"), *model_args])
    assert status == 2
    one_line_error(stderr, "none.jsonl does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("output", "message"),
    [("missing-dir/out.jsonl", "folder"), (".", "is a directory"), ("/dev/null", "not a regular file")],
)
def test_unwritable_outputs_are_one_line(
    pairs_file: Path, model_args: list[str], tmp_path: Path, output: str, message: str
) -> None:
    target = output if output.startswith("/") else str(tmp_path / output)
    status, _, stderr = run(["score-pairs", str(pairs_file), target, *model_args])
    assert status == 2
    one_line_error(stderr, message)


def test_a_full_disk_is_one_line_and_keeps_the_old_output(pairs_file: Path, model_args: list[str], tmp_path: Path):
    """A file-size limit makes the write fail with EFBIG, as a full disk fails with ENOSPC."""
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({**PAIRS[0], "id": i}) + "\n" for i in range(400)), encoding="utf-8")
    output = tmp_path / "scored.jsonl"
    output.write_text("old results\n")

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run(
        [*command(), "score-pairs", str(many), str(output), *model_args, "--no-progress"],
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=300,
    )
    assert done.returncode == 2
    one_line_error(done.stderr, f"cannot write output {output}")
    assert output.read_text() == "old results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.jsonl", "pairs.jsonl", "scored.jsonl"]


def test_eval_json_output_is_checked_before_any_work(tmp_path: Path, model_args: list[str]) -> None:
    status, _, stderr = run(["eval", str(tmp_path), "--run", str(tmp_path), "--json", str(tmp_path / "no/x.json")])
    assert status == 2
    one_line_error(stderr, "no/x.json", "does not exist")


# --- one clear line, never a traceback -------------------------------------------------------------------------


def test_missing_and_directory_inputs(tmp_path: Path, model_args: list[str]) -> None:
    status, _, stderr = run(["rerank", "-q", QUERY, "--input", str(tmp_path / "nope.json"), *model_args])
    assert status == 2
    one_line_error(stderr, "--input", "nope.json does not exist")
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "use sorted()"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": QUERY}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    status, _, stderr = run(["eval", str(beir), "--run", str(tmp_path), *model_args])
    assert status == 2
    one_line_error(stderr, "is a directory")


def test_invalid_utf8_names_the_file_and_stdin(tmp_path: Path, model_args: list[str]) -> None:
    path = tmp_path / "docs.json"
    path.write_bytes(b'["caf\xe9"]')
    status, _, stderr = run(["rerank", "-q", QUERY, "--input", str(path), *model_args])
    assert status == 2
    one_line_error(stderr, str(path), "not UTF-8")
    done = subprocess.run(
        [*command(), "rerank", "-q", QUERY, *model_args], input=b'["caf\xe9"]', capture_output=True, timeout=300
    )
    assert done.returncode == 2
    one_line_error(done.stderr.decode(), "standard input is not UTF-8")


@pytest.mark.parametrize("where", ["stdin", "file"])
def test_deeply_nested_json_is_one_line(tmp_path: Path, model_args: list[str], where: str) -> None:
    nested = "[" * 200_000 + "]" * 200_000
    if where == "file":
        (tmp_path / "deep.json").write_text(nested)
        status, _, stderr = run(["rerank", "-q", QUERY, "--input", str(tmp_path / "deep.json"), *model_args])
    else:
        status, _, stderr = run(["rerank", "-q", QUERY, *model_args], stdin=nested)
    assert status == 2
    one_line_error(stderr, "nested too deeply")


@pytest.mark.parametrize(
    ("argv_tail", "stdin", "message"),
    [
        ([], json.dumps({"query": QUERY, "texts": ["a", "b"]}), "looks like a TEI request"),
        ([], json.dumps({"query": QUERY, "docs": ["a"]}), "no 'documents' list"),
        (["-q", QUERY], "", "no documents to rerank"),
    ],
)
def test_inputs_without_documents_are_refused(model_args: list[str], argv_tail, stdin: str, message: str) -> None:
    status, stdout, stderr = run(["rerank", *argv_tail, *model_args], stdin=stdin)
    assert status == 2 and stdout == ""
    one_line_error(stderr, message)


def test_a_closed_stdout_pipe_ends_quietly(model_args: list[str]) -> None:
    documents = [f"document number {i} about lists" for i in range(300)]
    process = subprocess.Popen(
        [*command(), "rerank", "-q", QUERY, *documents, *model_args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader is gone before the results are written
    stderr = process.stderr.read().decode()
    process.wait(timeout=300)
    assert process.returncode == 1
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


# --- one type per option, shared by every subcommand ---------------------------------------------------------


@pytest.mark.parametrize(
    "subcommand", [["rerank", "-q", "x", "doc"], ["serve"], ["eval", "dir"], ["score-pairs", "a", "b"]]
)
@pytest.mark.parametrize(
    ("flag", "value"), [("--max-batch-tokens", "0"), ("--max-length", "-1"), ("--chunk-stride", "x")]
)
def test_engine_flags_are_checked_alike_by_every_subcommand(subcommand, flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*subcommand, flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_every_subcommand_lists_exactly_the_engine_options_it_accepts() -> None:
    """Every command has every engine option, except those a command refuses: ``export onnx`` (a graph holds no
    scoring setting) and ``train``/``distill`` (training truncates: no chunking) do not list them."""
    from jina_local_rerank.export.layout import EXPORT_OPTIONS
    from jina_local_rerank.options import OPTION_NAMES
    from jina_local_rerank.training.cli import CHUNKING_OPTIONS

    refused = {
        "export onnx": set(OPTION_NAMES) - set(EXPORT_OPTIONS),
        "train": set(CHUNKING_OPTIONS),
        "distill": set(CHUNKING_OPTIONS),
    }

    def leaves(parser: argparse.ArgumentParser, name: str):
        """The commands under ``parser`` that run (``export onnx``, not ``export``)."""
        nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not nested:
            yield name, parser
        for action in nested:
            for child, subparser in action.choices.items():
                yield from leaves(subparser, f"{name} {child}".strip())

    commands = dict(leaves(build_parser(), ""))
    assert {"rerank", "score-pairs", "export onnx", "train", "distill", "serve"} <= set(commands)
    for name, subparser in commands.items():
        dests = {action.dest for action in subparser._actions}
        assert dests & set(OPTION_NAMES) == set(OPTION_NAMES) - refused.get(name, set()), name


def help_text(*command: str) -> str:
    """``jina-local-rerank COMMAND --help`` as printed (argparse's own rendering, joined into one line)."""
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        build_parser().parse_args([*command, "--help"])
    return " ".join(out.getvalue().split())


def test_help_texts_state_what_the_commands_do() -> None:
    train, distill, export = help_text("train"), help_text("distill"), help_text("export", "onnx")
    for text in (train, distill):  # one default for the training window, the same in the option and elsewhere
        assert "pairs are truncated to it (default: 512; at most the model's window, 8192)" in text
        assert "default 512" not in text and "(default: the model's, 8192)" not in text
        assert "--batch-tokens BATCH_TOKENS tokens per forward pass of training" in text
    assert "--model MODEL the student's starting checkpoint" in distill
    assert "--model MODEL the checkpoint to fine-tune" in train
    for refused in ("--device", "--dtype", "--max-length", "--long-document", "--max-batch-tokens"):
        assert refused not in export
    assert "--model" in export and "--revision" in export


# --- progress, version, help --------------------------------------------------------------------------------


def test_progress_shows_with_progress_and_not_for_quick_work(model_args: list[str]) -> None:
    status, _, stderr = run(["rerank", "-q", QUERY, "a", "b", *model_args])
    assert status == 0 and stderr == ""  # quick work: the bar waits a few seconds before it shows
    status, _, stderr = run(["rerank", "-q", QUERY, "a", "b", "--progress", *model_args])
    assert status == 0 and "scoring" in stderr


def test_help_and_version_load_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from jina_local_rerank.cli import main\n"
        "for argv in (['--help'], ['rerank', '--help'], ['serve', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "    assert '``' not in out.getvalue(), out.getvalue()\n"
        "print(out.getvalue().strip(), 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from jina_local_rerank import __version__

    assert done.stdout.split() == ["jina-local-rerank", __version__, "False"]


def test_a_sigterm_that_surfaces_as_another_error_still_exits_143(monkeypatch, capsys):
    """SIGTERM raised inside a native call (safetensors' reader) can come out as that call's own error."""
    from jina_local_rerank.cli import rerank as rerank_command

    def handler(args: argparse.Namespace, stdin: object, stdout: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises Terminated here
        except KeyboardInterrupt:
            raise ValueError("not a readable safetensors file (the native call's own error)") from None

    monkeypatch.setattr(rerank_command, "_run_rerank", handler)
    assert main(["rerank", "query", "document"]) == 143
    assert capsys.readouterr().err == "jina-local-rerank: terminated\n"
    # The next run in the same process starts afresh: a plain error is an error again.
    monkeypatch.setattr(rerank_command, "_run_rerank", lambda *_: (_ for _ in ()).throw(ValueError("bad input")))
    assert main(["rerank", "query", "document"]) == 2
    assert capsys.readouterr().err == "jina-local-rerank: error: bad input\n"
