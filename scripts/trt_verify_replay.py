"""Replay `verify --full --seed S` on a transformer engine case by case and say which side is
wrong when a case fails: the engine against eager in its dtype, the engine against eager in
float32, and eager in its dtype against float32; the engine run twice on the same inputs; and
each case's inputs saved so that `--isolated` can run one of them first in a fresh process.

    python scripts/trt_verify_replay.py CACHE_DIR SEED OUT_DIR            # replay, save inputs
    python scripts/trt_verify_replay.py CACHE_DIR SEED OUT_DIR --isolated CASE
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
from trt_transformer_probe import load_transformer, references, rel_l2  # beside this script

from framepack_trt.verify import FULL_CASES


def main(cache_dir: str, seed: str, out_dir: str, *rest: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = load_transformer(cache_dir)
    component, engine, model = t.component, t.engine, t.model
    dtype, device = t.dtype, t.device

    def measure(name: str, inputs) -> dict:
        eager, exact = references(t, inputs)
        (first,) = engine(*component.prepare(inputs, dtype, device))
        first = first.clone()
        (second,) = engine(*component.prepare(inputs, dtype, device))
        row = {"case": name, "engine_vs_eager": rel_l2(first, eager),
               "engine_vs_fp32": rel_l2(first, exact), "eager_vs_fp32": rel_l2(eager, exact),
               "second_vs_first": rel_l2(second, first)}
        print(f"{name:>16} engine/eager {row['engine_vs_eager']:.1e}  engine/fp32 "
              f"{row['engine_vs_fp32']:.1e}  eager/fp32 {row['eager_vs_fp32']:.1e}  "
              f"run2/run1 {row['second_vs_first']:.1e}", flush=True)
        return row

    if rest[:1] == ("--isolated",):
        case = rest[1]
        saved = torch.load(out / f"inputs-{seed}-{case.replace(' ', '_')}.pt")
        print(json.dumps(measure("isolated " + case, [x.to(device) for x in saved])))
        return

    dims = t.dims
    rng = random.Random(int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    cases = [(which, component.case_sizes(dims, which, rng)) for which in FULL_CASES]
    rows = []
    for which, sizes in cases + component.check_sizes(dims, t.buckets):
        inputs = component.make_inputs(model.config, sizes, dtype, device, gen)
        torch.save([x.cpu() for x in inputs], out / f"inputs-{seed}-{which.replace(' ', '_')}.pt")
        rows.append({**measure(which, inputs), "sizes": sizes})
    (out / f"replay-{seed}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
