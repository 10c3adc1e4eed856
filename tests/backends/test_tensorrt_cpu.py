"""The TensorRT backend where TensorRT cannot run (a CPU machine): it says why and which extra
to install, profiles that need it are refused or fall back, and its settings are validated.
Its GPU tests are in tests/gpu/test_tensorrt.py."""

from __future__ import annotations

import json

import pytest
from conftest import cli, write_profile

from framepack_trt.backends import get_backend
from framepack_trt.backends.tensorrt import TensorRTSettings, installed_edition, resolve_ops
from framepack_trt.errors import BuildError, ProfileError
from framepack_trt.profile import load_profile

needs_no_trt = pytest.mark.skipif(installed_edition() is not None,
                                  reason="torch_tensorrt is installed here")


@needs_no_trt
def test_unavailable_names_the_extra():
    trt = get_backend("tensorrt")
    assert trt.version() == "not installed"
    assert "framepack-trt[tensorrt-rtx]" in trt.unavailable_reason("cuda")
    assert "CUDA GPUs only" in trt.unavailable_reason("cpu")


def test_tensorrt_on_cpu_without_fallback_is_refused(tmp_path):
    p = write_profile(tmp_path / "p.yaml", [{"component": "clip_text", "source": {"random": {}}}],
                      backend="tensorrt", device="cpu")
    with pytest.raises(ProfileError, match=r"components\[0\].device: backend 'tensorrt' cannot build "
                                           r"for 'cpu'.*fallback_backend"):
        load_profile(p)


def test_settings_validated_in_profile(tmp_path):
    p = write_profile(tmp_path / "p.yaml", [{
        "component": "clip_text", "source": {"random": {}},
        "build": {"optimization_level": 7, "torch_executed_ops": "aten.mm", "workspace_gb": 4}}],
        backend="tensorrt", device="cuda")
    with pytest.raises(ProfileError) as info:
        load_profile(p)
    msg = str(info.value)
    assert "build.torch_executed_ops: 'aten.mm' is not valid; expected tuple[str, ...]" in msg
    p = write_profile(tmp_path / "p.yaml", [{
        "component": "clip_text", "source": {"random": {}},
        "build": {"optimization_level": 7}}], backend="tensorrt", device="cuda")
    with pytest.raises(ProfileError, match="optimization_level 7 is not in 0..5"):
        load_profile(p)


def test_engine_fields_and_ops():
    s = TensorRTSettings(torch_executed_ops=["aten._scaled_dot_product_flash_attention"],
                         offload_module_to_cpu=True)
    assert s.engine_fields()["torch_executed_ops"] == ("aten._scaled_dot_product_flash_attention",)
    assert "offload_module_to_cpu" not in s.engine_fields()  # does not change the engine
    ops = resolve_ops(s.torch_executed_ops)
    assert "torch.ops.aten._scaled_dot_product_flash_attention.default" in ops
    assert resolve_ops(("torch.ops.aten.mm.default",)) == {"torch.ops.aten.mm.default"}
    with pytest.raises(BuildError, match="not an operator"):
        resolve_ops(("aten.no_such_op",))


def test_fallback_and_failures_do_not_stop_others(tmp_path, tiny_weights):
    """SigLIP asks for TensorRT on the CPU with an AOTInductor fallback; LLaMA fails (its text
    length exceeds the model's positions). SigLIP still builds, with the fallback."""
    p = write_profile(tmp_path / "p.yaml", [
        {"component": "llama_text", "source": {"path": str(tiny_weights["llama_text"])},
         "dtype": "float32", "dims": {"text_len": {"min": 1, "max": 600}}},
        {"component": "siglip_image", "source": {"path": str(tiny_weights["siglip_image"])},
         "dtype": "float32", "backend": "tensorrt", "fallback_backend": "aoti"}])
    cache = tmp_path / "cache"
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache))
    assert r.returncode == 1
    assert "1 built, 0 cached, 1 failed" in r.stdout
    assert "fallback; tensorrt unavailable: TensorRT builds engines for CUDA GPUs only" in r.stdout
    assert "used fallback backend aoti because tensorrt unavailable" in r.stdout
    assert "llama_text: " in r.stderr and "exceeds the model's max_position_embeddings (512)" in r.stderr
    rows = json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]
    assert [(e["name"], e["backend"], e["status"]) for e in rows] == [("siglip_image", "aoti", "ok")]
    r = cli("build", "--profile", str(p), "--cache-dir", str(cache), "-c", "siglip_image", check=True)
    assert "0 built, 1 cached" in r.stdout
