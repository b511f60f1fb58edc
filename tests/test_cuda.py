"""GPU checks (issue 13, item 6): two HAC steps of the tiny default MERU on CUDA in bf16, and a one-process NCCL group.

Both tests skip without a visible GPU. On a GPU machine: `.venv/bin/python -m pytest tests/test_cuda.py -q`.
The full-size throughput benchmark is `benchmarks/gpu_step.py`.
"""
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# small enough for seconds on a GPU; the model is the tiny default MERU (ViT 28 px + frozen all-MiniLM-L6-v2)
SMALL = dict(log_every=1, probe_size=50, test_size=200, progress=False)


def two_hac_steps(tmp: Path, device: str, precision: str) -> dict:
    "Pretrain the tiny default MERU for 2 steps, then unlearn 'dog' with HAC for 2 steps; returns the HAC run."
    from hac.config import pretrain_config, unlearn_config
    from hac.train import train
    pre = train(pretrain_config("meru", steps=2, warmup=1, device=device, precision=precision,
                                out_dir=str(tmp / "pre"), **SMALL))
    ckpt = Path(pre["out_dir"]) / "model.pt"
    assert ckpt.exists()
    cfg = unlearn_config("hac", str(ckpt), ["dog"], steps=2, warmup=1, batch_size=32, forget_batch=16,
                         device=device, precision=precision, out_dir=str(tmp / "hac"), **SMALL)
    return train(cfg)


def check_run(res: dict, device_type: str):
    "The HAC run logged finite losses for both steps, with its hyperbolic terms, and wrote metrics.json."
    rows = [r for r in res["history"] if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2], res["history"]
    for r in rows:
        assert math.isfinite(r["loss"]), r
        assert "nr" in r and math.isfinite(r["nr"]), f"HAC's norm term was not logged: {sorted(r)}"
    assert next(res["model"].parameters()).device.type == device_type
    out = Path(res["out_dir"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 2
    for k in ("before", "after"): assert k in m, sorted(m)
    assert (out / "model.pt").exists()


@needs_cuda
def test_two_hac_steps_on_cuda_bf16(tmp_path):
    res = two_hac_steps(tmp_path, "cuda", "bf16")
    check_run(res, "cuda")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process_group(backend: str, device: torch.device):
    "Join a world-size-1 group (torchrun's env:// variables), all-reduce, gather a batch, barrier, destroy."
    from hac.train import gather_batch
    kw = dict(device_id=device) if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=0, world_size=1, **kw)
    try:
        assert dist.is_initialized() and dist.get_world_size() == 1 and dist.get_backend() == backend
        x = torch.arange(4.0, device=device)
        dist.all_reduce(x)
        assert torch.equal(x.cpu(), torch.arange(4.0))
        y = torch.randn(3, 5, device=device, requires_grad=True)
        assert torch.equal(gather_batch(y), y)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


@needs_cuda
@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(), reason="this torch has no NCCL")
def test_nccl_one_process_group(monkeypatch):
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0",
                     WORLD_SIZE="1").items():
        monkeypatch.setenv(k, v)
    torch.cuda.set_device(0)
    one_process_group("nccl", torch.device("cuda", 0))
