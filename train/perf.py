"""Throughput accounting: FLOPs per token and model FLOPs utilisation (MFU).

FLOPs per trained token = 6 N + 12 L T d_attn (PaLM, appendix B): 6 N for the forward and
backward matmuls of the N parameters that are multiplied (the input embedding is a lookup,
so an untied input embedding is not counted; a tied one is, as the output head), plus the
attention score and value matmuls, which grow with the context T (L layers, d_attn = query
heads x head width). MFU divides achieved FLOP/s by the device's dense peak, looked up by
device name; there is no MFU on CPU (no meaningful peak).
"""

from __future__ import annotations

import torch

# dense peak TFLOP/s per device: (bf16/fp16 tensor core, fp32 matmul as the trainer runs it: tf32)
# from the vendors' datasheets; the first matching substring of the device name wins,
# so more specific names come first.
PEAK_TFLOPS: list[tuple[str, float, float]] = [
    ("H200", 989.0, 494.5),
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 417.5),
    ("H100", 989.0, 494.5),          # SXM / HBM3
    ("GH200", 989.0, 494.5),
    ("B200", 2250.0, 1100.0),
    ("A100", 312.0, 156.0),
    ("A10G", 70.0, 35.0),
    ("A10", 125.0, 62.5),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
    ("V100", 125.0, 15.7),
    ("T4", 65.0, 8.1),
]


def flops_per_token(n_params: int, *, vocab_size: int, hidden: int, num_layers: int, context: int,
                    attn_width: int, tied: bool) -> float:
    n_matmul = n_params - (0 if tied else vocab_size * hidden)
    return 6.0 * n_matmul + 12.0 * num_layers * context * attn_width


def peak_flops(device: torch.device, precision: str) -> float | None:
    """Dense peak FLOP/s of `device` at `precision` ("bf16" or "fp32"), None if unknown or CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bf16, fp32 in PEAK_TFLOPS:
        if key in name:
            return (bf16 if precision == "bf16" else fp32) * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float | None, world_size: int) -> float | None:
    """Fraction of the peak of all `world_size` devices that the run achieved."""
    if peak is None or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_per_tok / (peak * world_size)
