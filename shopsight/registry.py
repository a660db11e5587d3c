"""Model registry on top of the BentoML model store: register with lineage, champion gate, list, promote, rollback.

The model files, metrics, params and lineage live in the BentoML store (`<task>:<version>`); which version is
the champion, the champion history (for rollback) and an audit log live in a small JSON index in BENTOML_HOME.
Every read-modify-write of the index holds a file lock and replaces the file atomically, so concurrent
writers (two flows registering at once, a promote during a training run) never lose an update and a crash
never leaves a half-written index.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from filelock import FileLock

if TYPE_CHECKING:
    import pandas as pd

    from shopsight.config import GateParams

INDEX_NAME = "shopsight-registry.json"
REFERENCE_FILE = "reference.parquet"  # the reference features for drift, stored inside the model directory
LOCK_TIMEOUT_S = 60.0
DEFAULT_LOWER_IS_BETTER = ("log_loss", "brier", "ece", "wape", "mase", "mae", "rmse")

CHAMPION, CHALLENGER, RETIRED = "champion", "challenger", "retired"


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown tag or task, nothing to roll back to)."""


@dataclass(frozen=True)
class MetricComparison:
    """One row of the champion/challenger table; `improvement` is signed so that positive is better."""

    metric: str
    role: str  # main | guard
    champion: float | None
    challenger: float
    improvement: float | None
    ok: bool


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    rows: tuple[MetricComparison, ...] = ()
    basis: str = ""  # where the champion's side of the table comes from (see ChampionScores)

    def markdown(self) -> str:
        """The comparison as a Markdown table (used for the Prefect artifact and the CLI)."""
        lines = [f"Champion's scores: {self.basis}", ""] if self.basis else []
        lines += ["| metric | role | champion | challenger | improvement | ok |", "|---|---|---|---|---|---|"]
        for r in self.rows:
            champ = "-" if r.champion is None else f"{r.champion:.4f}"
            imp = "-" if r.improvement is None else f"{r.improvement:+.4f}"
            lines.append(f"| {r.metric} | {r.role} | {champ} | {r.challenger:.4f} | {imp} | {'yes' if r.ok else 'NO'} |")
        return "\n".join(lines)


@dataclass(frozen=True)
class ChampionScores:
    """What the gate compares the challenger with, worked out by the task before registering: the champion `tag`
    scored on the challenger's own validation rows (`metrics`), or None to use the champion's stored validation
    scores, and why (`basis`). Stored scores come from the champion's own run, i.e. other rows once the data has
    moved on: a champion whose validation happened to be easy would keep every later challenger out. `tolerance`: how
    far the challenger's main metric may fall short of the champion's and still pass (lowers min_improvement by that
    much: a reference challenger against a learned champion whose lead is within the validation noise, see
    with_reference_tolerance). Used only if `tag` is still the champion when the index is locked."""

    tag: str
    metrics: dict[str, float] | None
    basis: str
    tolerance: float = 0.0


STORED_BASIS = "stored validation scores from the champion's own run"


def champion_scores(task: str, gate_rows: dict[str, Any] | None, rescore: "Callable[[Path], dict[str, float]]", main_metric: str,
                    *, labels_until_of: "Callable[[dict[str, Any]], str | None] | None" = None) -> ChampionScores | None:
    """What the gate should compare a challenger with (see ChampionScores), for a task whose runs record `gate_rows`
    (`valid_fingerprint`: which validation rows; `valid_first_cutoff`: where they start; `labels_until`: the first
    instant the fitted model saw no data of). Same rows as the champion's run: its stored scores. Otherwise, when it saw
    nothing from the challenger's validation rows on (its `labels_until`, or for a champion registered before gate_rows
    were kept `labels_until_of(the metrics stored with it)`, at or before their first cutoff): `rescore(champion's directory)`, the
    champion scored on those rows by the task. Else, or when it cannot be loaded: the stored scores, and why.
    None when there is no champion or the challenger's run recorded no gate_rows."""
    current = champion_entry(task)
    if current is None or not gate_rows:
        return None
    tag, entry = current
    theirs = entry.get("gate_rows") or {}
    if theirs.get("valid_fingerprint") == gate_rows["valid_fingerprint"]:
        return ChampionScores(tag, None, "stored validation scores, from the same validation rows as the challenger's")
    labels_until = theirs.get("labels_until")
    if labels_until is None and labels_until_of is not None:
        import bentoml

        labels_until = labels_until_of(bentoml.models.get(tag).info.metadata.get("metrics", {}))
    first = gate_rows["valid_first_cutoff"]
    if labels_until is None or _instant(labels_until) > _instant(first):
        return ChampionScores(tag, None, f"{STORED_BASIS}: it was fitted on data up to {labels_until}, past the challenger's first "
                                         f"validation cutoff {first}, so those rows are not unseen by it")
    try:
        scores = rescore(model_path(tag))
    except (OSError, KeyError, ValueError) as exc:
        return ChampionScores(tag, None, f"{STORED_BASIS}: the champion could not be scored on the challenger's rows ({exc})")
    stored = entry.get("metrics", {}).get(main_metric)
    now = scores.get(main_metric)
    said = f"{main_metric} {now:.4f}" if isinstance(now, (int, float)) else main_metric
    was = f"; {stored:.4f} stored from its own run" if isinstance(stored, (int, float)) else ""
    return ChampionScores(tag, scores, f"re-scored on the challenger's validation rows ({said}{was})")


def with_reference_tolerance(task: str, scores: ChampionScores | None, selection: dict[str, Any] | None, challenger: str,
                             references: Sequence[str]) -> ChampionScores | None:
    """`scores` with a `tolerance` when the challenger is a reference that its run served under selection.rule
    beat_reference, and the registered champion is not a reference: k_se SEs of a learned model's lead over the best
    reference on the run's validation rows (`selection`: the run's choice, with k_se and se_of_lead), the noise
    within which the run itself serves the reference. Without it a learned champion ahead by that noise would keep
    the reference out at every retrain, though a fresh run would serve the reference. Otherwise `scores` unchanged."""
    rule = selection or {}
    se = rule.get("se_of_lead")
    if scores is None or rule.get("rule") != "beat_reference" or challenger not in references or not se:
        return scores
    entry = load_index()["tasks"].get(task, {}).get("models", {}).get(scores.tag)
    if entry is None or registered_is_reference(entry):
        return scores
    tolerance = float(rule["k_se"]) * float(se)
    return replace(scores, tolerance=tolerance, basis=(
        f"{scores.basis}; the challenger is the reference {challenger}: the learned champion stays only if it leads it by more "
        f"than {rule['k_se']:g} SE of a learned model's lead on these rows ({tolerance:.4f}; selection.rule beat_reference)"))


def registered_is_reference(entry: dict[str, Any]) -> bool:
    """Whether a registered model (its index entry) is one of its task's references: as its lineage says
    (`is_reference`, kept since registrations record it), else by family (a rule or a BTYD model)."""
    lineage = entry.get("lineage") or {}
    return bool(lineage["is_reference"]) if "is_reference" in lineage else entry.get("family") in ("rule", "btyd")


def _instant(value: str) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Registration:
    tag: str
    status: str  # champion | challenger (| retired for an unchanged model that was already retired)
    reason: str
    task: str = ""
    promoted: bool = False  # this call made `tag` the champion
    registered: bool = True  # False when the same model files were already registered (idempotent rerun)
    decision: GateDecision | None = field(default=None, compare=False)


def bentoml_home() -> Path:
    return Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")).expanduser()


def _index_path() -> Path:
    return bentoml_home() / INDEX_NAME


def _empty_index() -> dict[str, Any]:
    return {"tasks": {}}


def load_index() -> dict[str, Any]:
    path = _index_path()
    if not path.exists():
        return _empty_index()
    return json.loads(path.read_text())


def _save_index(index: dict[str, Any]) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registry-")
    with os.fdopen(fd, "w") as fh:
        json.dump(index, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written index


@contextmanager
def index_transaction() -> Iterator[dict[str, Any]]:
    """Lock the index, yield it for changes, save it atomically on a clean exit (an exception discards changes)."""
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
        index = load_index()
        yield index
        _save_index(index)


def _task_entry(index: dict[str, Any], task: str) -> dict[str, Any]:
    entry = index["tasks"].setdefault(task, {})
    entry.setdefault("champion", None)
    entry.setdefault("history", [])  # champions in the order they were promoted; rollback pops
    entry.setdefault("models", {})
    entry.setdefault("events", [])
    return entry


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def git_revision(cwd: Path | None = None) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def _dvc_lock_md5(path: Path, lock_path: Path) -> str | None:
    if not lock_path.exists():
        return None
    lock = yaml.safe_load(lock_path.read_text()) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []) or []:
            if Path(out.get("path", "")) == Path(path) and out.get("md5"):
                return str(out["md5"])
    return None


def _content_md5(path: Path) -> str | None:
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
    if not files:
        return None
    digest = hashlib.md5()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_hash(events_path: Path = Path("data/events.parquet"), lock_path: Path = Path("dvc.lock")) -> str:
    """The DVC md5 of the events file from dvc.lock, or the file's own md5 when the lock does not list it."""
    md5 = _dvc_lock_md5(events_path, lock_path)
    if md5:
        return f"dvc:{md5}"
    own = _content_md5(events_path)
    return f"md5:{own}" if own else "unknown"


def model_hash(model_dir: Path, lock_path: Path = Path("dvc.lock")) -> str | None:
    """The content hash of a model directory (the DVC md5 when dvc.lock lists it): same hash, same model."""
    md5 = _dvc_lock_md5(model_dir, lock_path)
    if md5:
        return f"dvc:{md5}"
    own = _content_md5(model_dir)
    return f"md5:{own}" if own else None


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def compare_to_champion(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    *,
    main_metric: str,
    min_improvement: float = 0.0,
    max_regression: float | None = None,
    guard_metrics: Sequence[str] | None = None,
    lower_is_better: Sequence[str] = DEFAULT_LOWER_IS_BETTER,
) -> GateDecision:
    """The gate: `main_metric` must improve by at least `min_improvement`, and no guard metric may get worse
    by more than `max_regression` (absolute; None = guards are reported but not enforced).

    Guard metrics default to every other numeric metric both models report. Metrics named in
    `lower_is_better` count a decrease as an improvement.
    """
    chal = _numeric(challenger)
    if main_metric not in chal:
        raise RegistryError(f"the challenger's metrics have no {main_metric!r} (has: {sorted(chal)}); fix registry.gate.metric")
    sign = {m: (-1.0 if m in lower_is_better else 1.0) for m in chal}
    if champion is None:
        rows = tuple(MetricComparison(m, "main" if m == main_metric else "guard", None, v, None, True) for m, v in chal.items())
        return GateDecision(True, "first model for this task", rows)
    champ = _numeric(champion)
    guards = [m for m in (guard_metrics if guard_metrics is not None else chal) if m != main_metric and m in chal and m in champ]

    rows: list[MetricComparison] = []
    main_imp = (chal[main_metric] - champ[main_metric]) * sign[main_metric] if main_metric in champ else math.inf
    main_ok = main_imp >= min_improvement - 1e-12
    rows.append(MetricComparison(main_metric, "main", champ.get(main_metric), chal[main_metric], None if math.isinf(main_imp) else main_imp, main_ok))
    regressions = []
    for m in guards:
        imp = (chal[m] - champ[m]) * sign[m]
        ok = max_regression is None or -imp <= max_regression + 1e-12
        if not ok:
            regressions.append(f"{m} worse by {-imp:.4f} > {max_regression}")
        rows.append(MetricComparison(m, "guard", champ[m], chal[m], imp, ok))

    if not main_ok:
        reason = f"{main_metric} {chal[main_metric]:.4f} vs champion {champ[main_metric]:.4f}: improvement {main_imp:+.4f} < {min_improvement}"
    elif regressions:
        reason = "regression beyond tolerance: " + "; ".join(regressions)
    else:
        reason = f"{main_metric} {chal[main_metric]:.4f} vs champion {champ.get(main_metric, float('nan')):.4f}: improvement {main_imp:+.4f} >= {min_improvement}"
    return GateDecision(main_ok and not regressions, reason, tuple(rows))


def champion_tag(task: str) -> str | None:
    return load_index()["tasks"].get(task, {}).get("champion")


def champion_entry(task: str) -> tuple[str, dict[str, Any]] | None:
    """(tag, index entry) of the task's champion, or None."""
    entry = load_index()["tasks"].get(task, {})
    tag = entry.get("champion")
    return (tag, entry["models"][tag]) if tag else None


def model_path(tag: str) -> Path:
    """A registered version's directory in the BentoML store."""
    import bentoml

    return Path(bentoml.models.get(tag).path)


def _reference_frame(reference: "pd.DataFrame | Path | str") -> "pd.DataFrame":
    import pandas as pd

    return reference if isinstance(reference, pd.DataFrame) else pd.read_parquet(reference)


def register_model(
    task: str,
    model_dir: Path,
    metrics: dict[str, Any],
    params: dict[str, Any],
    *,
    main_metric: str,
    model_key: str,
    min_improvement: float = 0.0,
    lineage: dict[str, Any] | None = None,
    gate: "GateParams | None" = None,
    reference: "pd.DataFrame | Path | str | None" = None,
    promote: bool = True,
    split: str = "valid",
    framework: str = "keras",
    score_champion: Callable[[], ChampionScores | None] | None = None,
    gate_rows: dict[str, Any] | None = None,
) -> Registration:
    """Copy model_dir into the BentoML store as `<task>:<version>` with metrics and lineage in its metadata.

    The new model becomes the champion when there is none, or when it passes the gate against the current
    champion (`gate` from params.yaml when given, else `min_improvement` on `main_metric` alone); otherwise it
    stays a challenger. The gate compares the models' `split` metrics (validation: the test split is reported,
    never used to choose, so repeated runs do not select on it); the test score is kept as the honest estimate
    that monitoring compares live quality with. `score_champion()` (called only when these files are not registered
    yet: it may load the champion) can replace the champion's stored scores with its scores on the challenger's
    validation rows (see ChampionScores); `gate_rows` (which validation rows, which
    labels the model was fitted on) is kept in the index for the next challenger's task to decide that. `reference` (a DataFrame or Parquet path: the features the model was trained on) is
    stored inside the model directory as `reference.parquet` for drift monitoring. Registering the same model
    files again is a no-op that returns the existing version. `promote=False` registers without promoting.
    """
    import bentoml

    if split not in metrics or model_key not in metrics[split]:
        raise RegistryError(f"the {task} metrics have no {split!r} scores for {model_key!r} (has: {sorted(metrics.get(split, {}))}); "
                            f"rerun the task's train and evaluate stages (`dvc repro`) so they write validation metrics")
    challenger_metrics = metrics[split][model_key]
    score = float(challenger_metrics[main_metric])
    test_metrics = metrics.get("test", {}).get(model_key, {})
    test_score = test_metrics.get(main_metric) if isinstance(test_metrics, dict) else None
    digest = model_hash(Path(model_dir))
    existing = _find_by_model_hash(task, digest)
    if existing is not None:
        tag, info = existing
        return Registration(tag, info["status"], "unchanged: these model files are already registered", task, registered=False)
    rescored = score_champion() if score_champion is not None else None

    mtimes = [p.stat().st_mtime for p in Path(model_dir).rglob("*") if p.is_file()]
    lineage = {
        "git_revision": git_revision(),
        "data_hash": data_hash(),
        "model_hash": digest,
        "trained_at": datetime.fromtimestamp(max(mtimes), timezone.utc).isoformat() if mtimes else None,
        "registered_at": _now(),
        "params_md5": hashlib.md5(json.dumps(_jsonable(params), sort_keys=True).encode()).hexdigest(),
        **(lineage or {}),
    }
    frame = _reference_frame(reference) if reference is not None else None
    if frame is not None:
        lineage["reference_dataset"] = {"file": REFERENCE_FILE, "rows": int(len(frame)), "columns": [str(c) for c in frame.columns]}
    metadata = {"task": task, "main_metric": main_metric, "score": score, "metrics": metrics, "params": params, "lineage": lineage}
    with bentoml.models.create(task, labels={"task": task, "framework": framework}, metadata=_metadata(_jsonable(metadata))) as bento_model:
        for item in Path(model_dir).iterdir():
            target = Path(bento_model.path) / item.name
            shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
        if frame is not None:
            # BentoML moves the directory into the store only when this block succeeds: no half-written model.
            frame.to_parquet(Path(bento_model.path) / REFERENCE_FILE, index=False)
    tag = str(bento_model.tag)

    if gate is not None:
        gate_args = {
            "min_improvement": gate.min_improvement,
            "max_regression": gate.max_regression,
            "guard_metrics": gate.guard_metrics,
            "lower_is_better": gate.lower_is_better,
        }
    else:
        gate_args = {"min_improvement": min_improvement}
    with index_transaction() as index:
        entry = _task_entry(index, task)
        current = entry["champion"]
        champion_metrics = entry["models"].get(current, {}).get("metrics") if current else None
        if current and champion_metrics is None:  # an index written before metrics were kept in it
            champion_metrics = {main_metric: entry["models"][current]["score"]}
        basis = ""
        if current:
            basis = STORED_BASIS
            if rescored is not None and rescored.tag == current:
                basis = rescored.basis
                champion_metrics = rescored.metrics if rescored.metrics is not None else champion_metrics
                gate_args["min_improvement"] -= max(rescored.tolerance, 0.0)
        decision = replace(compare_to_champion(challenger_metrics, champion_metrics, main_metric=main_metric, **gate_args), basis=basis)
        entry["models"][tag] = {
            "status": CHALLENGER,
            "score": score,
            "main_metric": main_metric,
            "gate_split": split,
            "test_score": float(test_score) if isinstance(test_score, (int, float)) and math.isfinite(float(test_score)) else None,
            "family": framework,
            "metrics": _jsonable(_numeric(challenger_metrics)),
            "registered_at": lineage["registered_at"],
            "lineage": _jsonable({k: v for k, v in lineage.items() if k != "reference_dataset"} | {"has_reference": reference is not None}),
            "gate": decision.reason,
            "gate_basis": basis,
            "gate_rows": _jsonable(gate_rows) if gate_rows else None,
        }
        _log(entry, "register", tag, decision.reason)
        promoted = decision.passed and promote
        if promoted:
            _make_champion(entry, tag, f"gate passed: {decision.reason}")
    status = CHAMPION if promoted else CHALLENGER
    reason = decision.reason if decision.passed or not promote else f"rejected: {decision.reason}"
    if decision.passed and not promote:
        reason = f"passed the gate but not promoted (promote=False): {decision.reason}"
    if decision.basis:
        reason = f"{reason} (champion: {decision.basis})"
    return Registration(tag, status, reason, task, promoted=promoted, decision=decision)


def _find_by_model_hash(task: str, digest: str | None) -> tuple[str, dict[str, Any]] | None:
    if not digest:
        return None
    for tag, info in load_index()["tasks"].get(task, {}).get("models", {}).items():
        if info.get("lineage", {}).get("model_hash") == digest:
            return tag, info
    return None


def _log(entry: dict[str, Any], action: str, tag: str, reason: str) -> None:
    entry["events"].append({"at": _now(), "action": action, "tag": tag, "reason": reason})


def _make_champion(entry: dict[str, Any], tag: str, reason: str) -> None:
    current = entry["champion"]
    if current and current != tag:
        entry["models"][current]["status"] = RETIRED
    entry["models"][tag]["status"] = CHAMPION
    entry["champion"] = tag
    if tag in entry["history"]:
        entry["history"].remove(tag)
    entry["history"].append(tag)
    _log(entry, "promote", tag, reason)


def _task_of(tag: str) -> str:
    if ":" not in tag:
        raise RegistryError(f"{tag!r} is not a model tag; use <task>:<version> as shown by `shopsight models list`")
    return tag.split(":", 1)[0]


def promote(tag: str, reason: str = "manual promotion") -> str:
    """Make a registered version the champion of its task (the previous champion is retired); return the old champion."""
    task = _task_of(tag)
    with index_transaction() as index:
        entry = index["tasks"].get(task)
        if not entry or tag not in entry.get("models", {}):
            known = sorted(entry["models"]) if entry else []
            raise RegistryError(f"{tag} is not registered (task {task!r} has: {known or 'nothing'}); see `shopsight models list`")
        entry = _task_entry(index, task)
        previous = entry["champion"]
        _make_champion(entry, tag, reason)
    return previous


def rollback(task: str, reason: str = "manual rollback") -> str:
    """Retire the current champion and reinstate the one before it; return the reinstated tag."""
    with index_transaction() as index:
        if task not in index["tasks"]:
            raise RegistryError(f"no models registered for task {task!r} (known: {sorted(index['tasks']) or 'none'})")
        entry = _task_entry(index, task)
        history = entry["history"]
        if len(history) < 2:
            raise RegistryError(f"{task}: no previous champion to roll back to (champion history: {history or 'empty'})")
        current = history.pop()
        entry["models"][current]["status"] = RETIRED
        previous = history[-1]
        entry["models"][previous]["status"] = CHAMPION
        entry["champion"] = previous
        _log(entry, "rollback", previous, f"{reason}: replaces {current}")
    return previous


def list_models(task: str | None = None) -> list[dict[str, Any]]:
    """Every registered version with its status, score, metrics and lineage, newest first."""
    rows = []
    for name, entry in load_index()["tasks"].items():
        if task and name != task:
            continue
        for tag, info in entry["models"].items():
            rows.append({"task": name, "tag": tag, **info})
    return sorted(rows, key=lambda r: r["registered_at"], reverse=True)


def reference_path(task_or_tag: str) -> Path:
    """The reference features (Parquet) stored with a model: `<task>` means its champion."""
    import bentoml

    tag = task_or_tag if ":" in task_or_tag else champion_tag(task_or_tag)
    if tag is None:
        raise RegistryError(f"task {task_or_tag!r} has no champion; register a model first")
    path = Path(bentoml.models.get(tag).path) / REFERENCE_FILE
    if not path.exists():
        raise RegistryError(f"{tag} was registered without a reference dataset ({REFERENCE_FILE})")
    return path


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _metadata(value: Any) -> Any:
    """JSON-able and without nulls (BentoML's model metadata accepts basic types only): a null entry is left out."""
    if isinstance(value, dict):
        return {k: _metadata(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_metadata(v) for v in value if v is not None]
    return value
