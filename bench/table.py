"""Opening a paper-scale run: load time of the run table for 100,000 synthetic neuron rows from its Parquet file,
against building it from the per-neuron JSON summaries (target < 2 s).

    .venv/bin/python bench/table.py [--neurons 100000] [--dir /tmp/nxkit-table-bench]

Writes the neurons through `Run.write_neuron` (a summary file each, and a row each in the table's journal, folded
into Parquet every 2,000 rows), then times both ways of loading the same table, each once, in one run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import pandas as pd

from nxkit.records import Candidate, NeuronId, NeuronSummary, Scores
from nxkit.runs import TABLE_COLUMNS, Run, _typed, table_row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=100_000)
    ap.add_argument("--dir", default="/tmp/nxkit-table-bench")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    run, rng = Run(root / "run"), random.Random(0)
    t0 = time.perf_counter()
    for i in range(args.neurons):
        score = rng.uniform(-0.2, 0.9)
        run.write_neuron(
            NeuronSummary(
                NeuronId(i // 6400, i % 6400),
                "done",
                explanation=f"the word w{i}",
                max_activation=1.0,
                candidates=[Candidate(f"the word w{i}", 0.5)],
                scores=Scores(score, score / 2, n_windows=20),
                shuffled_control=rng.uniform(-0.1, 0.1),
                usage={"requests": 72, "prompt_tokens": 28000},
            )  # fmt: skip
        )
    run.compact_table()
    print(f"wrote {args.neurons:,} neurons in {time.perf_counter() - t0:.0f} s; "
          f"table.parquet {run.table_path.stat().st_size / 1e6:.1f} MB")  # fmt: skip

    t0 = time.perf_counter()
    parquet = run.table()
    t_parquet = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = [table_row(s, run.read_revision(s.neuron_id), run.path.name) for s in run.summaries()]
    from_json = _typed(pd.DataFrame(rows, columns=TABLE_COLUMNS))
    t_json = time.perf_counter() - t0
    assert len(parquet) == len(from_json) == args.neurons
    assert parquet["top_and_random"].round(9).equals(from_json["top_and_random"].round(9))
    print(f"load {args.neurons:,} rows: Parquet {t_parquet:.2f} s (target < 2 s), per-neuron JSON {t_json:.1f} s; "
          f"{t_json / t_parquet:.0f}x faster")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
