"""Building, caching and loading the native kernels (medmoe/layers/native/build.py): failed builds are not silent,
a cached build loads without a compiler, CC may carry arguments, the cache key holds the CPU's instruction sets."""

import json
import os
import shlex
import shutil
import stat
import sys
import warnings

import pytest
import torch

from medmoe.layers.native import build
from medmoe.layers.native.build import NativeKernelError


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty cache folder and no library loaded yet in this process."""
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setenv("MEDMOE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "kernels"


def _no_compiler(monkeypatch, tmp_path) -> None:
    """A machine without a C compiler: PATH has nothing on it, CC is unset."""
    empty = tmp_path / "empty_bin"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(build, "_state", {})


def _fake_compiler(tmp_path, log_name: str = "args.txt"):
    """A "compiler" script that records its arguments and fails."""
    script, log = tmp_path / "fake-cc", tmp_path / log_name
    script.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\necho "fake-cc: no" >&2\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def test_a_failed_build_warns_once_in_auto_and_raises_in_on(monkeypatch, tmp_path, fresh):
    script, _ = _fake_compiler(tmp_path)  # a "compiler" that always fails
    monkeypatch.setenv("CC", str(script))
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")
    x = torch.zeros(2, 3)
    with pytest.warns(UserWarning, match="unavailable, using PyTorch's.*fake-cc failed"):
        assert not build.available_for(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not build.available_for(x)  # no second warning
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "on")
    with pytest.raises(NativeKernelError, match="fake-cc failed"):
        build.available_for(x)
    assert not list(fresh.parent.rglob("*.so"))  # nothing half-built left in the cache
    with pytest.raises(NativeKernelError, match="fake-cc failed"):  # a compiler that fails is an error, not a skip
        build.unavailable_reason()


def test_a_failed_build_keeps_no_tensors_alive(monkeypatch, tmp_path, fresh):
    """The remembered error holds no traceback: the frames of the call that failed (and their tensors) are freed."""
    _no_compiler(monkeypatch, tmp_path)
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")
    x = torch.zeros(3)
    refs = sys.getrefcount(x)
    with pytest.warns(UserWarning, match="no C compiler"):
        assert not build.available_for(x)
    assert not build.available_for(x)
    assert sys.getrefcount(x) == refs


def test_mode_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        build.mode()
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "off")
    assert not build.available_for(torch.zeros(2))


def test_without_a_compiler_the_kernels_are_reported_missing_not_broken(monkeypatch, tmp_path, fresh):
    """Where no compiler exists and nothing is cached: a reason to skip, a warning in auto, an error in on."""
    _no_compiler(monkeypatch, tmp_path)
    assert build.compiler_command() is None
    reason = build.unavailable_reason()
    assert reason is not None and "no C compiler found" in reason
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")
    monkeypatch.setattr(build, "_state", {})
    with pytest.warns(UserWarning, match="no C compiler found"):
        assert not build.available_for(torch.zeros(2))
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "on")
    with pytest.raises(NativeKernelError, match="no C compiler found.*no kernels for this CPU are cached"):
        build.available_for(torch.zeros(2))
    monkeypatch.setenv("CC", str(tmp_path / "nowhere" / "cc"))
    monkeypatch.setattr(build, "_state", {})
    with pytest.raises(NativeKernelError, match="CC=.*nowhere.*names no program"):
        build.load_library()


def test_the_build_is_cached_with_what_built_it(native_kernels, monkeypatch, fresh):
    lib = build.load_library()
    built = list(fresh.glob("medmoe_kernels-*.so"))
    assert len(built) == 1 and build.load_library() is lib
    meta = json.loads(built[0].with_suffix(".json").read_text())
    assert meta["compiler"] == build.compiler_command() and meta["flags"] == list(
        build.compile_flags(meta["cpu_features"])
    )
    mtime = built[0].stat().st_mtime_ns
    monkeypatch.setattr(build, "_state", {})
    build.load_library()  # a new process finds the built file
    assert built[0].stat().st_mtime_ns == mtime


def test_a_cached_build_loads_without_a_compiler(native_kernels, monkeypatch, tmp_path, fresh):
    build.load_library()  # built with the compiler into the fresh cache
    width = build.load_library().medmoe_routing_vector_width()
    _no_compiler(monkeypatch, tmp_path)
    assert build.compiler_command() is None
    assert build.unavailable_reason() is None
    assert build.load_library().medmoe_routing_vector_width() == width
    monkeypatch.setenv("CC", str(tmp_path / "nowhere" / "cc"))  # CC pointing to nothing
    monkeypatch.setattr(build, "_state", {})
    assert build.load_library().medmoe_routing_vector_width() == width
    monkeypatch.setattr(build, "cpu_features", lambda: "another cpu")  # not built for this CPU: not loaded
    monkeypatch.setattr(build, "_state", {})
    with pytest.raises(NativeKernelError, match="no kernels for this CPU are cached"):
        build.load_library()


def test_cc_is_split_like_a_shell_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "ccache" else None)
    monkeypatch.setenv("CC", "ccache gcc -m64")
    assert build.compiler_command() == ["ccache", "gcc", "-m64"]
    monkeypatch.setenv("CC", "'/opt/my cc/bin/cc'")  # quoted: one program whose path has a space
    assert build.compiler_command() is None  # that program is not found (which() sees the whole path)
    monkeypatch.setenv("CC", "'gcc")
    with pytest.raises(NativeKernelError, match="not a valid command"):
        build.compiler_command()


@pytest.mark.skipif(shutil.which("env") is None, reason="needs the env program to wrap the compiler")
def test_a_compiler_command_with_arguments_builds(native_kernels, monkeypatch, fresh):
    compiler = build.compiler_command()
    monkeypatch.setenv("CC", "env " + shlex.join(compiler))
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "on")
    assert build.available_for(torch.zeros(2))
    (meta,) = [json.loads(path.read_text()) for path in fresh.glob("medmoe_kernels-*.json")]
    assert meta["compiler"] == ["env", *compiler]


def test_a_failed_build_names_the_whole_compiler_command(monkeypatch, tmp_path, fresh):
    script, _ = _fake_compiler(tmp_path)
    monkeypatch.setenv("CC", f"{script} --target=something")
    with pytest.raises(NativeKernelError, match=r"(?s)fake-cc --target=something failed.*fake-cc: no"):
        build.load_library()


def test_the_cpu_features_are_read_on_linux_and_macos(monkeypatch):
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: sse2 avx2 fma avx\nbogomips\t: 4000\n"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"
    assert build.features_from_cpuinfo(x86) == "avx avx2 fma sse2"
    assert build.features_from_cpuinfo(arm) == "asimd fp sve"
    assert build.features_from_cpuinfo("processor\t: 0\ncpu MHz\t: 1000\n") is None

    class Sysctl:
        stdout = "hw.optional.neon: 1\nhw.optional.arm.FEAT_BF16: 1\n"

    monkeypatch.setattr(build.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(build.subprocess, "run", lambda *args, **kwargs: Sysctl())
    assert build.cpu_features() == "hw.optional.arm.FEAT_BF16: 1\nhw.optional.neon: 1"
    monkeypatch.setattr(build.platform, "system", lambda: "Windows")
    assert build.cpu_features() is None


def test_the_key_holds_the_cpu_features_and_unknown_features_build_portably(monkeypatch, tmp_path, fresh):
    flags = build.compile_flags("avx2 fma")
    assert build.build_key(flags, "avx2 fma") != build.build_key(flags, "avx2 avx512f fma")
    assert "-march=native" in flags and "-march=native" not in build.compile_flags(None)
    assert build.build_key(build.compile_flags(None), None) != build.build_key(flags, "avx2 fma")

    script, log = _fake_compiler(tmp_path)
    monkeypatch.setenv("CC", str(script))
    for features in ("avx2 fma", None):
        monkeypatch.setattr(build, "cpu_features", lambda features=features: features)
        monkeypatch.setattr(build, "_state", {})
        with pytest.raises(NativeKernelError, match="failed"):
            build.load_library()
    with_features, without = [line for line in log.read_text().splitlines() if line != "--version"]
    assert "-march=native" in with_features.split() and "-march=native" not in without.split()

    # a cache shared by machines: an entry is loaded only on a CPU with the features it was built for
    _no_compiler(monkeypatch, tmp_path)
    monkeypatch.setattr(build, "cpu_features", lambda: "avx2 fma")
    fresh.mkdir(parents=True, exist_ok=True)
    entry = fresh / f"medmoe_kernels-{build.build_key(flags, 'avx2 fma')}-0123456789abcdef.so"
    entry.write_bytes(b"")
    assert build.library_path() == entry
    monkeypatch.setattr(build, "cpu_features", lambda: "avx2 avx512f fma")
    with pytest.raises(NativeKernelError, match="no kernels for this CPU"):
        build.library_path()
    assert os.path.exists(entry)
