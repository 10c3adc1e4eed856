"""FramePack's transformer: its class, its export-ready forward, its pieces and their block
loop, and fp8 (docs/architecture.md).

``model``   the class the transformer components load (diffusers', or the same model where
            diffusers has none);
``export``  the forward made export-ready: ``prepare_call`` (eager, per call) and
            ``FramepackTransformerForExport`` (the whole-model engine);
``pieces``  the same forward cut into the input, dual-block, single-block and output pieces,
            whose engines take the weights as inputs; ``names``: the pieces' one table;
``loop``    the forward over piece engines: the input piece, the block loop in Python with
            FramePack's TeaCache, the output piece;
``fp8``     the fp8 (e4m3) and int8 linears of the fp8 block engines and the quantized block;
``fp8_placement``  where those quantized copies live while FramePack runs (process-wide).

Nothing here reads the engine cache or the component registry: the components
(``framepack_trt.components``) point into this package, and the runtime
(``framepack_trt.runtime``) runs it.
"""
