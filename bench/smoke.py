"""First contact with a real GPU: does libfikit.so see PyTorch's launches, and
does a held LP process behave?  A quick check run before the full harness;
it prints a table and writes smoke.json under --out.

Run on the GPU machine from the repository root, after building the library:
    python3 bench/smoke.py --lib build/gpu/interpose/libfikit.so --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import os, sys, time, json
import torch, torchvision
which = sys.argv[1]; iters = int(sys.argv[2]); dur = float(sys.argv[3])
torch.backends.cudnn.benchmark = False
dev = 'cuda'
out = {}
if which == 'resnet_b1':
    m = torchvision.models.resnet50().eval().to(dev); x = torch.randn(1, 3, 224, 224, device=dev)
    with torch.inference_mode():
        for _ in range(5): m(x)
        torch.cuda.synchronize()
        lat = []
        t_end = time.time() + dur
        n = 0
        while (n < iters) if dur <= 0 else (time.time() < t_end):
            t = time.perf_counter(); m(x); torch.cuda.synchronize()
            lat.append(time.perf_counter() - t); n += 1
    lat.sort()
    out = {'n': len(lat), 'p50_ms': lat[len(lat)//2]*1e3,
           'p99_ms': lat[int(len(lat)*0.99)]*1e3}
elif which == 'train_b64':
    m = torchvision.models.resnet50().to(dev); opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x = torch.randn(64, 3, 224, 224, device=dev); y = torch.randint(0, 1000, (64,), device=dev)
    for _ in range(2):
        opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()
    torch.cuda.synchronize()
    t0 = time.time(); n = 0
    while time.time() - t0 < dur:
        opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step(); n += 1
        torch.cuda.synchronize()
    out = {'iters': n, 'it_s': n / (time.time() - t0)}
elif which == 'triton':
    import triton, triton.language as tl
    @triton.jit
    def add(x_ptr, y_ptr, o_ptr, n, B: tl.constexpr):
        i = tl.program_id(0) * B + tl.arange(0, B); m = i < n
        tl.store(o_ptr + i, tl.load(x_ptr + i, mask=m) + tl.load(y_ptr + i, mask=m), mask=m)
    x = torch.randn(1 << 20, device=dev); y = torch.randn_like(x); o = torch.empty_like(x)
    for _ in range(iters): add[(x.numel() // 1024,)](x, y, o, x.numel(), B=1024)
    torch.cuda.synchronize(); out = {'ok': bool(torch.allclose(o, x + y))}
elif which == 'graph':
    m = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)]).to(dev)
    x = torch.randn(8, 256, device=dev)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): m(x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): y = m(x)
    for _ in range(iters): g.replay()
    torch.cuda.synchronize(); out = {'ok': bool(torch.allclose(y, m(x), atol=1e-4))}
elif which == 'tiny':
    x = torch.zeros(1, device=dev)
    for _ in range(1000): x.add_(1)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters): x.add_(1)
    torch.cuda.synchronize()
    out = {'us_per_launch': (time.perf_counter() - t) / iters * 1e6, 'ok': float(x.item()) == 1000 + iters}
print('RESULT ' + json.dumps(out), flush=True)
"""


def run_child(which: str, iters: int, dur: float, env: dict[str, str]) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(iters), str(dur)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    res: dict[str, Any] = {"rc": p.returncode}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res.update(json.loads(line[7:]))
    fik = [ln for ln in p.stderr.splitlines() if "fikit" in ln]
    if fik or p.returncode:
        res["stderr"] = (fik or p.stderr.splitlines())[-5:]
    return res


def stats_summary(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"missing": True}
    s = json.loads(path.read_text())
    ks = s.get("kernels", [])
    meas = [k for k in ks if k.get("dur_us")]
    return {
        "launches": s["launches"],
        "kernel_ids": len(ks),
        "graphs": len(s.get("graphs", [])),
        "measured_ids": len(meas),
        "sample_names": [k["name"][:60] for k in ks[:3]],
        "held_launches": s.get("held_launches"),
        "held_us": s.get("held_us"),
        "released_gap": s.get("released_gap"),
        "released_idle": s.get("released_idle"),
        "prio": s.get("prio"),
        "slot": s.get("slot"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    lib = str(Path(a.lib).resolve())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    base = dict(os.environ)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "lib": lib}
    try:
        import torch

        report["gpu"] = torch.cuda.get_device_name(0)
        report["torch"] = torch.__version__
    except Exception as e:
        report["gpu_error"] = repr(e)
    # 1. each launch path, under preload
    for which, iters in (("resnet_b1", 20), ("triton", 50), ("graph", 50), ("tiny", 20000)):
        st = tmp / f"{which}.json"
        env = dict(base, LD_PRELOAD=lib, FIKIT_STATS=str(st))
        r = run_child(which, iters, 0, env)
        r["stats"] = stats_summary(st)
        report[which] = r
        print(which, json.dumps(r)[:400], flush=True)
    # 2. per-launch overhead, interleaved: plain, passthrough, measuring
    ov: dict[str, list[float]] = {"plain": [], "passthrough": [], "measure": []}
    for _ in range(3):
        for mode in ov:
            env = dict(base)
            if mode != "plain":
                env["LD_PRELOAD"] = lib
            if mode == "passthrough":
                env["FIKIT_PASSTHROUGH"] = "1"
            ov[mode].append(run_child("tiny", 200000, 0, env).get("us_per_launch", -1))
    report["tiny_overhead_us"] = ov
    print("overhead", ov, flush=True)
    # 3. an HP/LP pair on a self-granting domain, no MPS (time-slicing), 6 s each way
    sys.path.insert(0, str(Path.cwd()))
    os.environ["FIKIT_LIBRARY"] = lib
    from fikitd.shm import Domain

    dom_dir = tmp / "gpu0"
    Domain.create(dom_dir, 0, self_grant=True, mode="fikit")
    pair: dict[str, Any] = {}
    for label, prefix in (("plain", False), ("fikit", True)):
        envh = dict(base)
        envl = dict(base)
        if prefix:
            envh.update(
                LD_PRELOAD=lib, FIKIT_DOMAIN=str(dom_dir), FIKIT_PRIO="high", FIKIT_STATS=str(tmp / "h.json")
            )
            envl.update(
                LD_PRELOAD=lib, FIKIT_DOMAIN=str(dom_dir), FIKIT_PRIO="low", FIKIT_STATS=str(tmp / "l.json")
            )
        lp = subprocess.Popen(
            [sys.executable, "-c", CHILD, "train_b64", "0", "14"],
            env=envl,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(5)
        hp = run_child("resnet_b1", 0, 6, envh)
        lo, le = lp.communicate(timeout=120)
        lpres = {"rc": lp.returncode}
        for line in lo.splitlines():
            if line.startswith("RESULT "):
                lpres.update(json.loads(line[7:]))
        if lp.returncode:
            lpres["stderr"] = le.splitlines()[-5:]
        pair[label] = {"hp": hp, "lp": lpres}
        if prefix:
            pair[label]["hp_stats"] = stats_summary(tmp / "h.json")
            pair[label]["lp_stats"] = stats_summary(tmp / "l.json")
        print("pair", label, json.dumps(pair[label])[:600], flush=True)
    pair["hp_alone"] = run_child("resnet_b1", 0, 6, dict(base))
    print("hp alone", pair["hp_alone"], flush=True)
    report["pair_resnet_b1_vs_train_b64"] = pair
    (out / "smoke.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
