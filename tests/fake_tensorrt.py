"""Test doubles of ``tensorrt`` and ``pycuda.driver``, for a machine without an NVIDIA GPU.

Not a test file: ``test_tensorrt.py`` and ``test_engine_cli.py`` install these
modules into ``sys.modules`` with ``monkeypatch``. This machine can neither
install TensorRT nor build pycuda (no GPU, no CUDA headers), so these doubles
stand in for exactly the API surface the backend uses, as TensorRT 10.3
(JetPack 6) or 11 has it: ``version`` and ``precision_flags`` switch between
the two (TensorRT 11 has no ``BuilderFlag.FP16``/``INT8``). The "engine" is a
JSON record of what was built and the "GPU" runs the ONNX file on the real
ONNX Runtime, reading and writing fake device memory, so the detector's
buffer, shape and batching code runs for real. Real GPU tests are the
``@pytest.mark.gpu`` ones.
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort


@dataclass
class FakeGpu:
    """One fake GPU with its ``tensorrt`` and ``pycuda`` modules and what they recorded."""

    version: str = "10.3.0"
    precision_flags: bool = True
    devices: int = 1
    init_error: str | None = None
    memory: dict[int, bytearray] = field(default_factory=dict)
    builds: list[dict[str, Any]] = field(default_factory=list)
    timing_caches_in: list[bytes] = field(default_factory=list)
    pushes: int = 0
    pops: int = 0
    detached: int = 0
    executions: list[tuple[int, ...]] = field(default_factory=list)
    refuse_engine: bool = False
    trt: types.ModuleType = field(init=False)
    pycuda: types.ModuleType = field(init=False)
    driver: types.ModuleType = field(init=False)

    def __post_init__(self) -> None:
        self.trt = _tensorrt_module(self)
        self.driver = _driver_module(self)
        self.pycuda = types.ModuleType("pycuda")
        self.pycuda.driver = self.driver  # type: ignore[attr-defined]

    def install(self, monkeypatch: Any) -> FakeGpu:
        """Put the fake modules into ``sys.modules`` for the test."""
        monkeypatch.setitem(sys.modules, "tensorrt", self.trt)
        monkeypatch.setitem(sys.modules, "pycuda", self.pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.driver)
        return self


# --- tensorrt ------------------------------------------------------------------------------

class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _tensorrt_module(gpu: FakeGpu) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = gpu.version  # type: ignore[attr-defined]

    class ILogger:
        def __init__(self) -> None:
            pass

    flags = {"TF32": _Enum("TF32")}
    if gpu.precision_flags:
        flags |= {"FP16": _Enum("FP16"), "INT8": _Enum("INT8")}
    builder_flag = type("BuilderFlag", (), flags)
    memory_pool = type("MemoryPoolType", (), {"WORKSPACE": _Enum("WORKSPACE")})
    io_mode = type("TensorIOMode", (), {"INPUT": _Enum("INPUT"), "OUTPUT": _Enum("OUTPUT")})

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[Tensor] = []
            self.onnx: str | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any) -> None:
            self.network = network
            self.errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            if any(n.op_type == "Unique" for n in model.graph.node):
                self.errors = ["In node 0 (Unique): UNSUPPORTED_NODE"]
                return False
            inits = {i.name for i in model.graph.initializer}
            for value in model.graph.input:
                if value.name not in inits:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                                 for d in value.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(value.name, dims))
            self.network.onnx = path
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[list[int]]] = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes[name] = [list(low), list(opt), list(high)]

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = bytes(data)

        def serialize(self) -> bytes:
            return self.data + b"+timing"

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: list[str] = []
            self.profiles: list[Profile] = []
            self.pool: int | None = None
            self.cache: TimingCache | None = None

        def set_flag(self, flag: _Enum) -> None:
            self.flags.append(flag.name)

        def set_memory_pool_limit(self, pool: _Enum, size: int) -> None:
            self.pool = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            gpu.timing_caches_in.append(bytes(data))
            if data.startswith(b"garbage"):
                raise RuntimeError("timing cache header mismatch")
            return TimingCache(data)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: IBuilderConfig) -> Any:
            record = {"onnx": network.onnx, "flags": config.flags,
                      "profiles": [p.shapes for p in config.profiles],
                      "workspace": config.pool, "network_flags": network.flags}
            gpu.builds.append(record)
            return memoryview(json.dumps(record).encode())

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            low, _, high = self.engine.profile
            if not all(lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)):
                return False
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name == self.engine.input:
                return self.shapes[name]
            batch = np.zeros(self.shapes[self.engine.input], np.float32)
            out = self.engine.session.run([name], {self.engine.input: batch})[0]
            return tuple(out.shape)

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            shape = self.shapes[self.engine.input]
            n = int(np.prod(shape))
            raw = bytes(gpu.memory[self.addresses[self.engine.input]][:n * 4])
            images = np.frombuffer(raw, np.float32).reshape(shape)
            gpu.executions.append(shape)
            for name, out in zip(self.engine.outputs,
                                 self.engine.session.run(self.engine.outputs,
                                                         {self.engine.input: images}),
                                 strict=True):
                data = np.ascontiguousarray(out, np.float32).tobytes()
                gpu.memory[self.addresses[name]][:len(data)] = data
            return True

    class ICudaEngine:
        def __init__(self, record: dict[str, Any]) -> None:
            self.session = ort.InferenceSession(record["onnx"],
                                                providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.outputs = [o.name for o in self.session.get_outputs()]
            profiles = record["profiles"][0] if record["profiles"] else {}
            if self.input in profiles:
                self.profile = profiles[self.input]
            else:  # a static input needs no profile
                static = [int(d) for d in self.session.get_inputs()[0].shape]
                self.profile = [static, static, static]

        @property
        def num_io_tensors(self) -> int:
            return 1 + len(self.outputs)

        def get_tensor_name(self, i: int) -> str:
            return [self.input, *self.outputs][i]

        def get_tensor_mode(self, name: str) -> _Enum:
            return io_mode.INPUT if name == self.input else io_mode.OUTPUT  # type: ignore[attr-defined]

        def get_tensor_dtype(self, name: str) -> str:
            return "FLOAT"

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            if gpu.refuse_engine:
                return None
            try:
                record = json.loads(bytes(data))
            except ValueError:
                return None
            return ICudaEngine(record)

    def nptype(dtype: str) -> type:
        return {"FLOAT": np.float32, "HALF": np.float16}[dtype]

    for name, value in {"ILogger": ILogger, "BuilderFlag": builder_flag,
                        "MemoryPoolType": memory_pool, "TensorIOMode": io_mode,
                        "OnnxParser": OnnxParser, "IBuilderConfig": IBuilderConfig,
                        "Builder": Builder, "IExecutionContext": IExecutionContext,
                        "ICudaEngine": ICudaEngine, "Runtime": Runtime, "nptype": nptype,
                        }.items():
        setattr(trt, name, value)
    return trt


# --- pycuda.driver -------------------------------------------------------------------------

def _driver_module(gpu: FakeGpu) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")
    addresses = itertools.count(1)

    class Error(Exception):
        pass

    class DeviceAllocation:
        def __init__(self, size: int) -> None:
            self.address = 0x1000 + 0x10000000 * next(addresses)
            gpu.memory[self.address] = bytearray(size)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            gpu.memory.pop(self.address, None)

    class PrimaryContext:
        def push(self) -> None:
            gpu.pushes += 1

        def detach(self) -> None:
            gpu.detached += 1

    class Context:
        @staticmethod
        def pop() -> None:
            gpu.pops += 1

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < gpu.devices:
                raise Error(f"invalid device ordinal {index}")

        @staticmethod
        def count() -> int:
            return gpu.devices

        def name(self) -> str:
            return "Fake Orin"

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self) -> PrimaryContext:
            return PrimaryContext()

    class Stream:
        handle = 0xBEEF

        def synchronize(self) -> None:
            pass

    def init() -> None:
        if gpu.init_error:
            raise Error(gpu.init_error)

    def mem_alloc(size: int) -> DeviceAllocation:
        return DeviceAllocation(size)

    def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest: DeviceAllocation, src: np.ndarray, stream: Any = None) -> None:
        assert src.flags.c_contiguous
        gpu.memory[int(dest)][:src.nbytes] = src.tobytes()

    def memcpy_dtoh_async(dest: np.ndarray, src: DeviceAllocation, stream: Any = None) -> None:
        assert dest.flags.c_contiguous
        dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(
            bytes(gpu.memory[int(src)][:dest.nbytes]), np.uint8)

    for name, value in {"Error": Error, "Context": Context, "Device": Device, "Stream": Stream,
                        "init": init, "mem_alloc": mem_alloc,
                        "pagelocked_empty": pagelocked_empty,
                        "memcpy_htod_async": memcpy_htod_async,
                        "memcpy_dtoh_async": memcpy_dtoh_async}.items():
        setattr(cuda, name, value)
    return cuda
