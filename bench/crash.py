"""The crash harness: kill a small `nxkit run` at many chosen writes, resume it, and check that nothing was lost.

    .venv/bin/python bench/crash.py [--points 30] [--seed 0] [--parallel 2]

A small run (SmolLM2 layer 0 over 4,096 tokens of fortunes; 4 neurons, both sides; explanation, simulation,
detection, the shuffled control and one round of revision against a loopback OpenAI-compatible server that answers
like a real one; table compaction and the report) is first run uninterrupted, listing every write it makes (the
census: every file renamed into place, before and after the rename, every journal append and its middle, every
pending marker removed). Then, for each of `--points` kill points drawn with `--seed` across the stages, a fresh run
kills itself (SIGKILL, no clean-up) at that write (`NXKIT_CRASH_AT`), is resumed with the same command, and its
final files are compared with the uninterrupted run's: every neuron's summary, explanation file and revision file,
the run table and the collection, leaving out what says how long or how many requests (which a resumed run spends
differently). The last line printed is JSON: points tried, per stage, identical resumes, requests re-sent after a
resume (the work of the neurons in flight at the kill; LLM answers are cached in batches), anything lost.

Collection points are taken on a run from scratch; the others on runs that start from a copy of the uninterrupted
run's finished collection (the same files), so that each kill costs seconds, not a collection.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARYING = {
    "seconds", "usage", "requests", "prompt_tokens", "completion_tokens", "cache_hits", "retries", "malformed",
    "reused_prompt_tokens", "pipeline_seconds", "elapsed", "created", "started", "finished", "base_url", "run_dir",
    "endpoints",
}  # fmt: skip
"""Fields that say how long, how much traffic or where (the run folder, the loopback port), not what was found."""


def command(run_dir: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "nxkit.cli", "run", "--run-dir", str(run_dir), "--explainer", "loopback",
            "--base-url", url, "--corpus", "fortunes", "--max-tokens", "4096", "--collect.layers", "0",
            "--collect.top-k", "8", "--collect.n-random", "6", "--collect.no-compile", "--neurons", "0:3", "0:11",
            "0:42", "0:77", "--explain.best-of", "2", "--explain.explain-windows", "2", "--explain.valid-windows", "2",
            "--explain.calibration-windows", "2", "--explain.sim-window-tokens", "16", "--revise.rounds", "1",
            "--sign", "both", "--no-progress"]  # fmt: skip


def child(run_dir: Path, url: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One `nxkit run` in a process of its own; its output goes to a file beside the run (a pipe would wait for any
    process the child started, and a killed child's are the point)."""
    full = {**os.environ, "OPENAI_API_KEY": "local", "NXKIT_LLM_CACHE": str(run_dir.parent / "llm-cache"), **env}
    if "NXKIT_CRASH_AT" not in env:
        full.pop("NXKIT_CRASH_AT", None)
    log = run_dir.parent / f"{run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as out:
        done = subprocess.run(command(run_dir, url), env=full, stdout=out, stderr=out, cwd=ROOT, timeout=900)
    return subprocess.CompletedProcess(done.args, done.returncode, "", log.read_text(encoding="utf-8"))


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VARYING}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def outcome(run_dir: Path) -> dict[str, object]:
    """What a finished run holds, file by file, without the fields that say how long or how many requests."""
    import numpy as np
    import pandas as pd

    out: dict[str, object] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = str(path.relative_to(run_dir))
        if not path.is_file() or rel.startswith(".") or "/." in rel or rel.endswith((".lock", "report.html")):
            continue
        if path.suffix == ".json":
            out[rel] = _strip(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            out[rel] = [_strip(json.loads(line)) for line in path.read_text().splitlines() if line]
        elif path.suffix == ".npy":
            out[rel] = np.load(path).tobytes().hex()[:64] + str(np.load(path).sum())
        elif path.suffix == ".parquet":
            df = pd.read_parquet(path).drop(columns=[c for c in VARYING if c in pd.read_parquet(path).columns])
            out[rel] = df.sort_values(["layer", "neuron"]).to_json(orient="records")
        elif path.suffix == ".pt" or "pending" in rel:
            out[rel] = "present"
    out.pop("activations/checkpoint.pt", None)
    return out


def census(run_dir: Path, url: str, start_from: Path | None) -> list[tuple[int, str, str, str]]:
    """Run uninterrupted (from a copy of `start_from`'s collection when given), listing every write."""
    if start_from is not None:
        shutil.copytree(start_from / "activations", run_dir / "activations")
    listing = run_dir.parent / f"{run_dir.name}.census"
    done = child(run_dir, url, {"NXKIT_CRASH_CENSUS": str(listing)})
    if done.returncode:
        raise SystemExit(f"the uninterrupted run failed:\n{done.stderr[-3000:]}")
    points = []
    for line in listing.read_text().splitlines():
        n, stage, what, path = line.split("\t")
        points.append((int(n), stage or "start", what, path))
    return points


def _finished(run_dir: Path) -> set[str]:
    """The work a killed run had finished, per side: neurons explained (explanation file and summary written, no
    pending marker) and neurons revised (revision file written, no pending marker)."""
    out = set()
    for side in (run_dir, run_dir / "negative"):
        for kind in ("explanations", "revisions"):
            for path in (side / kind).glob("*/*.json*"):
                layer, neuron = path.parent.name, path.name.split(".")[0]
                summary = side / "neurons" / layer / f"{neuron}.json"
                if summary.exists() and not (side / "pending" / f"{layer}.{neuron}").exists():
                    out.add(str(path.relative_to(run_dir)))
    return out


def _redone(run_dir: Path, listing: Path) -> set[str]:
    """The work a resumed run did: explanation files written while explaining, and revision files (a control
    rewrites a summary without redoing the explanation, so summaries do not count)."""
    out = set()
    for line in listing.read_text().splitlines() if listing.exists() else []:
        _, _, what, path = line.split("\t")
        rel = Path(path).relative_to(run_dir) if path.startswith(str(run_dir)) else None
        if (
            what == "after-rename"
            and rel is not None
            and len(rel.parts) >= 3
            and rel.parts[-3] in ("explanations", "revisions")
        ):
            out.add(str(rel))
    return out


def one_case(work: Path, case: int, point: int, start_from: Path | None, reference: dict) -> dict:
    from nxkit.llm.loopback import LoopbackServer

    run_dir = work / f"case-{case}" / "run"
    run_dir.parent.mkdir(parents=True)
    if start_from is not None:
        shutil.copytree(start_from / "activations", run_dir / "activations")
    listing = run_dir.parent / "killed.census"
    with LoopbackServer(latency=0.0) as server:
        killed = child(run_dir, server.base_url, {"NXKIT_CRASH_AT": str(point), "NXKIT_CRASH_CENSUS": str(listing)})
        sent_before = server.requests
        last = listing.read_text().splitlines()[-1].split("\t") if listing.exists() else ["", "?", "?", "?"]
        finished = _finished(run_dir)
        again = run_dir.parent / "resumed.census"
        resumed = child(run_dir, server.base_url, {"NXKIT_CRASH_CENSUS": str(again)})
        sent_after = server.requests - sent_before
    redone = _redone(run_dir, again)
    result = {"case": case, "point": point, "stage": last[1] or "start", "what": last[2], "path": last[3],
              "killed": killed.returncode == -9, "resumed_ok": resumed.returncode == 0, "requests": sent_before,
              "requests_after_resume": sent_after, "recomputed": len(redone),
              "recomputed_finished": len(redone & finished)}  # fmt: skip
    if resumed.returncode:
        result["error"] = resumed.stderr.strip().splitlines()[-1:] or ["?"]
        return result
    got = outcome(run_dir)
    result["identical"] = got == reference
    if got != reference:
        result["differs"] = sorted(k for k in set(got) | set(reference) if got.get(k) != reference.get(k))[:8]
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from nxkit.llm.loopback import LoopbackServer

    work = Path(tempfile.mkdtemp(prefix="nxkit-crash-"))
    print(f"crash harness: seed {args.seed}, {args.points} kill points, work in {work}", flush=True)
    with LoopbackServer(latency=0.0) as server:
        full = census(work / "reference" / "run", server.base_url, None)
        reference_requests = server.requests
    reference_dir = work / "reference" / "run"
    reference = outcome(reference_dir)
    with LoopbackServer(latency=0.0) as server:
        later = census(work / "from-collection" / "run", server.base_url, reference_dir)
        later_requests = server.requests
    if outcome(work / "from-collection" / "run") != reference:
        raise SystemExit("two uninterrupted runs differ: the run is not deterministic, so the harness cannot compare")
    collection = [p for p in full if p[1] == "collection"]
    stages = sorted({p[1] for p in later})
    rng = random.Random(args.seed)
    n_collect = max(1, round(args.points * 0.2))
    chosen = [(p[0], None) for p in rng.sample(collection, min(n_collect, len(collection)))]
    rest = args.points - len(chosen)
    by_stage = {s: [p for p in later if p[1] == s] for s in stages}
    for i in range(rest):  # round robin over the stages, then a seeded point within each
        pool = by_stage[stages[i % len(stages)]]
        chosen.append((rng.choice(pool)[0], reference_dir))
    print(f"census: {len(full)} writes from scratch ({len(collection)} in collection, {reference_requests} requests); "
          f"{len(later)} from a finished collection ({later_requests} requests), by stage "
          f"{dict(Counter(p[1] for p in later))}", flush=True)  # fmt: skip
    results = []
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(one_case, work, i, pt, start, reference) for i, (pt, start) in enumerate(chosen)]
        for f in concurrent.futures.as_completed(futures):
            r = f.result()
            results.append(r)
            state = "identical" if r.get("identical") else ("RESUME FAILED" if not r["resumed_ok"] else "DIFFERS")
            print(f"  point {r['point']:>4} ({r['stage']}, {r['what']} {Path(r['path']).name}): killed "
                  f"{r['killed']}, {state}, {r['requests_after_resume']} requests and {r.get('recomputed', 0)} neuron "
                  f"sides redone after resume "
                  f"{r.get('differs') or r.get('error') or ''}", flush=True)  # fmt: skip
    per_stage = Counter(r["stage"] for r in results)
    identical = sum(bool(r.get("identical")) for r in results)
    killed = sum(r["killed"] for r in results)
    resent = [r["requests"] + r["requests_after_resume"] - (later_requests if r["stage"] != "collection" else reference_requests) for r in results]  # fmt: skip
    recomputed = [r.get("recomputed", 0) for r in results]
    again = sum(r.get("recomputed_finished", 0) for r in results)
    summary = {
        "seed": args.seed, "points": len(results), "killed": killed, "per_stage": dict(per_stage),
        "identical": identical, "lost": len(results) - identical, "requests_resent_total": sum(resent),
        "requests_resent_max": max(resent, default=0), "reference_requests": later_requests,
        "recomputed_neurons": sum(recomputed), "recomputed_finished_neurons": again,
    }  # fmt: skip
    print(f"crash harness (seed {args.seed}): {len(results)} kill points ({killed} killed), per stage "
          f"{dict(per_stage)}; {identical} of {len(results)} resumed runs identical to the uninterrupted one; neuron "
          f"sides explained or revised after a resume: {sum(recomputed)} in all, at most {max(recomputed, default=0)} "
          f"in one, {again} of them finished before the kill; requests re-sent: {sum(resent)} in all, at most "
          f"{max(resent, default=0)} in one (an uninterrupted run sends {later_requests} from a finished collection); "
          f"lost: {len(results) - identical}")  # fmt: skip
    print(json.dumps(summary))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
