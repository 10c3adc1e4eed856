"""Where the first use of a cache's engines goes, in a fresh process: per engine, its load and
its first, second and third call on its golden inputs (saved at build time), each synchronised;
last, whether inductor's CPU feature probe (``pick_vec_isa``: it compiles and loads test
programs, 2.1 s on this project's 2-core machine, 9.2 s with an empty inductor cache, 44-50 s
on an H100 machine) ran in the process. torch's own ``aoti_load_package`` runs it for every
package, CUDA ones too, only to warn when the package was built for another host; this
project's loader (``backends.aoti_host.load_package``) checks the host from the CPU's feature bits
instead, so the probe must not run here.

    python scripts/bench/first_call.py --cache-dir DIR [-c NAME ...]
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

    from framepack_trt.cache import Cache
    from framepack_trt.components.base import get_component
    from framepack_trt.export import torch_dtype
    from framepack_trt.names import entry_matches
    from framepack_trt.runtime.loading import load_engine, load_model
    from framepack_trt.timing import call_ms

    rows = [("imports", (time.perf_counter() - t) * 1e3)]
    from torch._inductor.cpu_vec_isa import valid_vec_isa_list

    probes = valid_vec_isa_list.cache_info().misses  # the probe, run before in this process

    cache = Cache(Path(args.cache_dir))
    entries = [e for e in cache.entries().values() if entry_matches(e, args.component)]
    if not entries:
        raise SystemExit(f"{args.cache_dir}: no engine"
                         + (f" named {', '.join(args.component)}" if args.component else ""))
    models = {}
    for entry in sorted(entries, key=lambda e: e.name):
        device = entry.device_type
        component = get_component(entry.component)
        dtype = torch_dtype(entry.dtype)

        name = entry.name
        model = None
        if component.weights_as_inputs:
            key = (entry.component, repr(entry.source), str(dtype), device)
            if key not in models:
                t = time.perf_counter()
                models[key] = load_model(cache, entry)
                rows.append((f"{name}: load the model (its weights are inputs)",
                             (time.perf_counter() - t) * 1e3))
            model = models[key]
        t = time.perf_counter()
        engine = load_engine(cache, entry)
        rows.append((f"{name}: load the engine", (time.perf_counter() - t) * 1e3))
        golden = load_file(str(cache.root / entry.golden.file))
        meta = entry.golden_cases[0]
        inputs = component.engine_inputs(
            model, [golden[f"0.input.{n}"].to(device) for n in entry.raw_input_names], dtype,
            device, meta.index or 0)
        if device == "cuda":
            torch.cuda.synchronize()
        for call in ("first", "second", "third"):
            rows.append((f"{name}: {call} call ({meta.case})",
                         call_ms(engine, inputs, device == "cuda")))
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  ms")
    for what, ms in rows:
        print(f"{what:{width}}  {ms:10.1f}")
    ran = valid_vec_isa_list.cache_info().misses > probes
    print(f"inductor's CPU feature probe (pick_vec_isa) ran: {'yes' if ran else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
