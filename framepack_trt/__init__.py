"""framepack-trt: ahead-of-time engines for FramePack, built once and checked against PyTorch.

Importing this package does not import torch; the heavy modules are imported by the functions
that need them, so ``framepack-trt --help`` and ``framepack-trt list`` start fast.
"""

__version__ = "0.1.0"
