"""lm-evaluation-harness on a model already in memory (a restored artifact or a source model).

Optional: ``pip install 'llmcodec[lm-eval]'``. Nothing is downloaded here: tasks whose data is not
on this machine fail with lm-eval's own message; ``include`` adds a folder of task YAML files (for
example a task over local JSON lines, as tests/test_lmeval.py does).
"""

from __future__ import annotations


class LmEvalError(ValueError):
    """lm-eval is missing, or a task cannot be run."""


def require() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmEvalError("--lm-eval needs lm-evaluation-harness: pip install 'llmcodec[lm-eval]'") from None


def run_tasks(model, tokenizer, tasks: list[str], include: str | None = None, limit: int | None = None,
              batch_size: int = 4) -> dict[str, dict[str, float]]:
    """Each task's numeric metrics (``acc,none`` and the like), by task name."""
    require()
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = [t.strip() for t in tasks if t.strip()]
    if not tasks:
        raise LmEvalError("--lm-eval: no task named")
    manager = TaskManager(include_path=include) if include else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise LmEvalError(f"--lm-eval: unknown task(s) {', '.join(unknown)}"
                          + ("" if include else " (a local task needs --lm-eval-include DIR)"))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit)
    # metrics are keyed "name,filter"; other keys (alias, sample_len) are bookkeeping
    return {task: {k: float(v) for k, v in metrics.items()
                   if "," in k and isinstance(v, int | float) and not isinstance(v, bool)}
            for task, metrics in out["results"].items()}
