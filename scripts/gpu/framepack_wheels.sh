#!/usr/bin/env bash
# FramePack's pinned model libraries as wheels for the GPU machine (Python 3.12, x86_64), run
# here, where PyPI is reachable: the environment FramePack's users run (on transformers 5 its
# low-VRAM mode needs framepack_worker.keep_output_capture: docs/framepack-versions.md), and
# engines must be built and run with the same libraries (the cache key holds their versions).
# The GPU image's torch stays.
#   bash scripts/gpu/framepack_wheels.sh DIR
# then on the GPU machine (DIR carried):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
DIR=${1:?usage: framepack_wheels.sh DIR}
mkdir -p "$DIR"
# FramePack's pins (.ci/framepack-requirements.txt) of what the worker imports, with what those
# versions need and the GPU image (transformers 5, huggingface_hub 1.x) lacks; and typer's
# pydantic, which the image lacks too.
WHEELS=(
  diffusers==0.33.1 transformers==4.46.2 tokenizers==0.20.3 huggingface_hub==0.36.2
  requests==2.31.0 urllib3==2.2.3 idna==3.10 charset_normalizer==3.4.0 certifi==2024.8.30
  pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5
  typing_extensions==4.16.0 importlib_metadata==10.2.0
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DIR" "${WHEELS[@]}"
du -sh "$DIR"
