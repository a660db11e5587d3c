"""`shopsight` command line: each command wires one library function (TensorFlow is imported only where needed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="shopsight: predict what e-commerce shoppers do next.", no_args_is_help=True, add_completion=False)
train_app = typer.Typer(help="Train a task's models.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate a task's models on the test split.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry (BentoML model store).", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(models_app, name="models")
console = Console()

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params.yaml to read")


def _params(path: Path):
    from shopsight.config import ConfigError, load_params

    try:
        return load_params(path)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def ingest(params: Path = ParamsOpt) -> None:
    """Convert the configured source into canonical events; rejects go to data/rejects.parquet."""
    from shopsight.ingest import ingest as run_ingest
    from shopsight.validation import ContractError

    try:
        report = run_ingest(_params(params))
    except (ContractError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title=f"ingest: {report.source}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("rows_in", "rows_out", "rejected", "duplicates_removed", "users", "items", "start", "end"):
        table.add_row(key, str(getattr(report, key)))
    for reason, count in report.rejects_by_reason.items():
        table.add_row(f"reject: {reason}", str(count))
    console.print(table)


@app.command()
def features(params: Path = ParamsOpt) -> None:
    """Build user features at rolling cutoffs with labels and the time-based split."""
    from shopsight.pipeline import run_features

    console.print_json(json.dumps(run_features(_params(params))))


@train_app.command("propensity")
def train_propensity(params: Path = ParamsOpt) -> None:
    """Fit every propensity candidate (rules, BG/NBD, logistic regression, LightGBM, MLP); champion chosen on validation."""
    from shopsight.train import train_propensity as run

    console.print_json(json.dumps(run(_params(params))))


@evaluate_app.command("propensity")
def evaluate_propensity(params: Path = ParamsOpt) -> None:
    """Test metrics of every propensity candidate and the served champion; the target against the best reference."""
    from shopsight.evaluate import evaluate_propensity as run

    _print_metric_table(run(_params(params)), BINARY_KEYS, "propensity: test metrics")


def _print_metric_table(metrics: dict, keys: list[str], title: str) -> None:
    champion = metrics.get("champion")
    table = Table(title=f"{title} (champion chosen on validation: {champion})" if champion else title)
    table.add_column("model")
    for key in keys:
        table.add_column(key, justify="right")
    for name, row in metrics["test"].items():
        label = f"{name} *" if name == champion else name
        table.add_row(label, *(f"{row[k]:.4f}" if isinstance(row.get(k), (int, float)) else "-" for k in keys))
    console.print(table)
    if metrics.get("oracle_note"):
        console.print(metrics["oracle_note"])
    targets = metrics.get("targets") or {}
    if targets.get("note"):
        console.print(f"target: {targets['note']}")
    elif targets:
        console.print_json(json.dumps(targets))


BINARY_KEYS = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile"]


@app.command("churn-features")
def churn_features(params: Path = ParamsOpt) -> None:
    """Churn dataset: users active in the look-back window, features, BG/NBD inputs, inactivity label, split."""
    from shopsight.churn import run_churn_features

    console.print_json(json.dumps(run_churn_features(_params(params))))


@train_app.command("churn")
def train_churn(params: Path = ParamsOpt) -> None:
    """Fit every churn candidate (rules, BG/NBD, logistic regression, LightGBM, MLP); champion chosen on validation."""
    from shopsight.churn import train_churn as run

    console.print_json(json.dumps(run(_params(params))))


@evaluate_app.command("churn")
def evaluate_churn(params: Path = ParamsOpt) -> None:
    """Test metrics of every churn candidate, the served champion and the oracle; plots under plots/churn/."""
    from shopsight.churn import evaluate_churn as run

    _print_metric_table(run(_params(params)), BINARY_KEYS, "churn: test metrics")


@train_app.command("demand")
def train_demand(params: Path = ParamsOpt) -> None:
    """Train the demand forecaster (1-D CNN or LSTM over sliding windows of daily units)."""
    from shopsight.demand import train_demand as run

    console.print_json(json.dumps(run(_params(params))))


@evaluate_app.command("demand")
def evaluate_demand(params: Path = ParamsOpt) -> None:
    """WAPE and MASE over the test window against seasonal-naive and moving average; forecast plots."""
    from shopsight.demand import DEMAND_KEYS, evaluate_demand as run

    _print_metric_table(run(_params(params)), DEMAND_KEYS, "demand: test metrics")


@app.command()
def sequences(params: Path = ParamsOpt) -> None:
    """Item vocabulary and padded item sequences with the time-based split (data/sequences/)."""
    from shopsight.sequences import run_sequences

    try:
        console.print_json(json.dumps(run_sequences(_params(params))))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@train_app.command("recommender")
def train_recommender(params: Path = ParamsOpt) -> None:
    """Train the next-item sequence models in recommender.models (early stopping on validation NDCG@10)."""
    from shopsight.recommender import train_recommender as run

    console.print_json(json.dumps(run(_params(params))))


@evaluate_app.command("recommender")
def evaluate_recommender(params: Path = ParamsOpt) -> None:
    """Full-catalogue HR@10 / NDCG@10 / MRR@20 of every model, the baselines and the oracle; HR@K plot."""
    from shopsight.recommender import evaluate_recommender as run

    run(_params(params), log=console.print)


@app.command()
def headline() -> None:
    """Per task: the champion's test score on its headline metric, the best baseline's, the gap (metrics/headline.json)."""
    from shopsight.headline import HeadlineError, run_headline

    try:
        headlines = run_headline()
    except HeadlineError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title="headline, test split (gap > 0: the model beats the best baseline)", box=box.SIMPLE_HEAD)
    for col in ("task", "metric", "model", "best baseline", "gap", "met"):
        table.add_column(col, overflow="fold")

    def scored(name: str, value: float | None) -> str:
        return f"{name}\n{value:.4f}" if value is not None else f"{name}\n-"

    for h in headlines:
        table.add_row(h.task, h.metric + (" (lower\nis better)" if h.lower_is_better else ""), scored(h.model, h.score),
                      scored(h.best_baseline, h.baseline_score), "-" if h.gap is None else f"{h.gap:+.4f}", "yes" if h.met else "NO")
    console.print(table)


@app.command("register-recommender")
def register_recommender(params: Path = ParamsOpt) -> None:
    """Register the best next-item model in the BentoML model store (champion if it passes the ndcg_at_10 gate)."""
    from shopsight.recommender import register_recommender as run

    reg = run(_params(params))
    console.print(f"registered {reg.tag} as {reg.status}: {reg.reason}")


@app.command()
def audiences(
    params: Path = ParamsOpt,
    out_dir: Path = typer.Option(None, help="where to write the audiences (default: audiences.out_dir in params.yaml)"),
    events: Path = typer.Option(Path("data/events.parquet"), help="canonical events to score"),
    from_artifacts: bool = typer.Option(False, help="use artifacts/<task> instead of the registry champions"),
) -> None:
    """Campaign audiences from the champions (CSV + Parquet): likely buyers, high-value users at risk of churning."""
    from shopsight.audiences import AudienceError, build_audiences

    try:
        written = build_audiences(_params(params), events_path=events, out_dir=out_dir, from_artifacts=from_artifacts)
    except AudienceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table(title="campaign audiences")
    for col in ("audience", "users", "csv", "parquet"):
        table.add_column(col)
    for name, info in written.items():
        table.add_row(name, str(info["users"]), info["csv"], info["parquet"])
    console.print(table)


@app.command()
def drift(params: Path = ParamsOpt) -> None:
    """Evidently drift report: training-window features against the latest cutoff."""
    from shopsight.monitor import pipeline_drift_report

    summary = pipeline_drift_report(_params(params))
    console.print(f"drift: {summary.reason} -> {summary.decision}; report {summary.html}")


@app.command()
def register(params: Path = ParamsOpt) -> None:
    """Register the trained propensity model in the BentoML model store (champion if it passes the gate)."""
    from shopsight.pipeline import register_propensity

    reg = register_propensity(_params(params))
    console.print(f"registered {reg.tag} as {reg.status}: {reg.reason}")


@models_app.command("list")
def models_list(
    task: str = typer.Option(None, help="only this task"),
    as_json: bool = typer.Option(False, "--json", help="print every field (metrics, full lineage) as JSON"),
    wide: bool = typer.Option(False, "--wide", help="every column (for a wide terminal): all test metrics, git revision, data hash, trained at, gate"),
) -> None:
    """All registered versions per task, newest first: tag, status (champion/challenger/retired), score on the gate metric."""
    from shopsight.registry import list_models

    rows = list_models(task)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if wide:
        _print_models_wide(rows)
        return
    # Fits an 80-column terminal: the tag carries the task, the score is the task's gate metric.
    table = Table(title="shopsight models (newest first; --wide or --json for metrics and lineage)")
    for col in ("tag", "status", "score", "registered"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["tag"], row["status"], f"{row['main_metric']}={row['score']:.4f}", str(row.get("registered_at", ""))[:10])
    console.print(table)


def _print_models_wide(rows: list[dict]) -> None:
    table = Table(title="shopsight models")
    for col in ("task", "tag", "status", "test metrics", "git revision", "data hash", "trained at", "gate"):
        table.add_column(col, overflow="fold")  # fold, never cut: this view is for reading every value
    for row in rows:
        lineage = row.get("lineage", {})
        metrics = " ".join(f"{k}={v:.4f}" for k, v in (row.get("metrics") or {row["main_metric"]: row["score"]}).items())
        table.add_row(
            row["task"], row["tag"], row["status"], metrics, str(lineage.get("git_revision", ""))[:12],
            str(lineage.get("data_hash", ""))[:16], str(lineage.get("trained_at", "")), str(row.get("gate", "")),
        )
    console.print(table)


def _registry_call(fn, *args):
    from shopsight.registry import RegistryError

    try:
        return fn(*args)
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@models_app.command("promote")
def models_promote(tag: str = typer.Argument(..., help="<task>:<version> from `shopsight models list`")) -> None:
    """Make a registered version its task's champion (the current champion is retired)."""
    from shopsight.registry import promote

    previous = _registry_call(promote, tag)
    console.print(f"{tag} is now the champion (was {previous or 'none'})")


@models_app.command("rollback")
def models_rollback(task: str = typer.Argument(..., help="task name, e.g. propensity")) -> None:
    """Reinstate the previous champion of TASK (the current one is retired)."""
    from shopsight.registry import rollback

    tag = _registry_call(rollback, task)
    console.print(f"{task}: rolled back to {tag}")


@app.command()
def serve(port: int = typer.Option(3000), host: str = typer.Option("127.0.0.1", help="bind address")) -> None:
    """Serve the champion models with BentoML (binds 127.0.0.1 unless told otherwise)."""
    import subprocess
    import sys

    from shopsight.config import PROJECT_ROOT

    cmd = [sys.executable, "-m", "bentoml", "serve", "bentos.service:ShopsightService", "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd, cwd=PROJECT_ROOT))


@app.command("build-bento")
def build_bento() -> None:
    """`bentoml build` of bentos/ with the champion models."""
    from shopsight.packaging import build_bento as run

    console.print(f"built bento {run()}")


if __name__ == "__main__":
    app()
