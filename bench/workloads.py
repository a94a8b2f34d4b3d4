"""The models the bench runs: plain PyTorch, no fikit import, nothing downloaded.

`build(name, device, tiny)` returns a Workload whose `step()` issues one request (HP) or one
training / batch-inference iteration (LP) without synchronising; the caller synchronises
(`Workload.sync`). `build_devices` puts one copy of the model on each of several GPUs: a step is a
step on each. `tiny=True` shrinks batch and input sizes so the whole harness can be exercised on a CPU.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from workloads_catalog import CATALOG


@dataclass
class Workload:
    name: str
    role: str
    batch: int
    step: Callable[[], Any]
    description: str
    info: dict[str, Any] = field(default_factory=dict)
    sync: Callable[[], None] = lambda: None  # waits for what step() queued (set by build_devices)


def setup_determinism(seed: int = 0) -> None:
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    # Keep TF32 decisions fixed (PyTorch defaults) so the kernel set is stable across runs.


def _img(batch: int, device: str, tiny: bool) -> torch.Tensor:
    side = 64 if tiny else 224
    return torch.randn(batch, 3, side, side, device=device)


def _tv(name: str) -> torch.nn.Module:
    import torchvision

    ctor = getattr(torchvision.models, name)
    model: torch.nn.Module = ctor(weights=None)
    return model


def _bert_model(tiny: bool, masked_lm: bool = False) -> torch.nn.Module:
    from transformers import BertConfig

    cfg = BertConfig()
    if tiny:
        cfg = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=256)
    if masked_lm:
        from transformers import BertForMaskedLM

        return BertForMaskedLM(cfg)
    from transformers import BertModel

    return BertModel(cfg)


def _gpt2_model(tiny: bool, lm_head: bool = False) -> torch.nn.Module:
    from transformers import GPT2Config

    cfg = GPT2Config()
    if tiny:
        cfg = GPT2Config(n_layer=2, n_embd=128, n_head=2)
    if lm_head:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel(cfg)
    from transformers import GPT2Model

    return GPT2Model(cfg)


def _seq(tiny: bool, full: int) -> int:
    return 32 if tiny else full


def _infer_step(model: torch.nn.Module, inputs: dict[str, torch.Tensor] | torch.Tensor) -> Callable[[], Any]:
    def step() -> Any:
        with torch.inference_mode():
            if isinstance(inputs, dict):
                return model(**inputs)
            return model(inputs)

    return step


def _graph_step(
    model: torch.nn.Module, make_inputs: Callable[[], dict[str, torch.Tensor] | torch.Tensor], device: str
) -> tuple[Callable[[], Any], dict[str, Any]]:
    """Capture one inference in a CUDA graph; step() replays it (one cuGraphLaunch per request)."""
    inputs = make_inputs()

    def fwd() -> Any:
        if isinstance(inputs, dict):
            return model(**inputs)
        return model(inputs)

    if not device.startswith("cuda"):
        return _infer_step(model, inputs), {"graph": False, "why": "CUDA graphs need a GPU: eager on CPU"}
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fwd()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fwd()
    torch.cuda.synchronize()
    keep = [out, inputs]  # the graph's static memory must stay alive

    def step() -> Any:
        graph.replay()
        return keep[0]

    return step, {"graph": True}


def build(name: str, device: str = "cuda", tiny: bool = False, batch: int | None = None) -> Workload:
    if name not in CATALOG:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(sorted(CATALOG))}")
    role, default_batch, desc = CATALOG[name]
    if batch is None:
        batch = default_batch if not tiny or default_batch == 1 else 2
    info: dict[str, Any] = {"tiny": tiny}
    dev = device

    if name in ("resnet50", "vit_b_16"):
        model = _tv(name).to(dev).eval()
        x = _img(batch, dev, tiny and name == "resnet50")
        return Workload(name, role, batch, _infer_step(model, x), desc, info)

    if name in ("bert", "gpt2"):
        model = (_bert_model(tiny) if name == "bert" else _gpt2_model(tiny)).to(dev).eval()
        seq = _seq(tiny, 128)
        vocab = 30522 if name == "bert" else 50257
        ids = torch.randint(0, min(vocab, 1000), (batch, seq), device=dev)
        return Workload(name, role, batch, _infer_step(model, {"input_ids": ids}), desc, info)

    if name in ("resnet50_graph", "bert_graph"):
        if name == "resnet50_graph":
            model = _tv("resnet50").to(dev).eval()

            def mk() -> dict[str, torch.Tensor] | torch.Tensor:
                return _img(batch, dev, tiny)
        else:
            model = _bert_model(tiny).to(dev).eval()
            seq = _seq(tiny, 128)

            def mk() -> dict[str, torch.Tensor] | torch.Tensor:
                return {"input_ids": torch.randint(0, 1000, (batch, seq), device=dev)}

        step, ginfo = _graph_step(model, mk, dev)
        info.update(ginfo)
        return Workload(name, role, batch, step, desc, info)

    if name in ("resnet50_compile", "bert_compile"):
        if name == "resnet50_compile":
            base = _tv("resnet50").to(dev).eval()
            inp: dict[str, torch.Tensor] | torch.Tensor = _img(batch, dev, tiny)
        else:
            base = _bert_model(tiny).to(dev).eval()
            inp = {"input_ids": torch.randint(0, 1000, (batch, _seq(tiny, 128)), device=dev)}
        compiled = torch.compile(base)
        info["compile_mode"] = "default"
        return Workload(name, role, batch, _infer_step(compiled, inp), desc, info)

    if name in ("resnet50_train", "vgg16_train"):
        model = _tv("resnet50" if name == "resnet50_train" else "vgg16").to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = _img(batch, dev, tiny)
        y = torch.randint(0, 1000, (batch,), device=dev)
        loss_fn = torch.nn.CrossEntropyLoss()

        def train_step() -> Any:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss

        return Workload(name, role, batch, train_step, desc, info)

    if name in ("gpt2_train", "bert_train"):
        if name == "gpt2_train":
            model = _gpt2_model(tiny, lm_head=True).to(dev).train()
            seq = _seq(tiny, 512)
        else:
            model = _bert_model(tiny, masked_lm=True).to(dev).train()
            seq = _seq(tiny, 128)
        opt2 = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ids = torch.randint(0, 1000, (batch, seq), device=dev)

        def lm_step() -> Any:
            opt2.zero_grad(set_to_none=True)
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            opt2.step()
            return out.loss

        return Workload(name, role, batch, lm_step, desc, info)

    if name == "vgg16_infer":
        model = _tv("vgg16").to(dev).eval()
        x = _img(batch, dev, tiny)
        return Workload(name, role, batch, _infer_step(model, x), desc, info)

    if name == "triton_add":
        n = 1 << (12 if tiny else 20)
        a = torch.randn(n, device=dev)
        b = torch.randn(n, device=dev)
        out = torch.empty_like(a)
        if dev.startswith("cuda"):
            import tri_kernels

            def tstep() -> Any:
                tri_kernels.add(a, b, out)
                return out

            info["triton"] = True
            return Workload(name, role, batch, tstep, desc, info)
        info["triton"] = False

        def cstep() -> Any:
            torch.add(a, b, out=out)
            return out

        return Workload(name, role, batch, cstep, desc, info)

    if name == "add1":
        t = torch.zeros(1, device=dev)

        def astep() -> Any:
            t.add_(1)
            return t

        return Workload(name, role, batch, astep, desc, info)

    raise KeyError(name)  # pragma: no cover - CATALOG and build() disagree


def sync(device: str) -> None:
    """Wait for a device's queued work ("cuda": the current GPU, "cuda:N": GPU N)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def build_devices(
    name: str, device: str, ordinals: list[int] | None, tiny: bool = False, batch: int | None = None
) -> Workload:
    """The model on `device`, or with ordinals (device "cuda") one copy on each cuda:N: a step queues
    a step on each GPU in turn (no wait between them, as a data-parallel program does), sync waits
    for all of them, and the batch is the sum.

    Each step starts on the next GPU in turn. A program launching from one thread is held at the first
    GPU whose domain holds it; always starting on the same GPU, it would reach the others only while
    that GPU's HP idles, and their domains would never be seen deciding."""
    if not ordinals:
        wl = build(name, device, tiny=tiny, batch=batch)
        wl.sync = lambda: sync(device)
        return wl
    devs = [f"{device}:{i}" if device == "cuda" else device for i in ordinals]
    parts = [build(name, d, tiny=tiny, batch=batch) for d in devs]

    turn = itertools.count()

    def step() -> Any:
        start = next(turn) % len(parts)
        return [p.step() for p in parts[start:] + parts[:start]]

    def sync_all() -> None:
        for d in devs:
            sync(d)

    first = parts[0]
    desc = f"{first.description}, on {', '.join(devs)}"
    info = {**first.info, "devices": devs}
    return Workload(name, first.role, first.batch * len(parts), step, desc, info, sync_all)


def set_threads_from_affinity() -> int:
    try:
        n = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
