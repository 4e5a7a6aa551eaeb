"""The compiled artifact: a library for the target plus metadata.json, saved atomically as a bundle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes

METADATA = "metadata.json"
REQUIRED_KEYS = ("format", "inputs", "outputs", "target", "library")
FORMAT = "ember-bundle/1"
_ELF_MACHINE = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "armv7", 0xF3: "riscv64"}
_DLPACK_ALIGN = 64  # TVM imports DLPack data only at this alignment


def to_tvm_tensor(array: np.ndarray):
    """`array` as a host TVM tensor through DLPack: shared when aligned and writable, else one aligned copy.
    `tvm.runtime.tensor` costs 60-110 us per call, more than a small model's whole run."""
    import tvm

    address = array.__array_interface__["data"][0]  # .ctypes.data costs ~10 us
    if address % _DLPACK_ALIGN or not array.flags.writeable or not array.flags.c_contiguous:
        buf = np.empty(array.nbytes + _DLPACK_ALIGN, np.uint8)
        start = -buf.__array_interface__["data"][0] % _DLPACK_ALIGN
        aligned = buf[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
        aligned[...] = array
        array = aligned
    return tvm.runtime.from_dlpack(array)


def from_tvm_tensor(tensor) -> np.ndarray:
    """A numpy copy of a host TVM tensor (through DLPack; `Tensor.numpy()` costs ~25 us per call)."""
    return np.array(np.from_dlpack(tensor))


def elf_arch(path: Path) -> str | None:
    """CPU architecture an ELF file was built for, or None if it is not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_MACHINE.get(machine, f"elf-machine-{machine:#x}")


class Artifact:
    """A compiled model: run it on the host, save it as a bundle, or load one back with `ember.load`."""

    def __init__(
        self,
        metadata: dict[str, Any],
        executable: Any = None,
        path: Path | None = None,
        sources: dict[str, str] | None = None,
    ):
        self.metadata = metadata
        self._executable = executable
        self.path = path
        self.sources = sources or {}
        self.extra_files: dict[str, str] = {}  # more text files for the bundle, by name (quant_report.json)
        self.quant_report = None  # ember.passes.quantize.QuantReport when compiled with quantize=
        self.graph = None  # the optimized Ember IR, for artifacts compiled in this process
        self.pass_records: list = []
        self._vm = None
        self._main = None  # the VM's main function, looked up once
        self._input_specs: dict[str, tuple[np.dtype, dict]] | None = None

    # ---- description --------------------------------------------------------------------
    @property
    def executable(self):
        """TVM's VM executable for an artifact compiled in this process (None for a loaded bundle)."""
        return self._executable

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.metadata["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.metadata["outputs"]]

    @property
    def target(self) -> str:
        return self.metadata["target"]["name"]

    @property
    def arch(self) -> str:
        return self.metadata["target"]["arch"]

    @property
    def device(self) -> str:
        return self.metadata["target"]["device"]

    def __repr__(self) -> str:
        return f"<Artifact {self.metadata.get('model', {}).get('name', '?')} for {self.target}>"

    # ---- running ------------------------------------------------------------------------
    def _check_inputs(self, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise EmberError(
                f"'{unknown[0]}' is not an input of this model", hint=f"inputs: {', '.join(self.input_names)}"
            )
        for name in self.input_names:
            if name not in inputs:
                raise EmberError(f"missing input '{name}'", hint=f"inputs: {', '.join(self.input_names)}")
        return [self.check_input(name, inputs[name]) for name in self.input_names]

    def check_input(self, name: str, array) -> np.ndarray:
        """`array` as this model's input `name` (contiguous), or an EmberError saying what that input must be."""
        if self._input_specs is None:
            self._input_specs = {s["name"]: (dtypes.to_numpy(s["dtype"]), s) for s in self.metadata["inputs"]}
        if name not in self._input_specs:
            raise EmberError(f"'{name}' is not an input of this model", hint=f"inputs: {', '.join(self.input_names)}")
        dtype, spec = self._input_specs[name]
        arr, shape = np.asarray(array), spec["shape"]
        if arr.dtype != dtype:
            raise EmberError(f"input '{name}' must be {spec['dtype']}, got {arr.dtype}")
        if len(arr.shape) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(shape, arr.shape)):
            raise EmberError(f"input '{name}' must have shape {shape}, got {list(arr.shape)}")
        return np.asarray(arr, order="C")  # not ascontiguousarray, which makes a 0-d input 1-d

    def host_vm(self):
        """The TVM VirtualMachine running this artifact on the host CPU (made once)."""
        import tvm
        from tvm import relax

        from ember.backends.threads import size_thread_pool
        from ember.backends.tvm.quiet import scope_notes_dropped
        from ember.backends.tvm.targets import host_arch

        if self._vm is not None:
            return self._vm
        if self.device != "cpu" or self.arch != host_arch():
            raise EmberError(
                f"this bundle targets {self.target} ({self.arch}, {self.device}); it cannot run on this "
                f"{host_arch()} host",
                hint=f"run it here under qemu with --emulate (emulate=True), or on a {self.arch} device",
            )
        if self._vm is None:
            exe = self._executable
            if exe is None:
                lib = self.path / self.metadata["library"]
                if not lib.exists():
                    raise EmberError(f"bundle library '{lib.name}' is missing", file=str(self.path))
                found = elf_arch(lib)
                if found != host_arch():
                    raise EmberError(
                        f"'{lib.name}' is built for {found or 'an unknown format'}, not {host_arch()}",
                        file=str(self.path),
                        hint="recompile with --target host",
                    )
                with scope_notes_dropped():
                    exe = tvm.runtime.load_module(str(lib))
            size_thread_pool()
            self._vm = relax.VirtualMachine(exe, tvm.cpu())
        return self._vm

    def _host_main(self):
        """The host VM's main function, looked up once (a lookup cost 1.5-3.6 us, a quarter of a 10 us run)."""
        if self._main is None:
            self._main = self.host_vm()["main"]
        return self._main

    def run(self, inputs: Mapping[str, np.ndarray], emulate: bool = False) -> dict[str, np.ndarray]:
        """Run on the host CPU; with `emulate` under qemu-user (a saved bundle for another CPU, through the C++
        runner and that CPU's TVM runtime); a saved CUDA bundle on this machine's GPU through the runner.
        Returns outputs by name, in the model's output order."""
        if emulate or self.device == "cuda":
            from ember.backends.runtime import run_bundle

            if self.path is None:
                how = "an emulated" if emulate else f"a {self.device}"
                raise EmberError(f"save the artifact before {how} run", hint="call .save(directory) first")
            outputs, _ = run_bundle(self.path, self.arch, self._check_inputs(inputs), device=self.device)
            return dict(zip(self.output_names, outputs))
        main = self._host_main()  # first: a bundle for another CPU says so before its inputs are checked
        result = main(*[to_tvm_tensor(a) for a in self._check_inputs(inputs)])
        return {name: from_tvm_tensor(result[i]) for i, name in enumerate(self.output_names)}

    def runner(self, inputs: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """A function that runs the model once on `inputs`, converted up front, for timing loops."""
        import tvm

        main, arrays = self._host_main(), [tvm.runtime.tensor(a) for a in self._check_inputs(inputs)]
        return lambda: main(*arrays)

    def benchmark(self, inputs: Mapping[str, np.ndarray], number: int = 10, repeat: int = 3) -> list[float]:
        """Per-run seconds for `repeat` batches of `number` runs each (TVM's time_evaluator)."""
        import tvm

        arrays = [tvm.runtime.tensor(a) for a in self._check_inputs(inputs)]
        vm = self.host_vm()
        timer = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat)
        return list(timer(*arrays).results)

    # ---- saving -------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike, standalone: bool = False) -> Path:
        """Write the bundle to `directory` atomically: build in a temporary folder, then rename. CPU bundles
        get the C++ runner's sources; `standalone` adds the target's TVM runtime and a runner built for it."""
        if standalone and self.device not in ("cpu", "cuda"):
            raise EmberError(
                f"standalone bundles are for CPU and CUDA targets; {self.target} runs on {self.device}",
                hint="drop --standalone; the host program loads the bundle through the TVM runtime",
            )
        out = Path(directory)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / METADATA).exists())):
            raise EmberError(
                f"refusing to replace '{out}': it exists and is not an Ember bundle",
                hint="choose a new or empty directory",
            )
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o777 & ~mask)
        except OSError as e:
            why = "it is a file, not a folder" if out.parent.is_file() else e.strerror
            raise EmberError(f"cannot write to '{out.parent}': {why}", hint="choose another -o") from None
        try:
            self._write(tmp)
            if self.device in ("cpu", "cuda"):
                from ember.backends.runtime.bundle import write_runner_files

                self.metadata["runner"] = write_runner_files(tmp, self.metadata, standalone)
            (tmp / METADATA).write_text(json.dumps(self.metadata, indent=2) + "\n")
            _replace_dir(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):  # disk full, quota: the earlier bundle is untouched
                raise EmberError(f"cannot write the bundle '{out}': {e.strerror or e}") from None
            raise
        self.path = out
        return out

    def _write(self, tmp: Path) -> None:
        if self._executable is not None:
            self._export_library(tmp)
        elif self.path is not None:
            shutil.copy2(self.path / self.metadata["library"], tmp / self.metadata["library"])
        else:
            raise EmberError("artifact has neither a built library nor a bundle to copy")
        self.metadata["library_sha256"] = sha256_file(tmp / self.metadata["library"])
        for kind, src in self.sources.items():
            from ember.backends.tvm.build import SOURCE_SUFFIX

            (tmp / f"kernels{SOURCE_SUFFIX[kind]}").write_text(src)
        for name, text in self.extra_files.items():
            (tmp / name).write_text(text)

    def _export_library(self, tmp: Path) -> None:
        from tvm.support import cc

        from ember.backends.tvm.quiet import scope_notes_dropped
        from ember.backends.tvm.targets import host_arch

        compiler = self.metadata["target"].get("linker")
        with scope_notes_dropped():
            if self.arch == host_arch():
                self._executable.export_library(str(tmp / "model.so"))
                self.metadata["library"] = "model.so"
            elif compiler:
                self._executable.export_library(str(tmp / "model.so"), fcompile=cc.cross_compiler(compiler))
                self.metadata["library"] = "model.so"
            else:
                self._executable.export_library(str(tmp / "model.tar"))
                self.metadata["library"] = "model.tar"


# reports compile options add to a bundle (ember.quantization, ember.sparsity)
REPORT_FILES = ("quant_report.json", "sparsity_report.json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _validate(metadata: Any, path: Path) -> None:
    """Check metadata.json's structure so a damaged file fails with a message, not a KeyError."""
    if not isinstance(metadata, dict):
        raise EmberError(f"{METADATA} is not a JSON object", file=str(path))
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise EmberError(f"{METADATA} lacks {', '.join(missing)}", file=str(path), hint="recompile the bundle")
    if metadata["format"] != FORMAT:
        raise EmberError(f"unknown bundle format '{metadata['format']}'", file=str(path))
    for key in ("inputs", "outputs"):
        entries = metadata[key]
        ok = isinstance(entries, list) and all(
            isinstance(e, dict)
            and isinstance(e.get("name"), str)
            and isinstance(e.get("shape"), list)
            and e.get("dtype") in dtypes.DTYPES
            for e in entries
        )
        if not ok:
            raise EmberError(f"{METADATA} has a malformed '{key}' list", file=str(path), hint="recompile the bundle")
    target = metadata["target"]
    if not isinstance(target, dict) or not all(isinstance(target.get(k), str) for k in ("name", "arch", "device")):
        raise EmberError(f"{METADATA} has a malformed 'target'", file=str(path), hint="recompile the bundle")
    lib = metadata["library"]
    if not isinstance(lib, str) or lib not in ("model.so", "model.tar"):
        raise EmberError(f"{METADATA} names an unexpected library {lib!r}", file=str(path))


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`; an existing `out` is swapped out and removed only once `new` is in place."""
    if not out.exists():
        os.rename(new, out)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(backup)
    os.rename(out, backup)
    try:
        os.rename(new, out)
    except OSError:
        os.rename(backup, out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def load(directory: str | os.PathLike) -> Artifact:
    """Open a bundle written by `Artifact.save` / `ember compile -o`."""
    path = Path(directory)
    meta_path = path / METADATA
    if not path.is_dir():
        raise EmberError("no such bundle directory", file=str(path))
    if not meta_path.exists():
        raise EmberError(
            f"not an Ember bundle: {METADATA} is missing",
            file=str(path),
            hint="compile one with 'ember compile MODEL -o DIR'",
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmberError(f"{METADATA} is not valid JSON ({e})", file=str(path)) from None
    _validate(metadata, path)
    lib = path / metadata["library"]
    if not lib.exists():
        raise EmberError(f"bundle library '{metadata['library']}' is missing", file=str(path))
    if metadata.get("library_sha256") != sha256_file(lib):
        raise EmberError(
            f"'{lib.name}' does not match the sha256 recorded in {METADATA}; the bundle was modified",
            file=str(path),
            hint="recompile the bundle",
        )
    artifact = Artifact(metadata, path=path)
    for name in REPORT_FILES:  # kept when the loaded bundle is saved again
        if (path / name).is_file():
            artifact.extra_files[name] = (path / name).read_text()
    return artifact
