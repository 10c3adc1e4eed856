"""The AOTInductor backend's packages carry their own C++ runtime: the wrapper library links
libstdc++ and libgcc statically with hidden symbols, so the load no longer depends on which
copies of libstdc++ code the loading process exports (torch 2.11 on CUDA segfaulted in
``aoti_load_package`` without this; docs/aoti-cuda.md). Checked on the engine the CLI built."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile

import pytest
from conftest import siglip_with_torchs_own_loader

from framepack_trt.cache import Cache

needs_readelf = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils' readelf")


def _entry(cache):
    return next(iter(Cache(cache).entries().values()))


@needs_readelf
def test_wrapper_library_has_its_own_libstdcxx(built_cache, tmp_path):
    _, cache = built_cache
    package = cache / _entry(cache).engine.file
    zipfile.ZipFile(package).extractall(tmp_path)
    wrappers = list(tmp_path.rglob("*wrapper.so"))
    assert wrappers, "no wrapper library in the package"
    for so in wrappers:
        dynamic = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True,
                                 check=True).stdout
        needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
        assert needed and not any("libstdc++" in n or "libgcc_s" in n for n in needed), needed
        assert "SYMBOLIC" in dynamic  # -Bsymbolic: its own definitions bind to itself


def test_package_loads_with_torchs_own_loader(built_cache):
    """A plain process that imported torch first, no LD_PRELOAD, torch's loader, not ours."""
    _, cache = built_cache
    assert siglip_with_torchs_own_loader(cache, "cpu") < 1e-4


_OUR_LOAD = r"""
import sys, torch
from pathlib import Path
from safetensors.torch import load_file
from torch._inductor.cpu_vec_isa import valid_vec_isa_list
from framepack_trt.backends.aoti import AotiBackend
engine = AotiBackend().load(Path(sys.argv[1]), "cpu")
g = load_file(sys.argv[2])
with torch.no_grad():
    (out,) = engine(g["0.input.pixel_values"])
ref = g["0.output.last_hidden_state"]
print(float((out - ref).norm() / ref.norm()), out.is_inference(), valid_vec_isa_list.cache_info().misses)
"""


def test_engine_loads_in_a_fresh_process_without_inductors_cpu_probe(built_cache):
    """The backend's loader in a fresh process: the engine matches its golden sample, returns an
    ordinary tensor (not an inference tensor), and inductor's CPU ISA probe (``pick_vec_isa``,
    which compiles and loads test programs: seconds per process, tens on a GPU machine) never
    ran; torch's own ``aoti_load_package`` runs it at every first load."""
    import sys

    _, cache = built_cache
    entry = _entry(cache)
    proc = subprocess.run([sys.executable, "-c", _OUR_LOAD, str(cache / entry.engine.file),
                           str(cache / entry.golden.file)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rel, inference, probes = proc.stdout.split()
    assert float(rel) < 1e-4 and inference == "False" and probes == "0", proc.stdout


def test_a_package_for_other_cpu_instructions_or_gpu_is_refused_by_name():
    """What a package needs of the host, from its metadata: the vector ISA its C++ was
    compiled with (from the CPU's feature bits, as torch reads them) and, for CUDA, the compute
    capability; the package's own ISA passes."""
    import platform

    from torch._inductor.cpu_vec_isa import x86_isa_checker

    from framepack_trt.backends.aoti_host import host_problem

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 ISA names")
    have = x86_isa_checker()
    assert host_problem({"AOTI_CPU_ISA": " ".join(have).upper(), "AOTI_DEVICE_KEY": "cpu"}) is None
    assert host_problem({"AOTI_CPU_ISA": "INVALID_VEC_ISA", "AOTI_DEVICE_KEY": "cpu"}) is None
    problem = host_problem({"AOTI_CPU_ISA": "AVX1024", "AOTI_DEVICE_KEY": "cpu"})
    assert problem and "compiled for CPU instructions AVX1024, which this CPU lacks" in problem


def test_nd_tiling_sets_inductor_options_that_exist():
    """``nd_tiling`` is an engine field (a different key) and names inductor options this torch
    has: a renamed option fails here, not in the middle of a build (inductor's patch refuses
    unknown names)."""
    import torch._inductor.config as inductor_config

    from framepack_trt.backends.aoti import AotiSettings

    plain, tiled = AotiSettings(), AotiSettings(nd_tiling=True)
    assert plain.engine_fields() != tiled.engine_fields()
    extra = {k: v for k, v in tiled.inductor_configs().items()
             if k not in plain.inductor_configs()}
    assert extra == {"triton.prefer_nd_tiling": True, "triton.max_tiles": 3}
    with inductor_config.patch(tiled.inductor_configs()):
        assert inductor_config.triton.prefer_nd_tiling and inductor_config.triton.max_tiles == 3
    assert AotiSettings(compile_threads=2).inductor_configs()["compile_threads"] == 2


def test_tune_pointwise_sets_inductor_options_that_exist():
    """``tune_pointwise``: an engine field, and inductor's pointwise autotuning with coordinate
    descent, options this torch has."""
    import torch._inductor.config as inductor_config

    from framepack_trt.backends.aoti import AotiSettings

    plain, tuned = AotiSettings(), AotiSettings(tune_pointwise=True)
    assert plain.engine_fields() != tuned.engine_fields()
    extra = {k: v for k, v in tuned.inductor_configs().items()
             if k not in plain.inductor_configs()}
    assert extra == {"max_autotune_pointwise": True, "coordinate_descent_tuning": True}
    with inductor_config.patch(tuned.inductor_configs()):
        assert inductor_config.max_autotune_pointwise and inductor_config.coordinate_descent_tuning


def test_share_weights_vae_engines_run_on_the_models_own_tensors(tmp_path, worker_engines):
    """``build: {share_weights: true}`` (the VAE engines of FramePack's worker tests, as
    profiles/framepack.yaml builds them): the package's compiled code holds no weights. Alone
    (``verify``) it runs on the copy stored in the package; swapped in by ``use_engines`` it
    runs on the model's own tensors, not a copy: a weight changed in place, or given new
    storage, changes the engine's output as it changes eager's. Decoder and encoder."""
    import copy

    import torch
    from conftest import cli, weights_folder
    from diffusers import AutoencoderKLHunyuanVideo
    from tests_helpers import rel_l2

    from framepack_trt.backends.aoti import WEIGHTS_MEMBER, AotiBackend
    from framepack_trt.framepack import EngineFallback, use_engines

    cache = tmp_path / "cache"
    shutil.copytree(worker_engines, cache)  # verify records its results in the cache
    vae_names = ["vae_decode", "vae_decode_two", "vae_encode"]
    r = cli("verify", "--cache-dir", str(cache), *(a for n in vae_names for a in ("-c", n)),
            check=True)  # each on its package's copy
    assert "3 passed, 0 failed" in r.stdout, r.stdout
    listed = {e["name"]: e for e in
              json.loads(cli("list", "--cache-dir", str(cache), "--json", check=True).stdout)["entries"]}
    assert all(listed[n]["build"]["share_weights"] is True for n in vae_names)
    assert "[share_weights]" in cli("list", "--cache-dir", str(cache), check=True,
                                    env={"COLUMNS": "300"}).stdout
    entries = {e.name: e for e in Cache(cache).entries().values()}
    package = cache / entries["vae_decode"].engine.file
    with zipfile.ZipFile(package) as zf:
        assert any(n.endswith(WEIGHTS_MEMBER) for n in zf.namelist())
    assert AotiBackend().load(package, "cpu").weight_names  # the weights it runs on

    # the checkpoint the engines were built from
    vae = AutoencoderKLHunyuanVideo.from_pretrained(weights_folder(cache, "vae")).eval()
    reference = copy.deepcopy(vae)  # eager, changed the same way
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(1, 16, 9, 16, 20, generator=generator)  # decoded in windows of 5, 5, 3
    x = torch.rand(1, 3, 1, 128, 160, generator=generator) * 2 - 1

    def run(model):
        with torch.no_grad():
            return model.decode(z).sample, model.encode(x).latent_dist.parameters

    def holders(t):  # references to a tensor's storage
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata)

    conv_in = vae.decoder.conv_in.conv.weight
    held = holders(conv_in)
    engines = use_engines(cache, strict=True, vae=vae)
    try:
        outputs = [(run(vae), run(reference))]
        # The engine reads the weight's memory but holds no reference to it: moved away, the
        # model's old storage is freed.
        assert holders(conv_in) == held
        for model in (vae, reference):  # in place
            with torch.no_grad():
                model.decoder.conv_in.conv.weight.mul_(1.5)
                model.encoder.conv_in.conv.weight.mul_(1.5)
        outputs.append((run(vae), run(reference)))
        for model in (vae, reference):  # new storage, as a move between devices gives
            for w in (model.decoder.conv_out.conv.weight, model.encoder.conv_out.conv.weight):
                w.data = w.data * -0.5
        outputs.append((run(vae), run(reference)))
        served = engines.served()
        # Weights it cannot run on (another dtype): strict, so it says why instead of eager.
        vae.decoder.conv_out.conv.weight.data = vae.decoder.conv_out.conv.weight.data.double()
        with pytest.raises(EngineFallback, match=r"conv_out\.conv\.weight is float64 .* built "
                           r"for float32"):
            run(vae)
    finally:
        engines.restore()
    assert served["vae_decode"] == {"vae_decode": 9}  # 3 windows, 3 times
    assert served["vae_encode"] == {"vae_encode": 3}
    for got, want in outputs:
        for g, w in zip(got, want, strict=True):
            assert rel_l2(g, w) < 1e-5, rel_l2(g, w)
    for part in (0, 1):  # the changes changed the output, the decoder's and the encoder's
        assert rel_l2(outputs[1][1][part], outputs[0][1][part]) > 1e-2
        assert rel_l2(outputs[2][1][part], outputs[1][1][part]) > 1e-2


#: A child's start: inductor's test programs counted as they compile.
_COUNTED = r"""
import sys
import torch._inductor.cpu_vec_isa as isa_module
from framepack_trt.backends.aoti_host import known_vec_isa, no_vec_isa
calls = []
probe = isa_module.VecISA.check_build
def counted(self, code):
    calls.append(str(self))
    return probe(self, code)
isa_module.VecISA.check_build = counted
"""
_PROBE = _COUNTED + r"""
with known_vec_isa(sys.argv[1]) as isa:
    print(isa, len(calls))
"""


def test_inductors_cpu_probe_runs_once_per_machine(tmp_path):
    """The build's compile needs the CPU's vector ISA: the first building process probes it
    (compiles test programs) and records the answer in the cache's state folder; the next one
    takes the same answer from the CPU's feature bits without compiling anything."""
    import platform
    import sys

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the probe compiles only for x86 ISAs")
    state = tmp_path / "state"

    def run():
        proc = subprocess.run([sys.executable, "-c", _PROBE, str(state)], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        isa, calls = proc.stdout.split()[-2:]
        return isa, int(calls)

    first, probes = run()
    assert probes > 0 and (state / "vec_isa.json").is_file()
    again, probes_again = run()
    assert (again, probes_again) == (first, 0)
    (answers,) = json.loads((state / "vec_isa.json").read_text()).values()
    assert len(answers) == probes and any(answers.values())
    # Another machine (another key) in the record: this one's answers are found apart.
    (state / "vec_isa.json").write_text(json.dumps({"another-machine": {}}))
    third, probes_third = run()
    assert (third, probes_third) == (first, probes)
    record = json.loads((state / "vec_isa.json").read_text())
    assert len(record) == 2 and record["another-machine"] == {}


_CUDA_THEN_CPU = _COUNTED + r"""
with no_vec_isa():
    print(isa_module.pick_vec_isa(), len(calls))
with known_vec_isa(sys.argv[1]) as isa:
    print(isa, len(calls))
"""


def test_cuda_packages_skip_the_cpu_probe_and_cpu_builds_still_get_their_isa(tmp_path):
    """A CUDA build compiles its wrapper for no vector ISA, without compiling a test program;
    a CPU build later in the same process (a profile of both) still gets the CPU's ISA, the
    one a process that never built for CUDA gets."""
    import platform
    import sys

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the probe compiles only for x86 ISAs")
    proc = subprocess.run([sys.executable, "-c", _CUDA_THEN_CPU, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Each line: the ISA's name (its flags, space-separated), then the test programs so far.
    (cuda_isa, cuda_calls), (cpu_isa, cpu_calls) = (
        line.rsplit(" ", 1) for line in proc.stdout.strip().splitlines()[-2:])
    assert (cuda_isa, cuda_calls) == ("INVALID_VEC_ISA", "0")
    alone = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "other-state")],
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-2000:]
    alone_isa, alone_calls = alone.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert cpu_isa == alone_isa and cpu_isa != "INVALID_VEC_ISA"
    assert int(cpu_calls) == int(alone_calls) > 0
