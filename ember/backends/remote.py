"""Running a saved bundle on another machine through TVM's RPC server: upload model.so, run the VM there."""

from __future__ import annotations

import gc
from collections.abc import Mapping

import numpy as np

from ember.errors import EmberError


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EmberError(f"bad RPC address '{address}'", hint="write HOST:PORT, e.g. 192.168.1.20:9090")
    return host, int(port)


def connect(address: str, timeout_s: float = 10.0):
    """An RPC session with the server at HOST:PORT; a dead address fails within `timeout_s`."""
    import socket

    from tvm import rpc

    host, port = parse_address(address)
    hint = "start one there with 'python -m tvm.exec.rpc_server --host 0.0.0.0 --port PORT' or fix --rpc"
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return rpc.connect(host, port, session_timeout=0)
    except (OSError, RuntimeError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e).strip().splitlines()[-1][:120]
        raise EmberError(f"cannot reach the RPC server at {address}: {reason}", hint=hint) from None


def run_remote(artifact, inputs: Mapping[str, np.ndarray], address: str) -> dict[str, np.ndarray]:
    """Upload a saved bundle's library to the RPC server at `address`, run it there on `inputs` and return
    the outputs by name, as `Artifact.run` does on the host."""
    if artifact.path is None or artifact.metadata["library"] != "model.so":
        raise EmberError("an RPC run needs a saved bundle with a linked model.so", hint="compile it with a linker")
    if artifact.device != "cpu":
        raise EmberError(f"RPC runs support CPU bundles; this one targets {artifact.device}")
    arrays = artifact._check_inputs(inputs)
    outputs = _run_in_session(connect(address), artifact.path / "model.so", arrays, artifact.output_names)
    gc.collect()  # frees the session's last remote handles, which ends it: a server serves one session at a time
    return outputs


def _run_in_session(session, library, arrays: list[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    import tvm
    from tvm import relax

    session.upload(str(library))
    dev = session.cpu()
    vm = relax.VirtualMachine(session.load_module(library.name), dev)
    vm.set_input("main", *[tvm.runtime.tensor(a, dev) for a in arrays])
    vm.invoke_stateful("main")  # a remote call's tuple result is an opaque handle; get_outputs reads fields
    result = vm.get_outputs("main")
    return {name: result[i].numpy() for i, name in enumerate(names)}
