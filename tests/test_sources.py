"""Weight sources: local folders, the local Hugging Face cache (offline), random weights."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import save_tiny

from framepack_trt.components.base import get_component
from framepack_trt.errors import WeightsNotFoundError
from framepack_trt.sources import (
    FRAMEPACK_DIR_ENV,
    Source,
    fingerprint,
    load_model,
    materialize_random,
    resolve_local_dir,
    use_framepack_dir,
)


def test_path_fingerprint_tracks_content_and_is_memoised(tmp_path):
    comp = get_component("siglip_image")
    a = save_tiny("siglip_image", tmp_path / "a", seed=0)
    memo = tmp_path / "fp.json"
    src = Source("path", path=str(a))
    fp1 = fingerprint(src, comp, memo)
    assert fingerprint(src, comp, memo) == fp1
    assert memo.exists() and str((a / "model.safetensors").resolve()) in memo.read_text()
    # Same shapes, other values (safetensors header unchanged): a new fingerprint.
    save_tiny("siglip_image", tmp_path / "b", seed=1)
    shutil.copy(tmp_path / "b" / "model.safetensors", a / "model.safetensors")
    assert fingerprint(src, comp, memo) != fp1


def test_random_fingerprint_depends_on_config_and_seed():
    comp = get_component("clip_text")
    base = fingerprint(Source("random", seed=0), comp)
    assert fingerprint(Source("random", seed=0), comp) == base
    assert fingerprint(Source("random", seed=1), comp) != base
    assert fingerprint(Source("random", seed=0, config={"num_hidden_layers": 3}), comp) != base


def test_random_source_materialises_once_and_loads_real_class(tmp_path):
    comp = get_component("clip_text")
    src = Source("random", seed=5, config={"num_hidden_layers": 1})
    d = materialize_random(src, comp, tmp_path)
    assert (d / "config.json").is_file()
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert materialize_random(src, comp, tmp_path) == d
    assert (d / "model.safetensors").stat().st_mtime_ns == stamp
    model = load_model(comp, src, torch.float32, "cpu", tmp_path)
    assert type(model).__name__ == "CLIPTextModel" and model.config.num_hidden_layers == 1


def test_missing_local_weights(tmp_path):
    comp = get_component("clip_text")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        fingerprint(Source("path", path=str(tmp_path / "nope")), comp)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="no config.json"):
        fingerprint(Source("path", path=str(tmp_path / "empty")), comp)


def _fake_hub_cache(root, repo, subfolder, commit, src_dir):
    """The local HF cache layout, as huggingface_hub writes it."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit / subfolder
    snap.mkdir(parents=True)
    for f in src_dir.iterdir():
        shutil.copy(f, snap / f.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_repo_source_reads_local_hf_cache_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    for var in ("HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    hub = tmp_path / "hub"
    weights = save_tiny("siglip_image", tmp_path / "w", seed=3)
    _fake_hub_cache(hub, "someone/tiny-redux", "image_encoder", "a" * 40, weights)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    comp = get_component("siglip_image")
    src = Source("repo", repo="someone/tiny-redux", subfolder="image_encoder")
    fp = fingerprint(src, comp)
    model = load_model(comp, src, torch.float32, "cpu", tmp_path)
    assert type(model).__name__ == "SiglipVisionModel"
    # Another snapshot revision is another fingerprint.
    _fake_hub_cache(hub, "someone/tiny-redux2", "image_encoder", "b" * 40, weights)
    src2 = Source("repo", repo="someone/tiny-redux2", subfolder="image_encoder")
    assert fingerprint(src2, comp) != fp
    with pytest.raises(WeightsNotFoundError, match="not in the local Hugging Face cache.*hf download"):
        fingerprint(Source("repo", repo="someone/absent", subfolder="x"), comp)


def _framepack_folder(root):
    """A FramePack checkout as far as finding it goes: demo_gradio.py and diffusers_helper/."""
    (root / "diffusers_helper").mkdir(parents=True)
    (root / "demo_gradio.py").write_text("# FramePack's app\n")
    return root


def test_framepack_folders_hf_download_is_looked_in_as_framepack_does(tmp_path, monkeypatch):
    """demo_gradio.py sets HF_HOME to its hf_download: with FramePack's folder known
    (--framepack-dir, or run from it) and no HF_HOME, a repo source is found there, then in the
    default cache; an error says where it looked, in one line. With HF_HOME set, that alone."""
    import huggingface_hub.constants as hc

    for var in ("HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(FRAMEPACK_DIR_ENV, "")  # unset; restored after the test
    default = tmp_path / "default-hub"
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(default))
    framepack = _framepack_folder(tmp_path / "FramePack")
    weights = save_tiny("siglip_image", tmp_path / "w", seed=3)
    _fake_hub_cache(framepack / "hf_download" / "hub", "lllyasviel/flux_redux_bfl",
                    "image_encoder", "c" * 40, weights)
    src = Source("repo", repo="lllyasviel/flux_redux_bfl", subfolder="image_encoder")
    want = (framepack / "hf_download" / "hub" / "models--lllyasviel--flux_redux_bfl" / "snapshots"
            / ("c" * 40) / "image_encoder")

    monkeypatch.chdir(tmp_path)  # FramePack's folder not known: the default cache only
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_local_dir(src)
    assert str(default) in str(err.value) and "hf_download" not in str(err.value)

    use_framepack_dir(framepack)  # --framepack-dir
    assert resolve_local_dir(src) == want
    model = load_model(get_component("siglip_image"), src, torch.float32, "cpu", tmp_path)
    assert type(model).__name__ == "SiglipVisionModel"
    monkeypatch.setenv(FRAMEPACK_DIR_ENV, "")
    monkeypatch.chdir(framepack)  # run from FramePack's folder
    assert resolve_local_dir(src) == want

    with pytest.raises(WeightsNotFoundError) as err:
        resolve_local_dir(Source("repo", repo="lllyasviel/FramePackI2V_HY"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("hf:lllyasviel/FramePackI2V_HY is not in")
    assert f"looked in: {framepack / 'hf_download' / 'hub'} (FramePack's hf_download" in message
    assert f"; {default} (Hugging Face's default" in message and "hf download" in message

    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))  # the user's choice, alone
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_local_dir(src)
    assert f"looked in: {tmp_path / 'elsewhere' / 'hub'} ($HF_HOME))" in str(err.value)


def test_from_pretrained_sets_the_dtype_on_the_installed_libraries(tmp_path):
    """transformers took ``dtype=`` for ``torch_dtype=`` in 4.56 (FramePack pins 4.46.2, where
    ``dtype=`` reaches the model's ``__init__`` and fails); diffusers takes ``torch_dtype``.
    ``sources.from_pretrained`` loads both kinds in half precision on whichever is installed."""
    from packaging.version import Version

    from framepack_trt.device import package_version
    from framepack_trt.sources import dtype_kwargs, from_pretrained

    for name in ("clip_text", "vae_encode"):
        cls = get_component(name).load_model_class()
        folder = save_tiny(name, tmp_path / name, seed=4)
        model = from_pretrained(cls, folder, torch.float16)
        assert type(model) is cls and model.dtype == torch.float16
        assert {p.dtype for p in model.parameters()} == {torch.float16}
    new = Version(package_version("transformers")) >= Version("4.56")
    assert list(dtype_kwargs(get_component("llama_text").load_model_class(), torch.float16)) == (
        ["dtype"] if new else ["torch_dtype"])
