"""A large shop on one machine: wall time and peak RSS of every pipeline stage at several event counts.

    python bench/bench_scale.py --events 10M,30M,100M [--out /tmp/bench-scale] [--stage-timeout 3600]
    python bench/bench_scale.py --events 1M,3M           # quick

For each size, a scratch project (a `git clone` of this repository under /tmp, never the repository itself)
is sized so the simulator writes about that many events: the shop keeps its shape (catalogue, days, activity
per user, params.yaml data.synthetic) and only the population (n_users) grows, from a small pilot's events per
user. Then every stage runs as a user would run it, each in its own process under `/usr/bin/time` (wall time
and the peak RSS of that process, i.e. ru_maxrss of it and its waited-for children):

  simulate          the simulator alone (shopsight.simulator.generate_shop, the pipeline's params)
  ingest            `python -m shopsight ingest` (synthetic source: simulates again, then validates and writes;
                    `ingest_only` in the table is ingest minus simulate)
  features          `python -m shopsight features`
  churn_features    `python -m shopsight churn-features`
  sequences         `python -m shopsight sequences`
  train_propensity  `python -m shopsight train propensity`  ONE epoch: mlp.epochs 1, lightgbm 100 rounds
  train_churn       `python -m shopsight train churn`       (every candidate of the task still fitted)
  audiences         `python -m shopsight audiences --from-artifacts` (every user active in the look-back)
  weekly_report     monitoring.weekly.run_weekly_monitoring on the last complete week (the feature reference is
                    data/features/propensity.parquet, no prediction log: user features + event mix)
  train_demand      `python -m shopsight train demand`       demand.model.epochs 1 (every candidate fitted)
  train_recommender `python -m shopsight train recommender`  recommender.epochs 1 (last: the longest stage)

Printed: one table stage x size -> seconds and peak RSS, the growth exponent per stage
log(t_big / t_small) / log(n_big / n_small) between consecutive sizes and overall, training seconds per 1M
training examples, and "target met"/"not met" (issue 17: exponent <= 1.1 and peak RSS < 16 GiB for every
stage). The table is rewritten as JSON + CSV under --out after every stage (a killed run still reports) and
plotted (time and RSS against events, log-log) as scale.png. No timing is asserted anywhere: this is a bench.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from shopsight.config import deep_update

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
RSS_LIMIT_GIB = 16.0
EXPONENT_LIMIT = 1.1
PILOT_USERS = 2_000
PROJECT_TO = 100_000_000  # the target size, for the projections printed with the table

# The smallest honest training setting: one pass over the data per model (LightGBM: 100 boosting rounds).
SCALE_PARAMS = {
    "propensity": {"mlp": {"epochs": 1}, "lightgbm": {"num_boost_round": 100, "early_stopping_rounds": 100}},
    "churn": {"mlp": {"epochs": 1}, "lightgbm": {"num_boost_round": 100, "early_stopping_rounds": 100}},
    "recommender": {"epochs": 1, "patience": 1},
    "demand": {"model": {"epochs": 1, "patience": 1}},
}

SIMULATE = (
    "import json, sys, time, shutil; from shopsight.config import load_params; "
    "from shopsight.ingest import simulator_params_for_pipeline; from shopsight.simulator import generate_shop; "
    "p = load_params('params.yaml'); t = time.perf_counter(); "
    "r = generate_shop(simulator_params_for_pipeline(p), 'scale_sim'); "
    "print(json.dumps({'n_events': r.n_events, 'n_users': r.n_users, 'seconds': time.perf_counter() - t})); "
    "shutil.rmtree('scale_sim')"
)
WEEKLY = (
    "import json; from pathlib import Path; from shopsight.config import load_params; "
    "from monitoring.weekly import run_weekly_monitoring; "
    "r = run_weekly_monitoring(load_params('params.yaml'), Path('.'), reference_path=Path('data/features/propensity.parquet'), "
    "out_root=Path('scale_reports')); print(json.dumps({'week': r.week, 'retrain': r.decision.retrain}))"
)

STAGES: list[tuple[str, list[str]]] = [
    ("simulate", [PY, "-c", SIMULATE]),
    ("ingest", [PY, "-m", "shopsight", "ingest"]),
    ("features", [PY, "-m", "shopsight", "features"]),
    ("churn_features", [PY, "-m", "shopsight", "churn-features"]),
    ("sequences", [PY, "-m", "shopsight", "sequences"]),
    ("train_propensity", [PY, "-m", "shopsight", "train", "propensity"]),
    ("train_churn", [PY, "-m", "shopsight", "train", "churn"]),
    ("audiences", [PY, "-m", "shopsight", "audiences", "--from-artifacts"]),
    ("weekly_report", [PY, "-c", WEEKLY]),
    ("train_demand", [PY, "-m", "shopsight", "train", "demand"]),
    ("train_recommender", [PY, "-m", "shopsight", "train", "recommender"]),  # the longest: last, so a timeout loses nothing else
]
TRAIN_STAGES = ("train_propensity", "train_churn", "train_recommender", "train_demand")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmM]?)\s*", text)
    if not m:
        raise SystemExit(f"--events: cannot read {text!r}; use e.g. 1M,3M,10M or 300k")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6}[m.group(2)])


def label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 10**6 else f"{n / 1e3:g}k"


def events_per_user(params: dict) -> float:
    """Events per initial user of the configured shop, from a small pilot (events grow linearly with users)."""
    sys.path.insert(0, str(REPO))
    from shopsight.simulator import SimulatorParams, generate_shop

    sim = dict(params["data"].get("synthetic") or {})
    sim["n_users"] = PILOT_USERS
    with tempfile.TemporaryDirectory(prefix="bench_scale_pilot_") as tmp:
        result = generate_shop(SimulatorParams(**sim), Path(tmp), progress=False)
    return result.n_events / PILOT_USERS


def make_project(dest: Path, n_users: int, overlay: list[str], overrides: dict | None = None, reuse: bool = False) -> bool:
    """A clone of the repository's HEAD (plus the working-tree files in `overlay`) with the scaled params
    (`reuse`: keep an existing project's data, its tracked files brought to HEAD, for a rerun of some stages).
    Returns whether an existing one was reused."""
    reused = reuse and (dest / "params.yaml").exists()
    if not reused:
        if dest.exists():
            shutil.rmtree(dest)
        subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    else:  # the data stays, the code becomes HEAD's (a kept project would otherwise run the code it was made with)
        subprocess.run(["git", "-C", str(dest), "fetch", "-q", str(REPO), "HEAD"], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "-q", "FETCH_HEAD", "--", "."], check=True)
    for rel in overlay:  # e.g. a fix under test, measured before it is committed
        shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    deep_update(params, SCALE_PARAMS)
    deep_update(params, overrides or {})
    params["data"]["source"] = "synthetic"
    params["data"].setdefault("synthetic", {})["n_users"] = int(n_users)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return reused


def run_stage(cmd: list[str], cwd: Path, log: Path, timeout: int) -> dict:
    timing = log.with_suffix(".time")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("BENTOML_HOME", str(cwd / ".bentoml"))
    env.setdefault("PREFECT_HOME", str(cwd / ".prefect"))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S", "-o", str(timing), *cmd], cwd=cwd, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    rss_gib = cpu = None
    try:
        _, kib, user, system = timing.read_text().split()[-4:]
        rss_gib, cpu = int(kib) / 2**20, float(user) + float(system)
    except (OSError, ValueError):
        pass
    return {"rc": rc, "seconds": round(wall, 2), "cpu_seconds": None if cpu is None else round(cpu, 2),
            "peak_rss_gib": None if rss_gib is None else round(rss_gib, 3)}


def last_json(text: str) -> dict | None:
    """The last JSON object printed by a stage (rich's print_json pretty-prints over several lines)."""
    start = text.rfind("\n{")
    for pos in ([start + 1] if start >= 0 else []) + [0]:
        chunk = text[pos:]
        try:
            return json.loads(chunk[: chunk.rfind("}") + 1])
        except ValueError:
            continue
    return None


def training_examples(stage: str, outputs: dict) -> int | None:
    """Training rows of a task, from the stage outputs that built its data."""
    if stage == "train_propensity":
        return ((outputs.get("features") or {}).get("train") or {}).get("rows")
    if stage == "train_churn":
        return ((outputs.get("churn_features") or {}).get("train") or {}).get("rows")
    if stage == "train_recommender":
        return (outputs.get("sequences") or {}).get("train_targets")
    if stage == "train_demand":  # the Keras family's sliding windows (the other families fit each series)
        return next((c.get("train_windows") for c in _walk(outputs.get("train_demand")) if "train_windows" in c), None)
    return None


def _walk(obj):
    """Every dict nested in a JSON value."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def exponent(t0: float | None, t1: float | None, n0: int, n1: int) -> float | None:
    if not t0 or not t1 or n1 == n0:
        return None
    return math.log(t1 / t0) / math.log(n1 / n0)


def summarise(results: dict) -> dict:
    """Exponents and the verdict from results[size_label] = {"n_events", "stages": {stage: {...}}}."""
    sizes = sorted(results.values(), key=lambda r: r["n_events"])
    names = [s for s, _ in STAGES] + ["ingest_only"]
    rows = {}
    for name in names:
        pts = [(r["n_events"], r["stages"][name]) for r in sizes if name in r["stages"] and r["stages"][name].get("rc") == 0]
        steps = [exponent(a[1]["seconds"], b[1]["seconds"], a[0], b[0]) for a, b in zip(pts, pts[1:])]
        overall = exponent(pts[0][1]["seconds"], pts[-1][1]["seconds"], pts[0][0], pts[-1][0]) if len(pts) > 1 else None
        cpu = [(n, st.get("cpu_seconds")) for n, st in pts]
        cpu_overall = exponent(cpu[0][1], cpu[-1][1], cpu[0][0], cpu[-1][0]) if len(cpu) > 1 else None
        rss = [p[1].get("peak_rss_gib") or 0 for p in pts]
        failed = [r["label"] for r in sizes if name in r["stages"] and r["stages"][name].get("rc") != 0]
        flags = []
        # the verdict on CPU seconds where every size has them (wall time on a shared machine measures the
        # neighbours too), else on wall time
        cpu_steps = [exponent(a[1], b[1], a[0], b[0]) for a, b in zip(cpu, cpu[1:])] if all(c for _, c in cpu) else None
        basis = (cpu_steps + [cpu_overall]) if cpu_steps is not None else (steps + [overall])
        if any(e is not None and e > EXPONENT_LIMIT for e in basis):
            flags.append("superlinear" + ("(cpu)" if cpu_steps is not None else "(wall)"))
        if rss and max(rss) > RSS_LIMIT_GIB:
            flags.append("rss>16GiB")
        if failed:
            flags.append("failed@" + ",".join(failed))
        proj_s = proj_rss = None
        if len(pts) > 1:  # 100M events: time at the last measured exponent, RSS on the line through the last two sizes
            (n0, a), (n1, b) = pts[-2], pts[-1]
            last_cpu = cpu_steps[-1] if cpu_steps else None  # CPU exponent where measured: wall time has the neighbours in it
            e = last_cpu if last_cpu is not None else (steps[-1] if steps[-1] is not None else 1.0)
            proj_s = b["seconds"] * (PROJECT_TO / n1) ** e
            if a.get("peak_rss_gib") and b.get("peak_rss_gib"):
                slope = (b["peak_rss_gib"] - a["peak_rss_gib"]) / (n1 - n0)
                proj_rss = b["peak_rss_gib"] + max(slope, 0.0) * (PROJECT_TO - n1)
        if proj_rss is not None and proj_rss > RSS_LIMIT_GIB and "rss>16GiB" not in flags:
            flags.append("rss@100M>16GiB")
        rows[name] = {"exponents": steps, "overall": overall, "cpu_exponents": cpu_steps, "cpu_overall": cpu_overall, "flags": flags,
                      "projected_100M_seconds": proj_s, "projected_100M_rss_gib": proj_rss}
    met = all(not r["flags"] for r in rows.values())
    return {"stages": rows, "target_met": met}


def write_outputs(out: Path, results: dict, command: str) -> dict:
    summary = summarise(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"command": command, "results": results, "summary": summary}, indent=1))
    with open(out / "scale.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "size", "n_events", "seconds", "cpu_seconds", "peak_rss_gib", "rc", "train_examples", "seconds_per_1M_examples"])
        for r in sorted(results.values(), key=lambda r: r["n_events"]):
            for stage, s in r["stages"].items():
                w.writerow([stage, r["label"], r["n_events"], s.get("seconds"), s.get("cpu_seconds"), s.get("peak_rss_gib"), s.get("rc"),
                            s.get("train_examples"), s.get("seconds_per_1M_examples")])
    try:
        plot(out / "scale.png", results)
    except Exception as exc:  # a plot is a convenience: never lose the table for it
        print(f"(plot not written: {exc})")
    return summary


def plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results.values(), key=lambda r: r["n_events"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for name, _ in STAGES:
        pts = [(r["n_events"], r["stages"][name]) for r in sizes if r["stages"].get(name, {}).get("rc") == 0]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1]["seconds"] for p in pts], marker="o", label=name)
        axes[1].plot(xs, [p[1]["peak_rss_gib"] or float("nan") for p in pts], marker="o", label=name)
    for ax, ylabel in zip(axes, ("seconds", "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].axhline(RSS_LIMIT_GIB, color="red", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=7)
    fig.suptitle("shopsight stages against events (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results: dict, summary: dict) -> None:
    sizes = sorted(results.values(), key=lambda r: r["n_events"])
    head = f"{'stage':<18}" + "".join(f"{r['label'] + ' s':>10}{'cpu s':>8}{'GiB':>7}" for r in sizes)
    head += "  exponent wall [consecutive; overall]  cpu [..]  @100M s, GiB  flags"
    print(head)
    print("-" * len(head))
    for name in [s for s, _ in STAGES] + ["ingest_only"]:
        line = f"{name:<18}"
        for r in sizes:
            s = r["stages"].get(name)
            if s is None:
                line += f"{'-':>10}{'-':>8}{'-':>7}"
            elif s.get("rc") != 0:
                line += f"{'rc=' + str(s.get('rc')):>10}{'-':>8}{'-':>7}"
            else:
                rss = s.get("peak_rss_gib")
                cpu_s = s.get("cpu_seconds")
                line += f"{s['seconds']:>10.1f}{('-' if cpu_s is None else f'{cpu_s:.1f}'):>8}{('-' if rss is None else f'{rss:.2f}'):>7}"
        row = summary["stages"][name]
        exps = ", ".join("-" if e is None else f"{e:.2f}" for e in row["exponents"])
        overall = "-" if row["overall"] is None else f"{row['overall']:.2f}"
        cpu = "-" if row["cpu_overall"] is None else f"[{', '.join('-' if e is None else f'{e:.2f}' for e in row['cpu_exponents'] or [])}; {row['cpu_overall']:.2f}]"
        ps, pr = row.get("projected_100M_seconds"), row.get("projected_100M_rss_gib")
        proj = f"{'-' if ps is None else f'{ps:,.0f}'}, {'-' if pr is None else f'{pr:.1f}'}"
        line += f"  [{exps}; {overall}] {cpu}  {proj}  {' '.join(row['flags']) or 'ok'}"
        print(line)
    print()
    for r in sizes:
        parts = []
        for stage in TRAIN_STAGES:
            s = r["stages"].get(stage) or {}
            if s.get("seconds_per_1M_examples") is not None:
                parts.append(f"{stage[6:]} {s['seconds_per_1M_examples']:.1f} s/1M ({s['train_examples']:,} ex)")
            if s.get("seconds_per_epoch"):
                parts.append(f"{stage[6:]} s/epoch " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds_per_epoch"].items()))
        print(f"{r['label']} ({r['n_events']:,} events, {r['n_users']:,} users): " + "; ".join(parts))
    print()
    print("target met" if summary["target_met"] else "not met", f"(every stage: exponent <= {EXPONENT_LIMIT} (on CPU seconds where "
          f"every size has them, else wall), peak RSS < {RSS_LIMIT_GIB:g} GiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", default="10M,30M,100M", help="comma-separated event counts, e.g. 1M,3M")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    ap.add_argument("--work", type=Path, default=None, help="scratch projects' parent (default: <out>/projects)")
    ap.add_argument("--stage-timeout", type=int, default=3600, help="seconds before a stage is killed")
    ap.add_argument("--stages", default=None, help="comma-separated subset of stages; an existing --keep project of that size is reused (its data; its code becomes HEAD's)")
    ap.add_argument("--keep", action="store_true", help="keep each scratch project (data, artifacts) after its size (a reused one is always kept)")
    ap.add_argument("--overlay", default="", help="comma-separated repository files copied from the working tree over the clone")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                    help="override a scratch param, e.g. --set recommender.models=[gru] (repeatable)")
    ap.add_argument("--resume", action="store_true", help="add to <out>/scale.json instead of starting a new table")
    ap.add_argument("--merge", default=None, metavar="JSON,JSON",
                    help="run nothing: combine earlier runs' scale.json files into one table under --out")
    args = ap.parse_args()
    if args.merge:
        results = {}
        for path in args.merge.split(","):  # stage by stage: a later file's stage replaces an earlier one's
            for name, entry in json.loads(Path(path).read_text())["results"].items():
                into = results.setdefault(name, {**entry, "stages": {}})
                into["stages"].update(entry["stages"])
                into["n_events"] = entry["n_events"]
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        print_table(results, write_outputs(args.out, results, command))
        for r in sorted(results.values(), key=lambda r: r["n_events"]):
            if r.get("overrides"):
                print(f"{r['label']} ran with {r['overrides']}")
        return
    sizes = [parse_size(s) for s in args.events.split(",") if s.strip()]
    wanted = [s for s, _ in STAGES] if args.stages is None else args.stages.split(",")
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    work = args.work or args.out / "projects"
    results: dict = {}
    if args.resume and (args.out / "scale.json").exists():
        results = json.loads((args.out / "scale.json").read_text())["results"]

    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    per_user = events_per_user(base)
    print(f"pilot: {per_user:.1f} events per user ({PILOT_USERS} users, data.synthetic otherwise as params.yaml)")
    for target in sizes:
        name = label(target)
        n_users = max(100, round(target / per_user))
        project = work / f"shop-{name}"
        reused = make_project(project, n_users, [p for p in args.overlay.split(",") if p], overrides, reuse=args.stages is not None)
        entry = results.setdefault(name, {"label": name, "n_events": target, "n_users": n_users, "stages": {}})
        entry["overrides"] = overrides
        print(f"\n== {name}: n_users={n_users:,} in {project}", flush=True)
        outputs: dict = {}
        for stage, cmd in STAGES:
            if stage not in wanted:
                continue
            res = run_stage(cmd, project, project / f"scale_{stage}.log", args.stage_timeout)
            text = (project / f"scale_{stage}.log").read_text(errors="replace")
            outputs[stage] = last_json(text)
            if stage == "simulate" and outputs[stage]:
                entry["n_events"] = outputs[stage]["n_events"]
            if stage in TRAIN_STAGES:
                n = training_examples(stage, outputs)
                if n:
                    res["train_examples"] = int(n)
                    res["seconds_per_1M_examples"] = round(res["seconds"] / (n / 1e6), 2)
                if stage == "train_demand":
                    res["seconds_per_epoch"] = {c.get("family", "keras"): c["epoch_s"] for c in _walk(outputs[stage]) if "epoch_s" in c}
                if stage == "train_recommender" and outputs[stage]:
                    res["seconds_per_epoch"] = {m: round(v.get("seconds_per_epoch") or 0, 2) for m, v in
                                                (outputs[stage].get("models") or {}).items() if isinstance(v, dict)}
            fits = re.findall(r"(\w+) \((\w+)\) validation [\w-]+ [\d.]+ in ([\d.]+)s", text)
            if fits:  # the user tasks log each candidate's fit: the MLP's is its one epoch
                res["candidate_seconds"] = {name: float(sec) for name, _, sec in fits}
            if res["rc"] != 0:
                res["log_tail"] = text[-1500:]
            entry["stages"][stage] = res
            sim, ing = entry["stages"].get("simulate"), entry["stages"].get("ingest")
            if stage == "ingest" and sim and ing and sim["rc"] == 0 and ing["rc"] == 0:
                entry["stages"]["ingest_only"] = {"rc": 0, "seconds": round(max(ing["seconds"] - sim["seconds"], 0.01), 2),
                                                  "cpu_seconds": round(max((ing["cpu_seconds"] or 0) - (sim["cpu_seconds"] or 0), 0.01), 2),
                                                  "peak_rss_gib": ing["peak_rss_gib"]}
            print(f"  {stage:<18} rc={res['rc']} {res['seconds']:8.1f} s (cpu {res['cpu_seconds']}) peak RSS "
                  f"{res['peak_rss_gib'] if res['peak_rss_gib'] is not None else '-'} GiB", flush=True)
            if res["rc"] != 0:
                print("    " + res["log_tail"][-600:].replace("\n", "\n    "))
            write_outputs(args.out, results, command)
        if not args.keep and not reused:  # a kept project that a rerun of some stages reused stays kept
            shutil.rmtree(project, ignore_errors=True)
    summary = write_outputs(args.out, results, command)
    print(f"\ncommand: {command}\n")
    print_table(results, summary)
    print(f"\nwritten: {args.out / 'scale.json'}, {args.out / 'scale.csv'}, {args.out / 'scale.png'}")


if __name__ == "__main__":
    main()
