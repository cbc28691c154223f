"""Past one machine, the LLM side (issue 31): batch files and several endpoints, each measured in one run.

    .venv/bin/python bench/batch.py import [--answers 100000]    # answers imported per second (target >= 20k/s)
    .venv/bin/python bench/batch.py rounds [--neurons 8]         # a run through batch files: requests per stage
    .venv/bin/python bench/batch.py replicas [--requests 400]    # effective concurrency, two servers vs one (>= 1.8x)

`import` notes N chat requests in a fresh response cache as a run in batch mode does, answers them with the
loopback's rules into one output file in OpenAI's format, and times `nxkit.llm.batch.import_answers` (reading,
checking each answer's shape, storing) alone. `rounds` collects a small run on the offline model, then drives
`nxkit run --batch-out` against the loopback's batch answerer until the run finishes, printing each round's stage,
requests, files and estimated tokens. `replicas` sends the same requests to one loopback server of fixed capacity
(it serves `--capacity` at once, each after `--latency` s) and to two, and prints requests x latency / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_import(n: int) -> None:
    import orjson

    from nxkit.llm.base import Deferred, run_sync
    from nxkit.llm.batch import attach, import_answers
    from nxkit.llm.cache import ResponseCache
    from nxkit.llm.loopback import MODEL, answer_batch
    from nxkit.llm.server import OpenAIBackend

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        backend = OpenAIBackend(MODEL, base_url="http://127.0.0.1:9/v1", api_key="local", cache_root=tmp / "cache",
                                prompt_logprobs=False)  # fmt: skip
        out = attach([backend], tmp / "files")

        async def note():
            for i in range(n):
                text = f"What does this neuron respond to?\n<start>\nneuron {i}\tthe\t9\n<end>"
                try:
                    await backend.chat([{"role": "user", "content": text}], max_tokens=60)
                except Deferred:
                    pass

        t0 = time.perf_counter()
        run_sync(note())
        written = out.write("explain+score")
        t_write = time.perf_counter() - t0
        answers = tmp / "out.jsonl"
        for i, path in enumerate(written.files):
            part = tmp / f"out-{i}.jsonl"
            answer_batch(path, part)
            with answers.open("ab") as f:
                f.write(part.read_bytes())
        size = answers.stat().st_size
        cache = ResponseCache(tmp / "cache")
        t0 = time.perf_counter()
        report = import_answers([answers], cache)
        seconds = time.perf_counter() - t0
        check = orjson.loads(answers.read_bytes().splitlines()[0])["custom_id"]
    print(f"noted and wrote {written.requests:,} requests in {len(written.files)} files: {t_write:.1f} s")
    print(f"imported {report.stored:,} of {report.lines:,} answers ({size / 1e6:.0f} MB) in {seconds:.2f} s: "
          f"{report.stored / seconds:,.0f} answers/s (target >= 20,000/s: {'met' if report.stored / seconds >= 20_000 else 'MISSED'})")  # fmt: skip
    print(f"errors {len(report.errors)}, malformed {len(report.malformed)}, unknown {report.unknown} (e.g. {check})")


def bench_rounds(neurons: int) -> None:
    import contextlib
    import io

    from nxkit.cli import main
    from nxkit.llm.loopback import MODEL, answer_batch

    os.environ.setdefault("OPENAI_API_KEY", "local")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["NXKIT_LLM_CACHE"] = str(tmp / "cache")
        files = tmp / "files"
        argv = [
            "run", "--run-dir", str(tmp / "run"), "--explainer", MODEL, "--base-url", "http://127.0.0.1:9/v1",
            "--batch-out", str(files), "--collect.layers", "0", "1", "--sample", str(neurons // 2),
            "--max-tokens", "8192", "--corpus", "fortunes", "--collect.no-compile", "--sign", "positive",
            "--explain.best-of", "2", "--revise.rounds", "1", "--no-report", "--no-progress",
        ]  # fmt: skip
        print(f"{'round':>5} {'stage':<18} {'requests':>8} {'files':>5} {'prompt tokens':>14} {'import s':>8}")
        t_start = time.perf_counter()
        for k in range(1, 60):
            before = set(files.glob("requests-*.jsonl"))
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(argv) == 0
            new = sorted(set(files.glob("requests-*.jsonl")) - before)
            if not new:
                print(f"finished after {k - 1} rounds of files, {time.perf_counter() - t_start:.0f} s in all")
                break
            line = next(ln for ln in buf.getvalue().splitlines() if "requests the response cache" in ln)
            stage, requests = line.split(":")[0], int(line.split(": ")[1].split()[0].replace(",", ""))
            tokens = line.split("about ")[1].split()[0]
            outs = []
            for path in new:
                answer_batch(path, path.with_suffix(".out"))
                outs.append(str(path.with_suffix(".out")))
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                assert main(["cache", "import", *outs]) == 0
            print(f"{k:>5} {stage:<18} {requests:>8} {len(new):>5} {tokens:>14} {time.perf_counter() - t0:>8.2f}")


def bench_replicas(requests: int, latency: float, capacity: int) -> None:
    from nxkit.llm.base import run_sync
    from nxkit.llm.loopback import MODEL, LoopbackProcess
    from nxkit.llm.server import OpenAIBackend

    def measure(urls: list[str]) -> float:
        backend = OpenAIBackend(MODEL, base_url=urls, api_key="local", cache=False, max_concurrency=64)
        run_sync(backend.check())

        async def many():
            msgs = [[{"role": "user", "content": f"What does this neuron respond to? {i}"}] for i in range(requests)]
            return await asyncio.gather(*(backend.chat(m) for m in msgs))

        t0 = time.perf_counter()
        run_sync(many())
        wall = time.perf_counter() - t0
        return requests * latency / wall

    settings = dict(latency=latency, answers="short", capacity=capacity)
    with LoopbackProcess(**settings) as a, LoopbackProcess(**settings) as b:
        one = measure([a.base_url])
        two = measure([a.base_url, b.base_url])
    ratio = two / one
    print(f"{requests} requests, servers of capacity {capacity}, latency {latency:g} s")
    print(f"effective concurrency: one server {one:.1f}, two servers {two:.1f}: {ratio:.2f}x "
          f"(target >= 1.8x: {'met' if ratio >= 1.8 else 'MISSED'})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["import", "rounds", "replicas"])
    ap.add_argument("--answers", type=int, default=100_000)
    ap.add_argument("--neurons", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=8)
    args = ap.parse_args()
    if args.what == "import":
        bench_import(args.answers)
    elif args.what == "rounds":
        bench_rounds(args.neurons)
    else:
        bench_replicas(args.requests, args.latency, args.capacity)


if __name__ == "__main__":
    main()
