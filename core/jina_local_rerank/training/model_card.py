"""The ``README.md`` model card of a trained checkpoint: what it was made from, on what data, with what settings,
and how it scores before and after training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunDescription:
    """What a model card reports about one run (metrics are means over the evaluation queries)."""

    name: str
    base_model: str
    command: str
    teacher: str | None
    student_layers: list[int] | None
    data: dict[str, Any]
    settings: dict[str, Any]
    steps: int
    total_steps: int
    tokens: int
    seconds: float
    evaluation: str | None = None
    metric: str | None = None
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)


def _table(rows: list[tuple[str, Any]], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return lines


def _which_checkpoint(run: RunDescription) -> str:
    """Which weights the checkpoint holds, said plainly, and where it scores below the starting model."""
    metric = run.metric or "the evaluation metric"
    if not run.best_step:
        text = (
            f"No evaluation after a training step scored a higher {metric} than the starting model, so this "
            f"checkpoint holds the starting model's weights, not trained ones ({run.steps} steps were run)."
        )
    else:
        text = (
            f"This checkpoint holds the weights of step {run.best_step} of {run.total_steps}, the evaluation "
            f"with the highest {metric}."
        )
    below = [name for name, after in run.after.items() if name in run.before and after < run.before[name]]
    if below:
        text += f" Its {', '.join(below)} {'is' if len(below) == 1 else 'are'} below the starting model's."
    return text


def model_card(run: RunDescription) -> str:
    """The card as Markdown with Hugging Face metadata (base model, pipeline tag)."""
    made = f"fine-tuned from `{run.base_model}`"
    if run.teacher is not None:
        made = f"distilled from `{run.teacher}`"
        if run.student_layers is not None:
            made += f" (student initialised with its layers {run.student_layers})"
        else:
            made += f", starting from `{run.base_model}`"
    lines = [
        "---",
        f"base_model: {run.base_model}",
        "library_name: jina-local-rerank",
        "pipeline_tag: text-ranking",
        "tags:",
        "- reranker",
        "- cross-encoder",
        "- jina-local-rerank",
        "---",
        "",
        f"# {run.name}",
        "",
        f"A JinaBERT cross-encoder reranker {made} with jina-local-rerank (`{run.command}`, loss "
        f"`{run.settings['loss']}`). The folder has the base model's format (config.json with the same keys, bf16 "
        "`model.safetensors` with the original tensor names, the same tokenizer files): it loads in "
        "jina-local-rerank, in the original remote code (`trust_remote_code=True`), in Text Embeddings Inference "
        "and in llama.cpp's converter like the published Jina rerankers.",
        "",
        "```python",
        "from jina_local_rerank import Reranker",
        "",
        f'reranker = Reranker(model="path/to/{run.name}")',
        'print(reranker.rerank("query", ["a document", "another document"]))',
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if run.evaluation is None:
        lines.append("No evaluation set was given: this checkpoint holds the weights of the last step.")
    else:
        lines += [
            f"On {run.evaluation}: the starting model (before) and this checkpoint (after, the bf16 weights "
            f"as saved, reloaded). {_which_checkpoint(run)}",
            "",
        ]
        lines += ["| metric | before | after | change |", "|---|---|---|---|"]
        for metric, after in run.after.items():
            before = run.before.get(metric)
            shown = "" if before is None else f"{before:.4f}"
            change = "" if before is None else f"{after - before:+.4f}"
            lines.append(f"| {metric} | {shown} | {after:.4f} | {change} |")
        if len(run.history) > 1:
            names = list(run.history[0][1])
            lines += [
                "",
                "Every evaluation of the run (step 0: the starting model):",
                "",
                "| step | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names),
            ]
            lines += [
                f"| {step}{' (kept)' if step == run.best_step else ''} | "
                + " | ".join(f"{metrics.get(name, float('nan')):.4f}" for name in names)
                + " |"
                for step, metrics in run.history
            ]
    lines += ["", "## Training data", ""]
    data_rows = [(name, value) for name, value in run.data.items() if name != "skipped"]
    data_rows += [(f"skipped: {reason}", count) for reason, count in run.data.get("skipped", {}).items()]
    lines += _table(data_rows, ("", ""))
    lines += ["", "## Settings", ""]
    settings = [(name, f"`{value}`") for name, value in run.settings.items()]
    settings += [
        ("steps run", f"{run.steps} of {run.total_steps}"),
        ("tokens trained on", f"{run.tokens:,}"),
        ("training time (s)", f"{run.seconds:.1f}"),
    ]
    lines += _table(settings, ("setting", "value"))
    return "\n".join(lines) + "\n"
