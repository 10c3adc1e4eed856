"""Write the random weights of a profile's first entry (its ``source: {random: ...}``) into a
folder, as ``framepack-trt build`` would into its cache's weights folder, and print where:
several GPU scripts build one profile into several caches that link one set of weights.

    python scripts/gpu/random_weights.py PROFILE DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from framepack_trt.components.base import get_component
from framepack_trt.profile import load_profile
from framepack_trt.sources import materialize_random


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    spec = load_profile(argv[0]).components[0]
    print(materialize_random(spec.source, get_component(spec.component), Path(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
