"""The training step bench/synth.py writes: one rank's events for a CUDA MLP, step by step.

`Builder` keeps one rank's clocks (two host threads, three streams) and ids, and emits Kineto's
events (``cpu_op`` spans, runtime calls linked to their GPU work, ``[memory]`` events);
`training_step` emits one ``ProfilerStep#N`` with it: data, forward, loss, backward with
all-reduces, optimizer, ``loss.item()``. The file around the steps is bench/synth.py's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from profiler.events import (
    PHASE_COMPLETE,
    PHASE_FLOW_END,
    PHASE_FLOW_START,
    PHASE_INSTANT,
    PROFILER_STEP_PREFIX,
    Category,
    dataloader_range_name,
)

BASE_PID = 40_000
START_NS = 1_000_000_000_000_000  # the first event, after synth.BASE_TIME_NS: 2026-01-01 00:00 UTC
# Left between two events on a thread: ranges that merely touch can read as overlapping once
# their ts and dur are floats (the TensorBoard plugin then logs an error per pair).
GAP_NS = 300
STREAM_COMPUTE, STREAM_COPY, STREAM_COMM = 7, 13, 20
NCCL_BUCKETS = 4  # all-reduces per step, spread over the backward pass
TOKENS = 2048  # rows of every activation
WIDTHS = (1024, 4096)  # layers alternate 1024 -> 4096 -> 1024 ...
FLOAT_BYTES = 4
MIB = 1024**2
A100_SMS = 108
PARAMS_BYTES = 6 * 1024**3  # allocated before the window (weights, optimizer state)
CBID = {"cudaLaunchKernel": 211, "cudaMemcpyAsync": 41, "cudaMemsetAsync": 51}
Block = tuple[int, int]  # (address, bytes) of a device allocation


@dataclass(frozen=True)
class Kernel:
    """A CUDA kernel's name, launch shape and CUPTI's estimates, as Kineto writes them."""

    name: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    registers: int
    shared_memory: int
    occupancy: float

    def args(self) -> dict[str, Any]:
        """The kernel's Kineto args (CUPTI's per-SM figures, on an A100's 108 SMs)."""
        blocks_per_sm = math.prod(self.grid) / A100_SMS
        warps_per_sm = blocks_per_sm * math.prod(self.block) / 32
        return {"registers per thread": self.registers, "shared memory": self.shared_memory,
                "blocks per SM": round(blocks_per_sm, 6), "warps per SM": round(warps_per_sm, 6),
                "grid": list(self.grid), "block": list(self.block),
                "est. achieved occupancy %": self.occupancy}  # fmt: skip


_ELEMENTWISE = "void at::native::vectorized_elementwise_kernel<4, at::native::"
_TENSOR_CORE_GEMM = (
    "sm80_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x32_stage4_warpsize2x2x1_tensor16x8x16"
    "_kernel"
)
_RELU = (
    "(anonymous namespace)::launch_clamp_scalar(at::TensorIteratorBase&, c10::Scalar, "
    "c10::Scalar, at::native::detail::ClampLimits)::{lambda()#1}::operator()() const::"
    "{lambda()#7}::operator()() const::{lambda(float)#1}, at::detail::Array<char*, 2> >"
)
_RELU_BWD = (
    "(anonymous namespace)::threshold_kernel_impl<float>(at::TensorIteratorBase&, float, float)"
    "::{lambda(float, float)#1}, at::detail::Array<char*, 3> >"
)
_REDUCE = (
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::"
    "func_wrapper_t<float, at::native::sum_functor<float, float, float>::operator()"
    "(at::TensorIterator&)::{lambda(float, float)#1}>, unsigned int, float, 4> >"
)
_SOFTMAX = (
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
    "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)"
)
_NLL = (
    "void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, "
    "float, long>(float*, float*, float const*, long const*, float const*, bool, long, long, "
    "long, long)"
)
_NCCL = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"
GEMM_TC = Kernel(_TENSOR_CORE_GEMM, (32, 16, 1), (128, 1, 1), 230, 73728, 12.0)
GEMM_NN = Kernel("ampere_sgemm_128x64_nn", (64, 16, 1), (128, 1, 1), 122, 12544, 25.0)
GEMM_NT = Kernel("ampere_sgemm_128x128_nt", (32, 32, 1), (256, 1, 1), 127, 32768, 25.0)
RELU = Kernel(_ELEMENTWISE + _RELU, (4096, 1, 1), (128, 1, 1), 26, 0, 87.0)
RELU_BWD = Kernel(_ELEMENTWISE + _RELU_BWD, (4096, 1, 1), (128, 1, 1), 28, 0, 85.0)
ADD = Kernel(
    _ELEMENTWISE + "CUDAFunctor_add<float>, at::detail::Array<char*, 3> >",
    (1024, 1, 1), (128, 1, 1), 24, 0, 60.0)  # fmt: skip
REDUCE = Kernel(_REDUCE, (8, 64, 1), (32, 16, 1), 32, 16, 48.0)
SOFTMAX = Kernel(_SOFTMAX, (2048, 1, 1), (1024, 1, 1), 38, 0, 50.0)
NLL = Kernel(_NLL, (1, 1, 1), (32, 1, 1), 30, 0, 1.5)
NCCL = Kernel(_NCCL, (2, 1, 1), (640, 1, 1), 96, 0, 0.0)


@dataclass(frozen=True)
class GpuWork:
    """What a runtime call queues: a kernel, copy or memset of ``us`` on ``stream``.

    ``after`` (ns) holds it back until then, as a wait on another stream's event would.
    """

    cat: str
    name: str
    us: float
    args: dict[str, Any]
    stream: int = STREAM_COMPUTE
    after: int = 0


def _complete(
    cat: str, name: str, where: tuple[int, int], start_ns: int, end_ns: int, args: dict[str, Any]
) -> dict[str, Any]:
    return {"ph": PHASE_COMPLETE, "cat": cat, "name": name, "pid": where[0], "tid": where[1],
            "ts": start_ns / 1000, "dur": (end_ns - start_ns) / 1000, "args": args}  # fmt: skip


def _flow(phase: str, correlation: int, where: tuple[int, int], ts_ns: int) -> dict[str, Any]:
    event = {"ph": phase, "id": correlation, "pid": where[0], "tid": where[1], "ts": ts_ns / 1000,
             "cat": Category.FLOW_AC2G.value, "name": Category.FLOW_AC2G.value}  # fmt: skip
    if phase == PHASE_FLOW_END:
        event["bp"] = "e"
    return event


class Builder:
    """Emits one rank's events, keeping the clocks (ns) of its two threads and three streams."""

    def __init__(
        self, rng: random.Random, rank: int, world_size: int, *, slow_us: float = 0.0,
        wait_us: float = 0.0,
    ) -> None:  # fmt: skip
        """``slow_us``: extra DataLoader time per step (a straggling rank); ``wait_us``: how
        much longer each step's first all-reduce takes, waiting for that rank (the others)."""
        self.rng, self.world_size = rng, world_size
        self.slow_ns, self.wait_ns = int(slow_us * 1000), int(wait_us * 1000)
        self.waiting = False  # the step's first all-reduce is still to come
        self.pid, self.device = BASE_PID + rank, rank % 8
        self.main, self.bwd = self.pid, self.pid + 17
        self.now = {self.main: START_NS, self.bwd: START_NS}
        self.stream_end = {STREAM_COMPUTE: 0, STREAM_COPY: 0, STREAM_COMM: 0}
        # Kineto-like ids: HTA 0.5.0 under pandas 3 fails on small correlation ids (int16).
        self.ids = {"correlation": 1_000_000, "external": 1, "sequence": 0, "addr": 0x7F0000000000}
        self.allocated, self.reserved = PARAMS_BYTES, PARAMS_BYTES + 64 * MIB
        self.events: list[dict[str, Any]] = []

    def take(self) -> list[dict[str, Any]]:
        """The events emitted since the last call."""
        events, self.events = self.events, []
        return events

    def next_id(self, key: str, step: int = 1) -> int:
        self.ids[key] += step
        return self.ids[key] - step

    def jitter(self, us: float, spread: float = 0.15) -> int:
        """``us`` microseconds, give or take ``spread``, in ns."""
        return int(us * 1000 * (1.0 + self.rng.uniform(-spread, spread)))

    def advance(self, tid: int, us: float) -> None:
        self.now[tid] += self.jitter(us)

    @contextmanager
    def span(self, cat: str, name: str, tid: int, args: dict[str, Any]) -> Iterator[None]:
        """A complete event around what the body emits on ``tid``, with the next External id."""
        args["External id"] = self.next_id("external")  # on entry: ids follow start times
        start = self.now[tid]
        event = _complete(cat, name, (self.pid, tid), start, start, args)
        self.events.append(event)
        self.advance(tid, 1.5)
        yield
        self.advance(tid, 1.0)
        event["dur"] = (self.now[tid] - start) / 1000
        self.now[tid] += GAP_NS

    def op(self, name: str, tid: int, dims: list[list[int]] | None = None, **extra: Any) -> Any:
        """A ``cpu_op`` span (with shapes, as with ``record_shapes=True``)."""
        args: dict[str, Any] = dict(extra)
        if dims is not None:
            args["Input Dims"] = dims
            args["Input type"] = ["float" if dim else "Scalar" for dim in dims]
        return self.span(Category.CPU_OP.value, name, tid, args)

    def ops(self, tid: int, *chain: tuple[str, list[list[int]]]) -> ExitStack:
        """``cpu_op`` spans, each nested in the one before (a call chain such as t -> transpose)."""
        stack = ExitStack()
        for name, dims in chain:
            stack.enter_context(self.op(name, tid, dims))
        return stack

    def forward_op(self, name: str, dims: list[list[int]]) -> Any:
        """A forward op that records an autograd node: it takes the next Sequence number."""
        return self.op(name, self.main, dims, **{"Sequence number": self.next_id("sequence")})

    def annotation(self, name: str, tid: int) -> Any:
        return self.span(Category.USER_ANNOTATION.value, name, tid, {})

    def alloc(self, tid: int, nbytes: int) -> Block:
        """A device allocation's ``[memory]`` event; the block is for the matching `free`."""
        addr = self.next_id("addr", nbytes + 512)
        self._memory(tid, nbytes, addr)
        return addr, nbytes

    def free(self, tid: int, block: Block) -> None:
        self._memory(tid, -block[1], block[0])

    def _memory(self, tid: int, nbytes: int, addr: int) -> None:
        self.allocated += nbytes
        self.reserved = max(self.reserved, math.ceil(self.allocated / (2 * MIB)) * 2 * MIB)
        args = {"Total Reserved": self.reserved, "Total Allocated": self.allocated,
                "Bytes": nbytes, "Device Id": self.device, "Device Type": 1,
                "Addr": addr}  # fmt: skip
        self.events.append({"ph": PHASE_INSTANT, "cat": "cpu_instant_event", "s": "t",
                            "name": "[memory]", "pid": self.pid, "tid": tid,
                            "ts": self.now[tid] / 1000, "args": args})  # fmt: skip

    def launch(self, tid: int, kernel: Kernel, us: float, **where: int) -> None:
        """``cudaLaunchKernel`` and its kernel (``where``: `GpuWork`'s stream and after)."""
        self.call(
            tid, "cudaLaunchKernel", GpuWork("kernel", kernel.name, us, kernel.args(), **where)
        )

    def copy(self, tid: int, kind: str, nbytes: int, stream: int) -> None:
        """``cudaMemcpyAsync`` and its copy (``kind``: HtoD or DtoH) at ~20 GB/s."""
        args = {"bytes": nbytes, "memory bandwidth (GB/s)": 20.0}
        name = f"Memcpy {kind} ({'Pageable -> Device' if kind == 'HtoD' else 'Device -> Pageable'})"
        self.call(
            tid, "cudaMemcpyAsync", GpuWork("gpu_memcpy", name, nbytes / 2e4 + 2, args, stream)
        )

    def memset(self, tid: int, nbytes: int) -> None:
        args = {"bytes": nbytes, "memory bandwidth (GB/s)": 1200.0}
        self.call(tid, "cudaMemsetAsync", GpuWork("gpu_memset", "Memset (Device)", 1.5, args))

    def call(self, tid: int, runtime: str, work: GpuWork) -> None:
        """A runtime call on ``tid`` and the GPU work it queues, linked by correlation and flow."""
        correlation, external = self.next_id("correlation"), self.ids["external"] - 1
        start = self.now[tid]
        self.advance(tid, 4.0 if runtime == "cudaLaunchKernel" else 8.0)
        args = {"External id": external, "cbid": CBID[runtime], "correlation": correlation}
        host, gpu = (self.pid, tid), (self.device, work.stream)
        self.events.append(_complete("cuda_runtime", runtime, host, start, self.now[tid], args))
        self.now[tid] += GAP_NS
        gpu_start = max(start + 3_000, self.stream_end[work.stream] + self.jitter(1.2), work.after)
        self.stream_end[work.stream] = gpu_start + max(self.jitter(work.us), 1_000)
        args = {"External id": external, "queued": 0, "device": self.device, "context": 1,
                "stream": work.stream, "correlation": correlation, **work.args}  # fmt: skip
        end = self.stream_end[work.stream]
        self.events.append(_complete(work.cat, work.name, gpu, gpu_start, end, args))
        self.events.append(_flow(PHASE_FLOW_START, correlation, host, start))
        self.events.append(_flow(PHASE_FLOW_END, correlation, gpu, gpu_start))


# One training step: data, forward, loss, backward (with all-reduces), optimizer, loss.item().
# Its structure depends only on the layer count, never on the random draws, so a step's event
# count is known in advance (see `plan_trace`).


def _widths(layer: int) -> tuple[int, int]:
    return WIDTHS[layer % 2], WIDTHS[(layer + 1) % 2]


def _gemm_us(rows: int, inner: int, cols: int) -> float:
    return 2 * rows * inner * cols / 100e6  # ~100 TFLOP/s


def _elementwise_us(nbytes: int) -> float:
    return nbytes / 1.5e6 + 2  # ~1.5 TB/s


def _load_batch(b: Builder, step: int) -> Block:
    """The DataLoader's ``__next__`` (slow every tenth step), then the batch copied to the GPU."""
    rows = [TOKENS, WIDTHS[0]]
    loader = dataloader_range_name("_SingleProcessDataLoaderIter")
    with b.annotation(loader, b.main), b.op("aten::stack", b.main, [rows]):
        b.advance(b.main, 25_000 if step % 10 == 3 else 1_200)
        b.now[b.main] += b.slow_ns  # no random draw: ranks sharing a seed stay in step
    with b.ops(b.main, ("aten::to", [rows, [], [], [], []]), ("aten::_to_copy", [rows])):
        with b.op("aten::empty_strided", b.main, [[], []]):
            batch = b.alloc(b.main, TOKENS * WIDTHS[0] * FLOAT_BYTES)
        with b.op("aten::copy_", b.main, [rows, rows, []]):
            b.copy(b.main, "HtoD", batch[1], STREAM_COPY)
    return batch


@dataclass(frozen=True)
class _Saved:
    """What a forward layer leaves for its backward: its ops' Sequence numbers, its outputs."""

    addmm_seq: int
    relu_seq: int
    addmm_out: Block
    relu_out: Block


def _forward_layer(b: Builder, layer: int, after: int) -> _Saved:
    """``aten::linear`` (-> t, addmm) and ``aten::relu``: one layer of the MLP."""
    fin, fout = _widths(layer)
    out_bytes = TOKENS * fout * FLOAT_BYTES
    with b.op("aten::linear", b.main, [[TOKENS, fin], [fout, fin], [fout]]):
        t, transpose = ("aten::t", [[fout, fin]]), ("aten::transpose", [[fout, fin], [], []])
        with b.ops(b.main, t, transpose, ("aten::as_strided", [[fout, fin], [], [], []])):
            pass
        addmm_seq = b.ids["sequence"]
        with b.forward_op("aten::addmm", [[fout], [TOKENS, fin], [fin, fout], [], []]):
            addmm_out = b.alloc(b.main, out_bytes)
            b.launch(b.main, GEMM_TC, _gemm_us(TOKENS, fin, fout), after=after)
    relu_seq = b.ids["sequence"]
    with b.forward_op("aten::relu", [[TOKENS, fout]]):
        relu_out = b.alloc(b.main, out_bytes)
        b.launch(b.main, RELU, _elementwise_us(2 * out_bytes))
    b.advance(b.main, 12)  # the Python between two layers
    return _Saved(addmm_seq, relu_seq, addmm_out, relu_out)


def _forward(b: Builder, layers: int) -> list[_Saved]:
    arrived = b.stream_end[STREAM_COPY]  # the first GEMM waits for the batch
    return [_forward_layer(b, layer, arrived if layer == 0 else 0) for layer in range(layers)]


def _loss(b: Builder) -> None:
    """``cross_entropy``: log-softmax and NLL kernels, and a memset for its total weight."""
    logits, labels = [TOKENS, WIDTHS[0]], [TOKENS]
    with b.forward_op("aten::cross_entropy_loss", [logits, labels, [], [], [], []]):
        softmax = ("aten::log_softmax", [logits, [], []]), ("aten::_log_softmax", [logits, [], []])
        with b.ops(b.main, *softmax):
            b.launch(b.main, SOFTMAX, _elementwise_us(2 * TOKENS * WIDTHS[0] * FLOAT_BYTES))
        with b.op("aten::nll_loss_nd", b.main, [logits, labels, [], [], []]):
            with b.ops(b.main, ("aten::zeros", [[], [], [], [], []]), ("aten::zero_", [[]])):
                b.memset(b.main, FLOAT_BYTES)
            with b.op("aten::nll_loss_forward", b.main, [logits, labels]):
                b.launch(b.main, NLL, 6.0)


def _backward_layer(b: Builder, layer: int, saved: _Saved) -> None:
    """ReluBackward0, then AddmmBackward0 (two GEMMs, a bias reduction), on the autograd thread."""
    fin, fout = _widths(layer)
    grad_bytes = TOKENS * fout * FLOAT_BYTES
    relu_node = ("ReluBackward0", saved.relu_seq)
    threshold = ("aten::threshold_backward", [[TOKENS, fout], [TOKENS, fout], []])
    with b.op("autograd::engine::evaluate_function: ReluBackward0", b.bwd):
        with _node(b, *relu_node), b.ops(b.bwd, threshold):
            grad = b.alloc(b.bwd, grad_bytes)
            b.launch(b.bwd, RELU_BWD, _elementwise_us(3 * grad_bytes))
        b.free(b.bwd, saved.relu_out)
    with b.op("autograd::engine::evaluate_function: AddmmBackward0", b.bwd):
        with _node(b, "AddmmBackward0", saved.addmm_seq):
            with b.op("aten::mm", b.bwd, [[TOKENS, fout], [fout, fin]]):
                b.launch(b.bwd, GEMM_NN, _gemm_us(TOKENS, fout, fin))
            with b.op("aten::mm", b.bwd, [[fout, TOKENS], [TOKENS, fin]]):
                b.launch(b.bwd, GEMM_NT, _gemm_us(fout, TOKENS, fin))
            with b.op("aten::sum", b.bwd, [[TOKENS, fout], [], [], []]):
                b.launch(b.bwd, REDUCE, _elementwise_us(grad_bytes))
        b.free(b.bwd, saved.addmm_out)
        b.free(b.bwd, grad)


def _node(b: Builder, name: str, sequence: int) -> Any:
    """An autograd node's range, linked to its forward op by ``Sequence number``."""
    link: dict[str, Any] = {"Sequence number": sequence, "Fwd thread id": 1}
    return b.op(name, b.bwd, None, **link)


def _all_reduce(b: Builder) -> None:
    """One DDP bucket's all-reduce on the NCCL stream, once the gradients so far are computed."""
    nelems = 25 * MIB // FLOAT_BYTES
    comms = {"Collective name": "allreduce", "In msg nelems": nelems, "Out msg nelems": nelems,
             "Group size": b.world_size, "dtype": "Float", "Process Group Name": "0"}  # fmt: skip
    us = 25 * MIB / 80e3 * (1.0 if b.world_size > 1 else 0.2)  # ~80 GB/s bus bandwidth
    if b.waiting:  # the first all-reduce of the step ends when the slowest rank joins it
        us, b.waiting = us + b.wait_ns / 1000, False
    record = b.op("record_param_comms", b.bwd, [[nelems], [], []], **comms)
    with b.annotation("nccl:all_reduce", b.bwd), record:
        b.launch(b.bwd, NCCL, us, stream=STREAM_COMM, after=b.stream_end[STREAM_COMPUTE])


def _backward(b: Builder, saved: list[_Saved]) -> None:
    """The backward pass, last layer first, with `NCCL_BUCKETS` all-reduces spread over it."""
    layers = len(saved)
    b.now[b.bwd] = max(b.now[b.bwd], b.now[b.main]) + b.jitter(25)
    for done, layer in enumerate(reversed(range(layers))):
        _backward_layer(b, layer, saved[layer])
        buckets = (done + 1) * NCCL_BUCKETS // layers - done * NCCL_BUCKETS // layers
        for _ in range(buckets):
            _all_reduce(b)
    b.now[b.main] = b.now[b.bwd] + b.jitter(20)  # loss.backward() returns


def _optimizer(b: Builder, layers: int, filler: int) -> None:
    """SGD's per-parameter updates (after the all-reduces), then ``zero_grad``.

    ``filler`` one-event ops (``aten::detach_``) in ``zero_grad`` pad the step to its budget.
    """
    with b.annotation("Optimizer.step#SGD.step", b.main):
        for layer in range(layers):
            fin, fout = _widths(layer)
            for shape in ([fout, fin], [fout]):
                with b.op("aten::add_", b.main, [shape, shape, []]):
                    us = _elementwise_us(3 * math.prod(shape) * FLOAT_BYTES)
                    b.launch(b.main, ADD, us, after=b.stream_end[STREAM_COMM])
    with b.annotation("Optimizer.zero_grad#SGD.zero_grad", b.main):
        for _ in range(filler):
            with b.op("aten::detach_", b.main, [[WIDTHS[0]]]):
                pass


def _sync(b: Builder) -> None:
    """``loss.item()``: a 4-byte copy to the host, then a synchronize until the GPU drains."""
    with b.ops(b.main, ("aten::item", [[]]), ("aten::_local_scalar_dense", [[]])):
        b.copy(b.main, "DtoH", FLOAT_BYTES, STREAM_COMPUTE)
        start = b.now[b.main]
        b.now[b.main] = max(start + 2_000, *b.stream_end.values()) + b.jitter(4)
        args = {"External id": b.ids["external"] - 1, "cbid": 131,
                "correlation": b.next_id("correlation")}  # fmt: skip
        where = (b.pid, b.main)
        sync = _complete("cuda_runtime", "cudaStreamSynchronize", where, start, b.now[b.main], args)
        b.events.append(sync)
        b.now[b.main] += GAP_NS


def training_step(b: Builder, number: int, layers: int, filler: int) -> None:
    """One ``ProfilerStep#<number>``."""
    b.waiting = True
    with b.annotation(f"{PROFILER_STEP_PREFIX}{number}", b.main):
        batch = _load_batch(b, number)
        saved = _forward(b, layers)
        _loss(b)
        _backward(b, saved)
        _optimizer(b, layers, filler)
        _sync(b)
        b.free(b.main, batch)
