"""RoPE past the trained context: the inverse frequencies of each scheme HF and llama.cpp
name, as HF's ``modeling_rope_utils`` computes them.

- linear (position interpolation): every frequency divided by the factor;
- llama3: long wavelengths divided by the factor, short ones kept, a smooth ramp between;
- yarn: a ramp between interpolated and kept frequencies by rotations per original
  context, and cos/sin scaled by an attention factor;
- factors: llama.cpp's ``rope_freqs`` tensor, its precomputed divisor per frequency (how
  its GGUFs carry Llama 3's scheme).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from conclave.kernels.rope import inv_freq

KINDS = ("linear", "llama3", "yarn", "factors")


@dataclass(frozen=True)
class RopeScaling:
    kind: str
    factor: float = 1.0
    original_max_len: int | None = None
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    freq_factors: tuple[float, ...] | None = None  # factors


def frequencies(head_dim: int, base: float, scaling: RopeScaling | None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [head_dim / 2], the factor cos and sin are multiplied by)."""
    freq = inv_freq(head_dim, base)
    if scaling is None:
        return freq, 1.0
    s = scaling
    if s.kind == "linear":
        return freq / s.factor, 1.0
    if s.kind == "factors":
        return freq / torch.tensor(s.freq_factors, dtype=torch.float32), 1.0
    if s.kind == "llama3":
        low_wavelen, high_wavelen = s.original_max_len / s.low_freq_factor, s.original_max_len / s.high_freq_factor
        wavelen = 2 * math.pi / freq
        scaled = torch.where(wavelen > low_wavelen, freq / s.factor, freq)
        smooth = (s.original_max_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, (1 - smooth) * scaled / s.factor + smooth * scaled, scaled), 1.0
    if s.kind == "yarn":
        return _yarn(head_dim, base, s)
    raise ValueError(f"unknown RoPE scaling {s.kind!r}")


def _yarn(dim: int, base: float, s: RopeScaling) -> tuple[torch.Tensor, float]:
    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.attention_factor
    if attention is None:
        attention = mscale(s.factor, s.mscale) / mscale(s.factor, s.mscale_all_dim) if s.mscale and s.mscale_all_dim \
            else mscale(s.factor)

    def correction_dim(rotations):  # the dimension whose wavelength fits ``rotations`` times in the context
        return dim * math.log(s.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(s.beta_fast), correction_dim(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 where a frequency rotates often enough in the original context to extrapolate
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    return (1.0 / (s.factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep, float(attention)
