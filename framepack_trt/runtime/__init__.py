"""Engines at run time, apart from building them (docs/architecture.md).

``selection``        which engines cover a call, ranked, and why the others do not
                     (``select``; ``find_engine``);
``loading``          the one engine loader (``load_engine``: an engine that checks every
                     call's shapes), used by the swaps, ``verify`` and ``bench``;
``checkpoints``      which engines belong to a loaded model (its checkpoint or architecture);
``swap``             one FramePack module's forward swapped for its engines, eager otherwise;
``transformer_swap`` the transformer's swap: its piece engines and their block loop;
``engines``          ``use_engines`` and what it returns;
``flags``            FramePack's command-line flags.

FramePack's code imports the public names from ``framepack_trt.framepack``.
"""
