"""PyTorch's attention kernels at FramePack's sequence lengths: how long one block's attention
takes through each ``scaled_dot_product_attention`` backend (flash, cuDNN, memory-efficient,
and the default choice), bf16, 24 heads of 128, no mask (FramePack crops the text to its
length), and each output's rel L2 against the math kernel in float32. The transformer's block
engines spend this once per block per step: it bounds what faster linears (fp8) can gain.

    python scripts/attention_backends.py [--text 160] [--iters 20] [--markdown F]   # CUDA
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

from framepack_trt.bench import _time
from framepack_trt.device import current_device, describe
from framepack_trt.transformer.tokens import image_tokens

BUCKETS = ((544, 704), (416, 960), (640, 608))
BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}


def attend(backend, q, k, v):
    if backend is None:  # what torch picks by itself
        return sdpa(q, k, v)
    with sdpa_kernel([backend]):
        return sdpa(q, k, v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", type=int, default=160, help="text tokens next to the image's")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    rows = []
    for height, width in BUCKETS:
        n = image_tokens(9, height // 8, width // 8) + args.text
        g = torch.Generator("cuda").manual_seed(n)
        q, k, v = (torch.randn(1, args.heads, n, args.head_dim, generator=g, device="cuda",
                               dtype=torch.bfloat16) for _ in range(3))
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):  # a few heads at a time
            ref = torch.cat([sdpa(q[:, h:h + 4].float(), k[:, h:h + 4].float(),
                                  v[:, h:h + 4].float()) for h in range(0, args.heads, 4)], 1)
        for name, backend in BACKENDS.items():
            row = {"bucket": f"{height}x{width}", "tokens": n, "backend": name}
            call = functools.partial(attend, backend, q, k, v)
            try:
                with torch.no_grad():
                    out = call()
                    row["rel_l2"] = float((out.float() - ref).norm() / ref.norm())
                    row["ms"] = _time(call, (), 1, args.iters, cuda=True)
            except Exception as e:  # a backend this card or build lacks
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
        del q, k, v, ref
    flash = {r["bucket"]: r.get("ms") for r in rows if r["backend"] == "flash"}
    lines = [f"scaled_dot_product_attention backends, bf16, {args.heads} heads of "
             f"{args.head_dim}, text {args.text}, {describe(current_device('cuda'))}, torch "
             f"{torch.__version__}, {datetime.date.today().isoformat()} "
             f"(scripts/attention_backends.py, median of {args.iters})", "",
             "| bucket | tokens | backend | ms | flash/backend | rel L2 vs fp32 math |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            ratio = f"{flash[r['bucket']] / r['ms']:.2f}x" if flash.get(r["bucket"]) else ""
            lines.append(f"| {r['bucket']} | {r['tokens']} | {r['backend']} | {r['ms']:.2f} | "
                         f"{ratio} | {r['rel_l2']:.1e} |")
        else:
            lines.append(f"| {r['bucket']} | {r['tokens']} | {r['backend']} | failed: "
                         f"{r['error'][:80]} | | |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
