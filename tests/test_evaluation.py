"""``jina-local-rerank eval``: BEIR loading, run files, BM25, metrics, the runner and the command line.

Expectations come from the engine's own scores (``Reranker.score``) and, for the metrics, from trec_eval
(``pytrec_eval``) where it is installed, and from cases computed by hand.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from jina_local_rerank import Reranker
from jina_local_rerank.cli import main
from jina_local_rerank.evaluation import (
    BeirDataset,
    BeirDocument,
    DatasetError,
    FirstStage,
    bm25_first_stage,
    default_cutoffs,
    evaluate,
    hit_rate_at,
    load_beir,
    mean_metrics,
    mrr_at,
    ndcg_at,
    query_metrics,
    read_trec_run,
    recall_at,
    select_queries,
)

# A document about ``sorted`` whose only mention of it comes after ~150 tokens of filler: past the window of
# the 128-token checkpoint, so ``truncate`` scores the filler alone and ``chunk`` also scores the end.
FILLER = "the class statement defines a new class object and the module namespace keeps the names " * 10
CORPUS = {
    "d1": ("Sorting", "the sort method of a list orders its items in place and returns None"),
    "d2": ("Builtins", FILLER + "finally the sorted function returns a new sorted list from any iterable"),
    "d3": ("", "the import statement finds a module and binds a name in the local namespace"),
    "d4": ("Exceptions", "the raise statement raises an exception object which a try statement can handle"),
    "d5": ("Loops", "a for loop iterates over the items of a sequence or any iterable"),
    "d6": ("Dictionaries", "a dict maps keys to values and the keys method returns a view of the keys"),
    "d7": ("Strings", "the format method of a string returns a formatted copy of the string"),
    "d8": ("Functions", "a def statement defines a function object with a name and parameters"),
}
QUERIES = {
    "q1": "how do I sort a list",
    "q2": "what does sorted return",
    "q3": "import a module",
    "q4": "raise an exception",
    "q5": "iterate over a dict",
    "q8": "unjudged query",
}
# q6 has no text in queries.jsonl and q7 no relevant document: both are skipped.
QRELS = [
    ("q1", "d1", 2),
    ("q1", "d2", 1),
    ("q2", "d2", 2),
    ("q3", "d3", 1),
    ("q4", "d4", 2),
    ("q4", "d8", 0),
    ("q5", "d5", 1),
    ("q5", "d6", 1),
    ("q6", "d1", 1),
    ("q7", "d7", 0),
]


def write_dataset(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [json.dumps({"_id": i, "title": title, "text": text}) for i, (title, text) in CORPUS.items()]
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    queries = [json.dumps({"_id": i, "text": text}) for i, text in QUERIES.items()]
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    rows = "".join(f"{q}\t{d}\t{grade}\n" for q, d, grade in QRELS)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return root


def write_run(path: Path) -> Path:
    """Every document for every query, scored by a fixed shuffle, with ties (d3 and d4 always share a score)."""
    lines = []
    for number, query_id in enumerate(QUERIES):
        order = list(CORPUS)
        random.Random(number).shuffle(order)
        scores = {doc: float(len(order) - rank) for rank, doc in enumerate(order)}
        scores["d4"] = scores["d3"]
        lines += [f"{query_id} Q0 {doc} {rank} {scores[doc]} test" for rank, doc in enumerate(order, start=1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("beir") / "tiny")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("run") / "run.trec")


def expected_rankings(
    reranker: Reranker, dataset_dir: Path, first_stage: dict[str, list[str]], top_k: int, max_queries: int | None = None
) -> dict[str, tuple[list[str], list[str]]]:
    """(candidates, reranked ids) per evaluated query, from the engine's logits (ties would keep first-stage order)."""
    dataset = load_beir(dataset_dir)
    rankings = {}
    for query_id in select_queries(dataset, max_queries)[0]:
        candidates = first_stage.get(query_id, [])[:top_k]
        texts = [(CORPUS[d][0] + " " + CORPUS[d][1]).strip() for d in candidates]
        logits = reranker.score(QUERIES[query_id], texts).logits
        rankings[query_id] = (candidates, sorted(candidates, key=lambda d: -logits[candidates.index(d)]))
    return rankings


def qrels_of(query_id: str) -> dict[str, int]:
    return {d: grade for q, d, grade in QRELS if q == query_id}


# --- metrics -------------------------------------------------------------------------------------------------


def test_graded_relevance_by_hand() -> None:
    qrels = {"a": 2, "b": 0, "c": 1}
    ranking = ["b", "c", "z", "a"]  # z is not judged
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranking, qrels) == pytest.approx(dcg / ideal)
    assert mrr_at(ranking, qrels) == 0.5
    assert recall_at(ranking, qrels, 2) == 0.5
    assert recall_at(ranking, qrels, 4) == 1.0
    assert hit_rate_at(ranking, qrels, 1) == 0.0
    assert hit_rate_at(ranking, qrels, 2) == 1.0


def test_ideal_counts_relevant_documents_never_retrieved() -> None:
    qrels = {"a": 1, "missing": 3}
    assert ndcg_at(["a"], qrels) == pytest.approx(1 / (3 + 1 / math.log2(3)))
    assert recall_at(["a", "b"], qrels, 10) == 0.5


def test_ranks_beyond_the_cutoff_do_not_count() -> None:
    ranking = [f"n{i}" for i in range(10)] + ["a"]
    qrels = {"a": 1}
    assert ndcg_at(ranking, qrels) == mrr_at(ranking, qrels) == hit_rate_at(ranking, qrels, 10) == 0.0
    assert recall_at(ranking, qrels, 11) == hit_rate_at(ranking, qrels, 11) == 1.0
    assert mrr_at(ranking, qrels, 11) == pytest.approx(1 / 11)


def test_query_without_relevant_documents_scores_zero() -> None:
    for qrels in ({}, {"a": 0, "b": -1}):
        assert query_metrics(["a", "b"], qrels, [1, 10]) == {
            "ndcg@10": 0.0,
            "mrr@10": 0.0,
            "recall@1": 0.0,
            "recall@10": 0.0,
            "hit_rate@1": 0.0,
            "hit_rate@10": 0.0,
        }


def test_negative_grades_are_not_relevant() -> None:
    qrels = {"bad": -2, "good": 1}
    assert ndcg_at(["bad", "good"], qrels) == pytest.approx(1 / math.log2(3))
    assert mrr_at(["bad", "good"], qrels) == 0.5


def test_empty_ranking() -> None:
    assert query_metrics([], {"a": 1}, [5]) == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@5": 0.0, "hit_rate@5": 0.0}


def test_bad_rankings_and_cutoffs_are_rejected() -> None:
    with pytest.raises(ValueError, match="'a' more than once"):
        ndcg_at(["a", "b", "a"], {"a": 1})
    with pytest.raises(ValueError, match="cutoff"):
        recall_at(["a"], {"a": 1}, 0)


def test_ranking_agreement_by_hand() -> None:
    from jina_local_rerank.evaluation import ranking_agreement

    reference = [[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0], [5.0, 4.0]]  # the last has too few documents to rank
    candidate = [[3.5, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0], [0.0, 9.0]]
    agreement = ranking_agreement(reference, candidate)
    assert (agreement.queries, agreement.documents) == (2, 7)
    assert (agreement.mean_spearman, agreement.min_spearman) == (0.0, -1.0)
    assert (agreement.top1, agreement.top3) == (0.5, 1.0)  # three of three documents are always the best three
    assert (agreement.max_logit_change, agreement.logit_spread) == (2.0, 3.0)
    with pytest.raises(ValueError, match="2 reference queries but 1 candidate"):
        ranking_agreement(reference[:2], candidate[:1])
    with pytest.raises(ValueError, match="at least one query with 3"):
        ranking_agreement([[1.0, 2.0]], [[1.0, 2.0]])


def test_default_cutoffs_stop_at_the_candidate_depth() -> None:
    assert default_cutoffs(100) == (10, 100)
    assert default_cutoffs(10) == (10,)
    assert default_cutoffs(5) == (5,)


def test_mean_metrics() -> None:
    assert mean_metrics([{"m": 1.0, "n": 0.0}, {"m": 0.0, "n": 0.5}]) == {"m": 0.5, "n": 0.25}
    assert mean_metrics([]) == {}


def test_metrics_match_trec_eval() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(7)
    qrels, rankings = {}, {}
    for number in range(60):
        query_id = f"q{number}"
        judged = rng.sample(range(40), rng.randint(0, 12))
        qrels[query_id] = {f"d{d}": rng.choice([-1, 0, 0, 1, 1, 2, 3]) for d in judged}
        if not qrels[query_id]:
            qrels[query_id] = {"d99": 0}  # trec_eval drops a query without judgments
        rankings[query_id] = [f"d{d}" for d in rng.sample(range(40), rng.randint(1, 30))]
    # Strictly decreasing scores: trec_eval would break ties by document id, our rankings are explicit.
    run = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in rankings.items()}
    top10 = {q: {d: s for d, s in docs.items() if s > len(rankings[q]) - 10} for q, docs in run.items()}
    measures = {"ndcg_cut.10", "recall.1,5,10,20", "success.1,5,10,20"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    trec_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for query_id, ranking in rankings.items():
        judged = qrels[query_id]
        assert ndcg_at(ranking, judged) == pytest.approx(trec[query_id]["ndcg_cut_10"], abs=1e-9), query_id
        assert mrr_at(ranking, judged) == pytest.approx(trec_rr[query_id]["recip_rank"], abs=1e-9), query_id
        for k in (1, 5, 10, 20):
            assert recall_at(ranking, judged, k) == pytest.approx(trec[query_id][f"recall_{k}"], abs=1e-9)
            assert hit_rate_at(ranking, judged, k) == trec[query_id][f"success_{k}"]


# --- BEIR layout -----------------------------------------------------------------------------------------------


def test_load_beir(dataset_dir: Path) -> None:
    dataset = load_beir(dataset_dir, "test")
    assert list(dataset.corpus) == list(CORPUS)
    assert dataset.corpus["d1"].full_text == "Sorting " + CORPUS["d1"][1]
    assert dataset.corpus["d3"].full_text == CORPUS["d3"][1]  # no title: no leading space
    assert dataset.queries == QUERIES
    assert dataset.qrels["q4"] == {"d4": 2, "d8": 0}
    assert sum(len(judged) for judged in dataset.qrels.values()) == len(QRELS)  # the header line is not a judgment


def test_select_queries_skips_unusable_ones(dataset_dir: Path) -> None:
    dataset = load_beir(dataset_dir)
    assert select_queries(dataset) == (["q1", "q2", "q3", "q4", "q5"], ["q6", "q7"])
    assert select_queries(dataset, 2)[0] == ["q1", "q2"]


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', r"corpus\.jsonl line 2: not JSON"),
        ("corpus.jsonl", '{"_id": "d1", "title": "no text"}\n', r"corpus\.jsonl line 1: 'text' is missing"),
        ("corpus.jsonl", '{"_id": "d1", "text": 3}\n', r"corpus\.jsonl line 1: 'text' must be a string, got int"),
        ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n\n' * 2, r"line 3: duplicate document id 'd1'"),
        ("queries.jsonl", '["q1", "text"]\n', r"queries\.jsonl line 1: expected a JSON object, got list"),
        ("queries.jsonl", '{"text": "no id"}\n', r"queries\.jsonl line 1: '_id' is missing"),
        ("qrels/test.tsv", "q1\td1\t1\nq1 d2 1\n", r"test\.tsv line 2: expected 3 tab-separated fields"),
        ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"test\.tsv line 2: score 'high' is not"),
        ("qrels/test.tsv", "q1\td1\t1.5\n", r"test\.tsv line 1: score '1\.5' is not an integer"),
        ("qrels/test.tsv", "q1\td1\t1\nq1\td1\t2\n", r"test\.tsv line 2: query 'q1' judges document 'd1' twice"),
    ],
)
def test_malformed_files_are_named_with_their_line(tmp_path: Path, filename: str, content: str, message: str) -> None:
    root = write_dataset(tmp_path / "bad")
    (root / filename).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        load_beir(root)


def test_missing_files(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "partial")
    with pytest.raises(DatasetError, match=r"qrels/dev\.tsv not found \(splits in .*: test\)"):
        load_beir(root, "dev")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"corpus\.jsonl not found"):
        load_beir(root)
    with pytest.raises(DatasetError, match="dataset folder .* not found"):
        load_beir(tmp_path / "nowhere")


# --- first stages ----------------------------------------------------------------------------------------------


def test_run_file_orders_by_score_ties_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 2.0 t\n\nq1 Q0 c 3 0.5 t\nq2 Q0 a 1 -1e3 t\n", encoding="utf-8")
    assert read_trec_run(path) == {"q1": ["b", "a", "c"], "q2": ["a"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q1 Q0 a 1 0.5\n", r"line 1: expected 6 fields"),
        ("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 high t\n", r"line 2: score 'high' is not a number"),
        ("q1 Q0 a 1 0.5 t\nq1 Q0 a 2 0.4 t\n", r"line 2: document 'a' listed twice for query 'q1'"),
    ],
)
def test_malformed_run_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "run.trec"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=message):
        read_trec_run(path)
    with pytest.raises(DatasetError, match="missing.trec does not exist"):
        read_trec_run(tmp_path / "missing.trec")


def test_bm25_first_stage(dataset_dir: Path) -> None:
    pytest.importorskip("bm25s")
    dataset = load_beir(dataset_dir)
    first = bm25_first_stage(dataset, ["q3", "q4", "q8"], top_k=2)
    assert first.name == "bm25"
    assert first.rankings["q3"][0] == "d3"  # the only document with both "import" and "module"
    assert first.rankings["q4"][0] == "d4"
    assert all(len(ranking) <= 2 for ranking in first.rankings.values())
    assert first.rankings["q8"] == []  # shares no term with any document
    wide = bm25_first_stage(dataset, ["q4"], top_k=100).rankings["q4"]
    assert set(wide) == {"d4"}  # "raise" and "exception" occur nowhere else


# --- the runner ------------------------------------------------------------------------------------------------


def test_evaluate_matches_the_engine_scores(reranker: Reranker, dataset_dir: Path, run_file: Path) -> None:
    first = FirstStage("run", read_trec_run(run_file), 0.25)
    report = evaluate(reranker, load_beir(dataset_dir), first, top_k=4, cutoffs=[1, 4])
    expected = expected_rankings(reranker, dataset_dir, first.rankings, 4)
    assert [q.query_id for q in report.queries] == list(expected)
    for query in report.queries:
        candidates, ranking = expected[query.query_id]
        assert query.ranking == ranking
        assert query.first_stage == query_metrics(candidates, qrels_of(query.query_id), [1, 4])
        assert query.reranked == query_metrics(ranking, qrels_of(query.query_id), [1, 4])
    assert report.reranked == mean_metrics([q.reranked for q in report.queries])
    assert report.first_stage == mean_metrics([q.first_stage for q in report.queries])
    assert list(report.reranked) == ["ndcg@10", "mrr@10", "recall@1", "recall@4", "hit_rate@1", "hit_rate@4"]
    assert report.first_stage_seconds == 0.25
    assert report.skipped_queries == ["q6", "q7"]


def test_reranker_ties_keep_the_first_stage_order(reranker: Reranker, tmp_path: Path) -> None:
    same, other = "the sort method orders a list", "a module namespace"
    corpus = {"a": BeirDocument("", same), "b": BeirDocument("", other), "c": BeirDocument("", same)}
    dataset = BeirDataset(corpus, {"q": "sort a list"}, {"q": {"c": 1}}, tmp_path, "test")
    logits = reranker.score("sort a list", [same, same, other]).logits
    assert logits[0] == logits[1] != logits[2]  # the engine scores identical sequences identically
    for order in (["a", "b", "c"], ["c", "b", "a"]):
        query = evaluate(reranker, dataset, FirstStage("run", {"q": order}, 0.0)).queries[0]
        assert [d for d in query.ranking if d != "b"] == [d for d in order if d != "b"]
        position = query.ranking.index("c") + 1
        assert query.reranked["mrr@10"] == 1 / position


def test_evaluate_rejects_candidates_outside_the_corpus(reranker: Reranker, dataset_dir: Path) -> None:
    first = FirstStage("run:x.trec", {"q1": ["d1", "d404"]}, 0.0)
    with pytest.raises(DatasetError, match=r"run:x\.trec: document 'd404' \(query 'q1'\) is not in the corpus"):
        evaluate(reranker, load_beir(dataset_dir), first)


def test_query_without_candidates_scores_zero(reranker: Reranker, dataset_dir: Path) -> None:
    report = evaluate(reranker, load_beir(dataset_dir), FirstStage("empty", {}, 0.0), max_queries=2)
    assert [q.ranking for q in report.queries] == [[], []]
    assert set(report.reranked.values()) == {0.0}


def test_evaluate_validates_its_arguments(reranker: Reranker, dataset_dir: Path) -> None:
    dataset, first = load_beir(dataset_dir), FirstStage("empty", {}, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        evaluate(reranker, dataset, first, top_k=0)
    with pytest.raises(ValueError, match="max_queries"):
        evaluate(reranker, dataset, first, max_queries=0)
    with pytest.raises(TypeError, match=r"cutoffs\[1\]"):
        evaluate(reranker, dataset, first, cutoffs=[5, "10"])


def test_chunk_scores_the_tail_that_truncate_cuts(small_window_checkpoint_dir: Path, dataset_dir: Path) -> None:
    dataset = load_beir(dataset_dir)
    first = FirstStage("run", {"q2": ["d2", "d1", "d5"]}, 0.0)
    reports = {
        mode: evaluate(
            Reranker(small_window_checkpoint_dir, device="cpu", long_document=mode), dataset, first, max_queries=2
        )
        for mode in ("truncate", "chunk")
    }
    truncated, chunked = reports["truncate"].queries[1], reports["chunk"].queries[1]
    assert (truncated.truncated, truncated.chunked, truncated.windows) == (1, 0, 3)
    assert chunked.truncated == 0 and chunked.chunked == 1 and chunked.windows > 3
    truncating = Reranker(small_window_checkpoint_dir, device="cpu")
    both = truncating.score(QUERIES["q2"], [dataset.corpus["d2"].full_text, "Builtins " + FILLER])
    assert both.truncated == [True, True]
    assert both.logits[0] == pytest.approx(both.logits[1], abs=1e-6)  # the end that mentions sorted is never read


# --- the command line ------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("jina-local-rerank")
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=300)


def check_json_against_engine(output: dict, reranker: Reranker, dataset_dir: Path, first: dict) -> None:
    expected = expected_rankings(reranker, dataset_dir, first, output["top_k"], output["num_queries"])
    cutoffs = output["cutoffs"]
    assert list(output["per_query"]) == list(expected)
    for query_id, (candidates, ranking) in expected.items():
        entry = output["per_query"][query_id]
        assert entry["ranking"] == ranking
        assert entry["first_stage"] == pytest.approx(query_metrics(candidates, qrels_of(query_id), cutoffs))
        assert entry["reranked"] == pytest.approx(query_metrics(ranking, qrels_of(query_id), cutoffs))
    for stage, index in (("first_stage", 0), ("reranked", 1)):
        per_query = [query_metrics(pair[index], qrels_of(q), cutoffs) for q, pair in expected.items()]
        assert output["metrics"][stage] == pytest.approx(mean_metrics(per_query))


def test_cli_round_trip_with_bm25_and_chunking(
    small_window_checkpoint_dir: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("bm25s")
    out = tmp_path / "eval.json"
    model = ["--model", str(small_window_checkpoint_dir), "--device", "cpu", "--long-document", "chunk"]
    args = ["--bm25", "--top-k", "5", "--json", str(out), "--per-query", "--progress"]
    done = run_cli("eval", str(dataset_dir), *args, *model)
    assert done.returncode == 0, done.stderr
    assert "reranking" in done.stderr  # the progress bar, shown from the start with --progress
    for row in ("metric", "ndcg@10", "mrr@10", "recall@5", "hit_rate@5", "time (s)"):
        assert f"\n{row}" in done.stdout
    assert "recall@10" not in done.stdout  # a depth past top-k would only repeat recall@5
    output = json.loads(out.read_text(encoding="utf-8"))
    settings = (output["first_stage"], output["long_document"], output["top_k"], output["cutoffs"])
    assert settings == ("bm25", "chunk", 5, [5])
    assert output["num_queries"] == 5 and output["skipped_queries"] == ["q6", "q7"]
    dataset = load_beir(dataset_dir)
    bm25 = bm25_first_stage(dataset, select_queries(dataset)[0], 5).rankings
    chunking = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk")
    check_json_against_engine(output, chunking, dataset_dir, bm25)
    scored = [chunking.score(QUERIES[q], [dataset.corpus[d].full_text for d in bm25[q]]) for q in output["per_query"]]
    assert output["documents"] == {
        "scored": sum(len(r.windows) for r in scored),
        "truncated": 0,
        "chunked": sum(r.num_chunked for r in scored),
        "windows": sum(sum(r.windows) for r in scored),
    }
    assert output["documents"]["chunked"] >= 1  # d2 is longer than the window


def test_cli_round_trip_with_a_run_file(
    reranker: Reranker, checkpoint_dir: Path, dataset_dir: Path, run_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    model = ["--model", str(checkpoint_dir), "--device", "cpu"]
    args = ["--run", str(run_file), "--top-k", "3", "--max-queries", "3", "--cutoffs", "1,3", "--quiet"]
    done = run_cli("eval", str(dataset_dir), *args, "--json", str(out), "--per-query", *model)
    assert done.returncode == 0, done.stderr
    assert "reranking" not in done.stderr
    output = json.loads(out.read_text(encoding="utf-8"))
    assert output["first_stage"] == f"run:{run_file}" and output["num_queries"] == 3
    check_json_against_engine(output, reranker, dataset_dir, read_trec_run(run_file))
    for query_id, entry in output["per_query"].items():
        assert f"\n{query_id} " in done.stdout
        assert len(entry["ranking"]) == 3


def test_cli_reports_a_malformed_dataset(dataset_dir: Path, checkpoint_dir: Path, tmp_path: Path, capsys) -> None:
    root = write_dataset(tmp_path / "bad")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2"}\n', encoding="utf-8")
    status = main(["eval", str(root), "--run", "unused.trec", "--model", str(checkpoint_dir), "--device", "cpu"])
    assert status == 2
    assert "queries.jsonl line 2: 'text' is missing" in capsys.readouterr().err


def test_cli_run_and_bm25_are_exclusive(dataset_dir: Path, run_file: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", str(dataset_dir), "--bm25", "--run", str(run_file)])
    assert exited.value.code == 2
