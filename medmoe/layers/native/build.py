"""Build, cache and load the native CPU kernels (the C files in this folder) with ctypes.

The sources are compiled on first use with the system C compiler into one shared library in
``<cache root>/kernels/`` (``$MEDMOE_CACHE`` or ``~/.cache/medmoe``) and loaded with ctypes. The kernels run on the
OpenMP threads PyTorch already uses.

Compiler: ``$CC`` split as a shell splits it (``CC="ccache gcc"`` runs ``ccache`` with ``gcc`` as its first
argument), else ``cc`` or ``gcc`` on ``PATH``.

A cache entry is ``medmoe_kernels-<build key>-<compiler key>.so`` with a JSON file beside it that records what built
it (compiler command and version, flags, CPU features):

* the build key hashes the sources, the flags and the CPU (machine and instruction-set features), so a library built
  with ``-march=native`` is only loaded on a CPU with the same features, also from a cache folder shared by machines;
* the compiler key hashes the compiler command and its ``--version``: another compiler builds its own entry. With no
  compiler at all (a deployment image), the newest entry with the same build key is loaded.

CPU features come from the ``flags`` (x86) or ``Features`` (ARM) line of ``/proc/cpuinfo`` on Linux and from
``sysctl`` on macOS (``machdep.cpu.*features`` on Intel, ``hw.optional`` on Apple silicon). Where they cannot be
determined (Windows, other systems, a failed probe) the library is built without ``-march=native``: portable code
for the compiler's baseline of the machine.

``MEDMOE_NATIVE_KERNELS`` chooses: ``auto`` (default: the kernels are used where they help; if they cannot be built or
loaded, one warning names the compiler command and the error, and PyTorch's kernels run), ``off`` (never), ``on``
(a failed build is an error).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from medmoe.utils import atomic_write, atomic_write_text, default_cache_root

__all__ = [
    "NativeKernelError",
    "available_for",
    "build_key",
    "compile_flags",
    "compiler_command",
    "cpu_features",
    "load_library",
    "mode",
    "unavailable_reason",
]

_HERE = Path(__file__).parent
SOURCES = (_HERE / "expert_mlp.c", _HERE / "soft_routing.c")
"""Compiled together into one library: the expert layers (:mod:`.experts`) and Soft MoE routing (:mod:`.routing`)."""
HEADERS = (_HERE / "native_gemm.h",)
BASE_FLAGS = ("-O3", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c99")
NATIVE_ARCH_FLAG = "-march=native"
"""Added to :data:`BASE_FLAGS` only where :func:`cpu_features` knows the CPU's instruction sets (part of the key)."""

_state: dict[str, object] = {}


class NativeKernelError(RuntimeError):
    """The native kernels could not be built or loaded."""


def mode() -> str:
    """``MEDMOE_NATIVE_KERNELS``: ``auto`` (default), ``on`` or ``off``.

    Raises:
        ValueError: any other value.
    """
    value = os.environ.get("MEDMOE_NATIVE_KERNELS", "auto").strip().lower()
    if value not in ("auto", "on", "off"):
        raise ValueError(f"MEDMOE_NATIVE_KERNELS must be auto, on or off, got {value!r}")
    return value


def compiler_command() -> list[str] | None:
    """The C compiler command: ``$CC`` split like a shell (``"ccache gcc"`` -> ``["ccache", "gcc"]``), else ``cc``
    or ``gcc`` from ``PATH``; None where its program is not found.

    Raises:
        NativeKernelError: ``$CC`` is not a valid shell command (an unclosed quote).
    """
    cc = os.environ.get("CC", "").strip()
    if cc:
        try:
            argv = shlex.split(cc)
        except ValueError as exc:
            raise NativeKernelError(f"CC={cc!r} is not a valid command ({exc}); quote as in a shell") from None
        return argv if argv and shutil.which(argv[0]) else None
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def _no_compiler() -> str:
    cc = os.environ.get("CC", "").strip()
    if cc:
        return f"no C compiler found: CC={cc!r} names no program on PATH"
    return "no C compiler found (set CC or install gcc)"


def features_from_cpuinfo(text: str) -> str | None:
    """The instruction-set line of a Linux ``/proc/cpuinfo``: ``flags`` (x86), ``Features`` (ARM), ``isa``
    (RISC-V) or ``features`` (s390x) of the first CPU, its words sorted; None when there is none."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features", "isa", "features") and value.strip():
            return " ".join(sorted(set(value.split())))
    return None


def _macos_features() -> str | None:
    names = ("machdep.cpu.features", "machdep.cpu.leaf7_features", "machdep.cpu.extfeatures", "hw.optional")
    try:  # unknown names (Intel-only or ARM-only) are reported on stderr; the known ones still print
        out = subprocess.run(["sysctl", *names], capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = sorted(line.strip() for line in out.splitlines() if "features" in line or line.startswith("hw.optional"))
    return "\n".join(lines) or None


def cpu_features() -> str | None:
    """The CPU's instruction sets as a stable string, or None where they cannot be determined (see the module)."""
    system = platform.system()
    if system == "Linux":
        try:
            return features_from_cpuinfo(Path("/proc/cpuinfo").read_text())
        except OSError:
            return None
    if system == "Darwin":
        return _macos_features()
    return None


def compile_flags(features: str | None) -> tuple[str, ...]:
    """The compiler flags: :data:`BASE_FLAGS`, with ``-march=native`` only when the CPU's features are known."""
    return BASE_FLAGS[:1] + ((NATIVE_ARCH_FLAG,) if features else ()) + BASE_FLAGS[1:]


def _digest(*parts: str | bytes) -> str:
    return hashlib.sha256(b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()[:16]


def build_key(flags: tuple[str, ...], features: str | None) -> str:
    """What the built library depends on apart from the compiler: sources, flags, machine and CPU features."""
    source = b"\0".join(path.read_bytes() for path in SOURCES + HEADERS)
    return _digest(source, " ".join(flags), platform.system(), platform.machine(), features or "unknown")


def _compiler_version(compiler: list[str]) -> str:
    try:
        result = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def _build(compiler: list[str], flags: tuple[str, ...], features: str | None, target: Path) -> None:
    def compile_to(path: str) -> None:
        files = [str(source) for source in SOURCES]
        try:
            result = subprocess.run([*compiler, *flags, *files, "-o", path], capture_output=True, text=True)
        except OSError as exc:
            raise NativeKernelError(f"the C compiler {shlex.join(compiler)} could not run: {exc}") from None
        if result.returncode != 0:
            raise NativeKernelError(f"{shlex.join(compiler)} failed on {' '.join(files)}:\n{result.stderr.strip()}")

    atomic_write(target, compile_to)  # concurrent builders (DDP ranks) end with one complete file
    meta = {
        "compiler": compiler,
        "compiler_version": _compiler_version(compiler),
        "flags": list(flags),
        "machine": platform.machine(),
        "cpu_features": features,
        "sources": [path.name for path in SOURCES + HEADERS],
    }
    atomic_write_text(target.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")


def library_path() -> Path:
    """The cache entry for this CPU, built first when a compiler is found and the entry is missing.

    Raises:
        NativeKernelError: no compiler and no entry for this CPU, or a failed compile (the message names the
            compiler command and its error).
    """
    features = cpu_features()
    flags = compile_flags(features)
    key = build_key(flags, features)
    folder = default_cache_root() / "kernels"
    compiler = compiler_command()
    if compiler is None:  # a built library for this CPU and these sources still loads
        built = sorted(folder.glob(f"medmoe_kernels-{key}-*.so"), key=lambda path: path.stat().st_mtime_ns)
        if built:
            return built[-1]
        raise NativeKernelError(f"{_no_compiler()}, and no kernels for this CPU are cached in {folder}")
    target = folder / f"medmoe_kernels-{key}-{_digest(shlex.join(compiler), _compiler_version(compiler))}.so"
    if not target.is_file():
        _build(compiler, flags, features, target)
    return target


def load_library() -> ctypes.CDLL:
    """Build (once per machine and compiler) or find in the cache, and load, the kernels; declares argument types.

    Raises:
        NativeKernelError: no C compiler and nothing cached, a failed compile or a library that does not load; the
            message says which. The error is remembered: later calls raise it again without retrying.
    """
    if "lib" in _state:
        return _state["lib"]
    if "error" in _state:  # a new exception each time: a kept one would hold its traceback's frames (and tensors)
        raise NativeKernelError(_state["error"])
    try:
        lib = ctypes.CDLL(str(library_path()))
    except (OSError, NativeKernelError) as exc:
        _state["error"] = str(exc) if isinstance(exc, NativeKernelError) else f"loading failed: {exc}"
        raise NativeKernelError(_state["error"]) from None
    c_int, c_long, c_float, ptr = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p
    strided = [ptr, c_long, c_long]  # data, expert stride, row stride
    lib.medmoe_linear_backward.argtypes = [c_int] * 4 + strided * 2 + [ptr] + strided + [ptr, ptr]
    lib.medmoe_linear_backward.restype = c_int
    lib.medmoe_linear_forward.argtypes = [c_int] * 4 + strided + [ptr, ptr] + [ptr, c_long, c_long]
    lib.medmoe_linear_forward.restype = None
    sizes = [c_int] * 6  # Soft MoE routing: g, b, m, d, e, s
    lib.medmoe_routing_vector_width.restype = c_int
    lib.medmoe_routing_forward.argtypes = sizes + [c_float] + [ptr] * 7
    lib.medmoe_combine_forward.argtypes = sizes + [ptr] * 3
    lib.medmoe_combine_backward.argtypes = sizes + [ptr] * 5
    lib.medmoe_dispatch_backward.argtypes = sizes + [c_float] + [ptr] * 9
    for name in ("routing_forward", "combine_forward", "combine_backward", "dispatch_backward"):
        getattr(lib, f"medmoe_{name}").restype = c_int
    _state["lib"] = lib
    return lib


def available_for(x: torch.Tensor) -> bool:
    """Whether the native kernels can take ``x``: a float32 CPU tensor, ``MEDMOE_NATIVE_KERNELS`` not ``off``, and
    the library loaded (in ``auto`` a failure warns once, naming the compiler command and the error, and gives False;
    in ``on`` it raises :class:`NativeKernelError`)."""
    current = mode()
    if current == "off" or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    try:
        load_library()
    except NativeKernelError as exc:
        if current == "on":
            raise
        if not _state.get("warned"):
            _state["warned"] = True
            warnings.warn(f"medmoe native kernels unavailable, using PyTorch's: {exc}", stacklevel=3)
        return False
    return True


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used on this machine for want of a compiler, or None when they load.

    For callers that can do without them (the tests skip with this reason).

    Raises:
        NativeKernelError: a compiler is there but the build or the load failed (a real error, not a missing tool).
    """
    try:
        load_library()
    except NativeKernelError as exc:
        if compiler_command() is None:
            return f"the native kernels need a C compiler or a cached build: {exc}"
        raise
    return None
