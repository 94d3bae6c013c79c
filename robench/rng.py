"""Counter-based randomness: every random number is a hash of (example seed, counters).

Why not a ``torch.Generator`` stream: a stream's numbers depend on how many were drawn before,
so an attack's result for one example would change with the batch it ran in, the chunk size, the
shard, or the executor. A counter-based generator (as in Philox / Salmon et al. 2011) gives each
example its own stream, addressed by position, so batched, chunked, sharded and resumed runs all
give the same numbers. The hash is Wellons' "lowbias32" integer mixer, evaluated in int64 with a
32-bit mask so it behaves the same on every device.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def hash32(x: Tensor) -> Tensor:
    """Mix 32-bit integers (held in int64) into well-spread 32-bit integers."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any printable parts (run seed, labels, example ids)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def example_seeds(run_seed: int, key: str, example_ids: Tensor) -> Tensor:
    """Per-example 32-bit seeds for one attack (``key``), independent of batch composition."""
    base = derive_seed(run_seed, key)
    return hash32(hash32(example_ids.long() + base) + 0x9E3779B9)


def _stream_keys(seeds: Tensor, counter: int) -> Tensor:
    return hash32(seeds.long() ^ hash32(torch.full_like(seeds.long(), counter & _MASK32) + 0x632BE5AB))


def random_bits(seeds: Tensor, counter: int, shape: tuple[int, ...], offset: int = 0) -> Tensor:
    """32-bit random integers of shape (len(seeds), *shape), one stream per seed.

    Element ``i`` (in row-major order) of each row is position ``offset + i`` of that seed's
    stream, so a caller can draw any block of a stream without drawing what comes before it.
    """
    keys = _stream_keys(seeds, counter)
    n = 1
    for s in shape:
        n *= s
    positions = hash32(torch.arange(offset, offset + n, device=seeds.device, dtype=torch.long))
    bits = hash32(keys.view(-1, 1) ^ positions.view(1, -1))
    return bits.view(len(seeds), *shape)


def rademacher(
    seeds: Tensor, counter: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, offset: int = 0
) -> Tensor:
    """±1 with equal probability, shape (len(seeds), *shape)."""
    bits = random_bits(seeds, counter, shape, offset)
    return ((bits >> 7) & 1).to(dtype) * 2 - 1


def uniform(seeds: Tensor, counter: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform on [0, 1) with 24 random bits, shape (len(seeds), *shape)."""
    bits = random_bits(seeds, counter, shape)
    return ((bits >> 8).to(torch.float64) / float(1 << 24)).to(dtype)


def normal(seeds: Tensor, counter: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal by Box-Muller on two counter-based uniforms."""
    u1 = uniform(seeds, 2 * counter, shape, torch.float64).clamp_min(1e-12)
    u2 = uniform(seeds, 2 * counter + 1, shape, torch.float64)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)).to(dtype)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
