"""`attribution run`: the real pipeline function executed by kfp.local (SubprocessRunner without a venv, so
it runs offline in this environment), then its artifacts copied out of kfp.local's pipeline root:

    OUTPUT/model/          the model directory (what the predictor loads)
    OUTPUT/metrics.json    holdout metrics (evaluate step)
    OUTPUT/report.html     the evaluation report
    OUTPUT/deploy/         the deploy gate's decision.json (+ the InferenceService it would apply)
    OUTPUT/kfp_local/      kfp.local's pipeline root: every task's outputs, where the next task read them
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from attribution.features.compute import DEFAULT_ENGINE
from attribution.steps import DEFAULT_MEMORY_BUDGET
from pipelines.progress import TaskLines

log = logging.getLogger(__name__)

# Task name in kfp.local's pipeline root -> the outputs it writes (and the steps reading them).
STEP_OUTPUTS = {
    "resolve-input": ["Output"],
    "extract-features": ["features"],
    "fit-cat2vec": ["cat2vec"],
    "tune-params": ["params"],
    "train-model": ["model"],
    "evaluate-model": ["metrics", "classification", "report"],
    "record-live-metrics": ["live"],
    "deploy-model": ["decision"],
}


def generate_clicks(rows: int, seed: int, path: Path) -> Path:
    from attribution.io import write_clicks
    from attribution.synth import generate

    t0 = time.perf_counter()
    frame = generate(rows, seed=seed)
    write_clicks(frame, path)
    log.info("generated %d synthetic clicks -> %s in %.1fs", rows, path, time.perf_counter() - t0)
    return path


def _copy(src: str | Path, dst: Path) -> Path:
    src = Path(src)
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def step_dirs(run_root: Path) -> dict[str, Path]:
    """Task name -> its folder under the run's pipeline root (kfp.local names them after the component)."""
    found = {}
    for d in sorted(p for p in run_root.rglob("*") if p.is_dir()):
        name = d.name
        for step in STEP_OUTPUTS:
            if name == step or (name.startswith(step) and name[len(step):].lstrip("-").isdigit()):
                found.setdefault(step, d)
    return found


def run_local(
    data: str | None = None,
    rows: int | None = 300_000,
    output: str | Path = "out/run",
    valid_from: str | None = None,
    max_evals: int = 0,
    seed: int = 0,
    feature_engine: str = DEFAULT_ENGINE,
    trainer: str = "xgboost",
    min_roc_auc: float = 0.9,
    min_pr_auc: float = 0.05,
    deployed_model_uri: str = "",
    on_task: Callable[[str], None] | None = None,
    memory_budget: str | None = None,
) -> dict:
    """Run the pipeline locally; returns where everything is (and prints it). `on_task` gets one line per
    finished task (name, seconds, key figure). memory_budget: what each step may use (default: the
    pipeline's DEFAULT_MEMORY_BUDGET)."""
    from kfp import local

    from pipelines.attribution_pipeline import attribution_pipeline

    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if data is None:
        data = str(generate_clicks(int(rows or 300_000), seed, out / "input" / "clicks.parquet"))
    root = out / "kfp_local"
    before = set(root.iterdir()) if root.is_dir() else set()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    t1 = time.perf_counter()
    lines = TaskLines(root, on_task) if on_task else None
    if lines:
        logging.getLogger().addFilter(lines)
    try:
        task = attribution_pipeline(
            data=str(Path(data).resolve()), feature_engine=feature_engine, trainer=trainer, runtime="local",
            valid_from=valid_from or "", max_evals=max_evals, seed=seed, min_roc_auc=min_roc_auc,
            min_pr_auc=min_pr_auc, deployed_model_uri=deployed_model_uri, memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET,
        )
    finally:
        if lines:
            logging.getLogger().removeFilter(lines)
    pipeline_seconds = time.perf_counter() - t1
    outputs = task.outputs
    run_root = next(iter(sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)), None)
    result = {
        "data": data,
        "output": str(out),
        "model": str(_copy(outputs["model"].path, out / "model")),
        "metrics": str(_copy(outputs["metrics"].path, out / "metrics.json")),
        "report": str(_copy(outputs["report"].path, out / "report.html")),
        "deploy": str(_copy(outputs["decision"].path, out / "deploy")),
        "pipeline_root": str(run_root or root),
        "steps": {k: str(v) for k, v in step_dirs(run_root).items()} if run_root else {},
        "pipeline_seconds": round(pipeline_seconds, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    decision = json.loads((out / "deploy" / "decision.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    result["deployed"] = decision["deployed"]
    (out / "run.json").write_text(json.dumps(result, indent=2))
    print(
        f"pipeline finished in {result['seconds']:.0f}s (kfp.local)\n"
        f"  model:   {result['model']}\n  metrics: {result['metrics']}  "
        f"(roc_auc={metrics.get('roc_auc')}, pr_auc={metrics.get('pr_auc')})\n"
        f"  report:  {result['report']}\n"
        f"  deploy:  {result['deploy']} (deployed={decision['deployed']}: {'; '.join(decision['reasons'])})\n"
        f"  every task's artifacts: {result['pipeline_root']}",
        flush=True,
    )
    return result
