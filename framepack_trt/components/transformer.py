"""FramePack's packed HunyuanVideo transformer (diffusers
``HunyuanVideoFramepackTransformer3DModel``, weights ``lllyasviel/FramePackI2V_HY``).

The engine runs ``FramepackTransformerForExport`` (see ``framepack_trt.transformer.export``)
over the diffusers module's own parameters; ``prepare`` turns a call (diffusers' or FramePack's
argument names) into the engine's inputs: text cropped to its length, history latents padded
to the history kernels. One engine range covers every 640 bucket: the latent height and width
are dynamic (even sizes), and the padded history sizes are dims of their own, derived from them.
"""

from __future__ import annotations

from dataclasses import replace

from framepack_trt.components.base import (
    Component,
    InputSpec,
    Tolerance,
    get_component,
    random_floats,
    register,
)
from framepack_trt.errors import FramepackTrtError
from framepack_trt.shapes import FRAMEPACK_640_BUCKETS, DimRange
from framepack_trt.transformer.names import COMPONENTS, PIECES, WHOLE, piece_component
from framepack_trt.transformer.tokens import IMAGE_TOKENS, ceil_div

#: A call's inputs in diffusers' names, as ``make_inputs`` returns them.
RAW_INPUTS = ("hidden_states", "timestep", "guidance", "encoder_hidden_states",
              "encoder_attention_mask", "pooled_projections", "image_embeds", "indices_latents",
              "latents_clean", "indices_latents_clean", "latents_history_2x",
              "indices_latents_history_2x", "latents_history_4x", "indices_latents_history_4x")
#: The text length FramePack pads the LLaMA states to.
TEXT_PAD = 512


#: Buckets ``backend: auto`` times the transformer at (pixels): wide, the opt, a square image's.
TIMING_BUCKETS = ((416, 960), (544, 704), (640, 608))


def _buckets_range(index: int) -> DimRange:
    values = [b[index] // 8 for b in FRAMEPACK_640_BUCKETS]
    return DimRange(min(values), 68 if index == 0 else 88, max(values))


@register
class Transformer(Component):
    name = WHOLE
    description = ("FramePack transformer: latents (1, 16, frames, h, w) + text, image and history "
                   "conditions -> noise prediction (1, 16, frames, h, w), fp32")
    model_class = "diffusers.HunyuanVideoFramepackTransformer3DModel"
    framepack_module = "transformer"
    default_dtype = "bfloat16"
    default_dims = {
        "batch": DimRange(1, 1, 1),
        "latent_frames": DimRange(9, 9, 9),
        "latent_height": _buckets_range(0),   # 52..120 (416..960 pixels), opt 68 (544)
        "latent_width": _buckets_range(1),    # 52..120, opt 88 (704)
        "text_len": DimRange(1, 128, 256),
    }
    dim_limits = {"batch": (1, 1), "text_len": (1, TEXT_PAD)}
    bucket_dims = ("latent_height", "latent_width")
    bucket_multiple = 16  # even latent sizes: the patch is 2x2
    output_names = ("sample",)
    tolerances = {"bfloat16": Tolerance(rel_l2=1e-2, cosine=0.999, max_abs_std=0.2)}
    full_check_at_build = True
    code_modules = (*Component.code_modules, "framepack_trt.transformer.export",
                    "framepack_trt.transformer.model")
    tiny_config = {
        "num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
        "num_single_layers": 1, "num_refiner_layers": 1, "text_embed_dim": 32,
        "pooled_projection_dim": 16, "rope_axes_dim": [4, 6, 6], "has_image_proj": True,
        "image_proj_dim": 24, "has_clean_x_embedder": True,
    }

    @classmethod
    def load_model_class(cls) -> type:
        """diffusers' ``HunyuanVideoFramepackTransformer3DModel`` (0.34+), else the same model
        from ``framepack_trt.transformer.model`` (diffusers 0.33.1, FramePack's pin)."""
        from framepack_trt.transformer.model import transformer_class

        return transformer_class()

    @classmethod
    def expand(cls, entry, problems):
        """``engines: blocks`` (the default): one engine per piece (``transformer.names``),
        named ``<name>_<piece>``; with ``quantize: fp8`` the block pieces' fp8 components, with
        the entry's tolerance fields over fp8's own defaults. ``engines: whole``: one engine."""
        if entry.engines != "blocks":
            return super().expand(entry, problems)
        spec = entry.spec
        out = []
        for piece in PIECES:
            component, tolerance = piece_component(piece, entry.quantize), spec.tolerance
            if component != COMPONENTS[piece]:
                tolerance = replace(get_component(component).tolerance(spec.dtype),
                                    **entry.tolerance_fields)
            out.append(replace(spec, name=f"{spec.name}_{piece}", component=component,
                               tolerance=tolerance))
        return out

    def check_dims(self, config, dims):
        problems = []
        for name in self.bucket_dims:
            r = dims[name]
            if r.min % 2 or r.max % 2 or r.opt % 2:
                problems.append(f"dims.{name}: {r} must be even (the patch size is 2)")
        if not (config.has_clean_x_embedder and config.has_image_proj):
            problems.append("source: the model needs has_clean_x_embedder and has_image_proj "
                            "(FramePack's configuration)")
        return problems

    def check_sizes(self, dims, buckets=()):
        """Every bucket of the profile (without one: every 640 bucket) inside the engine's
        latent range, at the opt text length: the shapes FramePack really calls with. One
        engine covers them all, and a TensorRT-RTX build was seen to be wrong at one shape of
        its range and right at others (docs/transformer.md), so each of them is checked."""
        out = []
        for height, width in buckets or FRAMEPACK_640_BUCKETS:
            sizes = {name: r.opt for name, r in dims.items()}
            sizes.update(latent_height=height // 8, latent_width=width // 8)
            if all(dims[n].covers(sizes[n]) for n in self.bucket_dims):
                out.append((f"bucket {height}x{width}", sizes))
        return out

    def timing_sizes(self, dims):
        """Opt, and the 416x960, 544x704 and 640x608 (a square image's) buckets in range."""
        out = [("opt", {name: r.opt for name, r in dims.items()})]
        for label, sizes in self.check_sizes(dims, TIMING_BUCKETS):
            if sizes not in [s for _, s in out]:
                out.append((label, sizes))
        return out

    def snap_sizes(self, sizes):
        """Latent sizes must be even (patch size 2): an odd size moves down by one."""
        return {k: v - v % 2 if k in self.bucket_dims else v for k, v in sizes.items()}

    def user_sizes(self, sizes):
        """Latent height and width from the patch grid (2 latent pixels per patch)."""
        return {axis: 2 * sizes[short] for axis, short in
                (("latent_height", "rows"), ("latent_width", "cols")) if short in sizes}

    def derived_dims(self, dims):
        """rows/cols: latent size / 2 (the patch grid); hist2_*/hist4_*: the 2x and 4x history
        latents padded to multiples of 4 and 8, in units of 4 and 8."""
        out = {}
        for axis, short in (("latent_height", "rows"), ("latent_width", "cols")):
            r = dims[axis]
            out[short] = DimRange(r.min // 2, r.opt // 2, r.max // 2)
            for k in (4, 8):
                out[f"hist{k // 2}_{short}"] = DimRange(ceil_div(r.min, k), ceil_div(r.opt, k),
                                                        ceil_div(r.max, k))
        return out

    def input_specs(self, config):
        c = config.in_channels
        return [
            InputSpec("hidden_states", ("batch", c, "latent_frames", ("rows", 2), ("cols", 2))),
            InputSpec("timestep", ("batch",), "float32"),
            InputSpec("guidance", ("batch",), "float32"),
            InputSpec("encoder_hidden_states", ("batch", "text_len", config.text_embed_dim)),
            InputSpec("pooled_projections", ("batch", config.pooled_projection_dim)),
            InputSpec("image_embeds", ("batch", IMAGE_TOKENS, config.image_proj_dim)),
            InputSpec("indices_latents", ("latent_frames",), "int64"),
            InputSpec("latents_clean", ("batch", c, 2, ("rows", 2), ("cols", 2))),
            InputSpec("indices_latents_clean", (2,), "int64"),
            InputSpec("latents_history_2x", ("batch", c, 2, ("hist2_rows", 4), ("hist2_cols", 4))),
            InputSpec("indices_latents_history_2x", (2,), "int64"),
            InputSpec("latents_history_4x", ("batch", c, 16, ("hist4_rows", 8), ("hist4_cols", 8))),
            InputSpec("indices_latents_history_4x", (16,), "int64"),
        ]

    def raw_input_names(self, config):
        return list(RAW_INPUTS)

    def prepare(self, inputs, dtype, device):
        from framepack_trt.transformer.export import prepare_call

        return prepare_call(dict(zip(RAW_INPUTS, inputs, strict=True)), dtype, device)

    def prepare_kwargs(self, kwargs, names, dtype, device):
        """A call by keyword, with diffusers' or FramePack's argument names."""
        from framepack_trt.transformer.export import prepare_call

        return prepare_call(kwargs, dtype, device)

    def parse_call(self, model, args, kwargs):
        """A keyword call in FramePack's or diffusers' names -> the engine's inputs (text
        cropped to the mask, history padded), in the engine's dtype on the latents' device."""
        from framepack_trt.transformer.export import prepare_call

        if args:
            return None, "the call passes arguments by position (FramePack passes them by keyword)"
        if getattr(model, "enable_teacache", False):
            return None, ("TeaCache is on: a whole-model engine cannot skip the block stack as "
                          "TeaCache does; call initialize_teacache(enable_teacache=False) to use it")
        if kwargs.get("attention_kwargs"):  # None or {} change nothing; a LoRA scale would
            return None, "the call passes attention_kwargs"
        try:
            return prepare_call(kwargs, model.dtype, None), ""
        except (FramepackTrtError, ValueError, KeyError) as exc:
            return None, str(exc)

    def wrap_output(self, model, outputs, kwargs):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        (sample,) = outputs
        return (Transformer2DModelOutput(sample=sample) if kwargs.get("return_dict", True)
                else (sample,))

    def export_module(self, model):
        from framepack_trt.transformer.export import FramepackTransformerForExport

        return FramepackTransformerForExport(model)

    def reference(self, model, inputs, index=0):
        """The diffusers module's own forward, with its output projection in fp32 as FramePack
        sets ``high_quality_fp32_output_for_inference`` (a forward hook; fp32 output)."""
        from framepack_trt.transformer.export import framepack_fp32_output

        with framepack_fp32_output(model):
            return (model(**dict(zip(RAW_INPUTS, inputs, strict=True)), return_dict=False)[0],)

    def make_inputs(self, config, sizes, dtype, device, generator):
        import torch

        c, frames = config.in_channels, sizes["latent_frames"]
        h, w, length = sizes["latent_height"], sizes["latent_width"], sizes["text_len"]

        def r(*shape, scale=1.0):
            return random_floats(shape, dtype, generator, device, scale)

        mask = torch.zeros(1, max(TEXT_PAD, length), dtype=torch.bool)
        mask[:, :length] = True
        # Index values as FramePack's samplers make them: inverted (start, section, post, 2x,
        # 4x) or vanilla / F1 (start, 4x, 2x, 1x, section), drawn at random, offset at random.
        vanilla = bool(torch.randint(0, 2, (1,), generator=generator))
        offset = int(torch.randint(0, 40, (1,), generator=generator))
        idx = torch.arange(offset, offset + 1 + 16 + 2 + 1 + frames)
        if vanilla:
            start, c4, c2, c1, latent = idx.split([1, 16, 2, 1, frames])
        else:
            start, latent, c1, c2, c4 = idx.split([1, frames, 1, 2, 16])
        timestep = torch.randint(1, 1000, (1,), generator=generator).float()
        return (
            r(1, c, frames, h, w), timestep.to(device), torch.full((1,), 10000.0, device=device),
            r(1, mask.shape[1], config.text_embed_dim), mask.to(device),
            r(1, config.pooled_projection_dim), r(1, IMAGE_TOKENS, config.image_proj_dim),
            latent.to(device), r(1, c, 2, h, w), torch.cat([start, c1]).to(device),
            r(1, c, 2, h, w), c2.to(device), r(1, c, 16, h, w), c4.to(device),
        )
