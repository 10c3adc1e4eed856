"""Where the first use of a cache's engines goes, in a fresh process: once per process,
inductor's CPU feature probe (``pick_vec_isa``, which ``aoti_load_package`` runs for every
package, CUDA ones too: 2.1 s, 9.2 s with an empty inductor cache, on this project's 2-core
machine); then per engine, its load, and its first, second and third call on its golden inputs
(saved at build time), each synchronised. On the H200 the first transformer call through the
block engines took 40 to 48 s at FramePack's depth, and later ones 1 to 2 s (docs/fp8.md).

    python scripts/first_call.py --cache-dir DIR [-c NAME ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("-c", "--component", action="append", default=None,
                    help="only these engines (name or component; repeat for several)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    import torch
    from safetensors.torch import load_file

    from framepack_trt.backends import get_backend
    from framepack_trt.bench import _run
    from framepack_trt.cache import Cache, entry_matches
    from framepack_trt.components.base import get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.sources import Source, load_model

    rows = [("imports", (time.perf_counter() - t) * 1e3)]
    t = time.perf_counter()
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    pick_vec_isa()
    rows.append(("pick_vec_isa (once per process)", (time.perf_counter() - t) * 1e3))

    cache = Cache(Path(args.cache_dir))
    entries = [e for e in cache.entries().values() if entry_matches(e, args.component)]
    if not entries:
        raise SystemExit(f"{args.cache_dir}: no engine"
                         + (f" named {', '.join(args.component)}" if args.component else ""))
    models = {}
    for entry in sorted(entries, key=lambda e: e["name"]):
        fields = entry["key_fields"]
        device = fields["device"]["type"]
        component = get_component(entry["component"])
        dtype = torch_dtype(fields["dtype"])

        name = entry["name"]
        model = None
        if component.weights_as_inputs:
            source = Source.from_dict(entry["source"])
            key = (entry["component"], repr(entry["source"]), str(dtype), device)
            if key not in models:
                t = time.perf_counter()
                models[key] = load_model(component, source, dtype, device, cache.weights_dir)
                rows.append((f"{name}: load the model (its weights are inputs)",
                             (time.perf_counter() - t) * 1e3))
            model = models[key]
        t = time.perf_counter()
        engine = get_backend(fields["backend"]).load(cache.root / entry["engine"]["file"], device)
        rows.append((f"{name}: load the engine", (time.perf_counter() - t) * 1e3))
        golden = load_file(str(cache.root / entry["golden"]["file"]))
        raw = entry.get("raw_inputs") or [i["name"] for i in entry["inputs"]]
        meta = entry["golden_cases"][0]
        inputs = component.engine_inputs(model, [golden[f"0.input.{n}"].to(device) for n in raw],
                                         dtype, device, meta.get("index", 0))
        if device == "cuda":
            torch.cuda.synchronize()
        for call in ("first", "second", "third"):
            rows.append((f"{name}: {call} call ({meta['case']})",
                         _run(engine, inputs, device == "cuda")))
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  ms")
    for what, ms in rows:
        print(f"{what:{width}}  {ms:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
