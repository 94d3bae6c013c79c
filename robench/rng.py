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
import math
from dataclasses import dataclass

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


#: mixed into a counter before it keys a stream
_COUNTER_SALT = 0x632BE5AB


def _stream_keys(seeds: Tensor, counter: int) -> Tensor:
    return hash32(seeds.long() ^ hash32(torch.full_like(seeds.long(), counter & _MASK32) + _COUNTER_SALT))


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
    """Standard normal by Box-Muller on two counter-based uniforms: normal ``counter`` c is built
    from uniform counters 2c and 2c + 1 (its own units; a :class:`Stream` does this bookkeeping)."""
    return _box_muller(seeds, 2 * counter, shape, dtype)


def _box_muller(seeds: Tensor, first: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Standard normal from the uniforms of counters ``first`` and ``first + 1``."""
    u1 = uniform(seeds, first, shape, torch.float64).clamp_min(1e-12)
    u2 = uniform(seeds, first + 1, shape, torch.float64)
    return (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)).to(dtype)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


#: counters one draw of each kind consumes (a normal is Box-Muller on two uniforms)
COUNTERS_PER_DRAW: dict[str, int] = {"uniform": 1, "normal": 2, "rademacher": 1, "bits": 1}


@dataclass(frozen=True)
class Layout:
    """Where numbered streams (restart r, step s, block b, ...) lie among an example's counters.

    Declared once per attack as data, so an attack names the stream it wants and never computes a
    counter. Two ways to lay streams out, both the ones robench's results were drawn with:

    * ``unit="draw"`` (the default): draw k of stream i is counter ``i * stride + k`` counted in
      that draw's own units, as ``uniform(seeds, c)`` and ``normal(seeds, c)`` address them (a
      normal's c is the uniform pair 2c, 2c + 1). With stride 1 and one draw per stream, stream i
      is simply "the i-th draw".
    * ``unit="counter"``: stream i owns the uniform counters ``[i * stride, (i + 1) * stride)``
      and its draws take them in order, each as many as it consumes (a normal: an aligned pair).
    """

    stride: int = 1
    unit: str = "draw"

    def __post_init__(self) -> None:
        if self.unit not in ("draw", "counter") or self.stride < 1:
            raise ValueError(f"bad stream layout {self}")

    def stream(self, seeds: Tensor, index: int = 0) -> "Stream":
        """Stream ``index`` of this layout for the examples of ``seeds``."""
        return Stream(seeds, self, index)


#: one stream after another, each draw the next of its kind: what most attacks use
DEFAULT_LAYOUT = Layout()


class Stream:
    """One named per-example random stream that allocates its own counters, draw after draw.

    ``stream(seeds, i)`` (or ``layout.stream(seeds, i)``) gives stream i; each call of
    :meth:`uniform`, :meth:`normal`, :meth:`rademacher` or :meth:`bits` is its next draw. A row's
    numbers depend only on its seed, the stream's index and the order of draws, never on the batch.
    """

    def __init__(self, seeds: Tensor, layout: Layout = DEFAULT_LAYOUT, index: int = 0) -> None:
        self.seeds = seeds
        self.layout = layout
        self.index = int(index)
        self._draws = 0  # draws made so far (unit "draw")
        self._next = self.index * layout.stride  # the next free uniform counter (unit "counter")
        self._positions: dict[int, Tensor] = {}  # hashed positions per draw size (bits)

    def _take(self, kind: str) -> int:
        """The counter of the next draw of ``kind``, in that kind's own units."""
        size = COUNTERS_PER_DRAW[kind]
        if self.layout.unit == "draw":
            counter = self.index * self.layout.stride + self._draws
            self._draws += 1
            return counter
        first = -(-self._next // size) * size  # a normal starts on an even counter
        end = self.index * self.layout.stride + self.layout.stride
        if first + size > end:
            raise ValueError(f"stream {self.index} has {self.layout.stride} counters; it cannot draw a {kind} at {first}")
        self._next = first + size
        return first // size

    def uniform(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        return uniform(self.seeds, self._take("uniform"), shape, dtype)

    def normal(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        return normal(self.seeds, self._take("normal"), shape, dtype)

    def rademacher(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, offset: int = 0) -> Tensor:
        """±1; ``offset``: start at that position of the draw (a block of a longer draw)."""
        return rademacher(self.seeds, self._take("rademacher"), shape, dtype, offset)

    def bits(self, shape: tuple[int, ...], rows: Tensor | None = None) -> Tensor:
        """32-bit integers, as :func:`random_bits`; ``rows``: for those examples only (a working
        set; the same numbers as ``subset(rows).bits(shape)``). What does not depend on the example
        (the hashed positions, the counter's key) is computed once, so an attack that draws a few
        numbers per example per step (Square) pays for its arithmetic, not for hashing."""
        counter = self._take("bits")
        seeds = (self.seeds if rows is None else self.seeds[rows]).long()
        n = math.prod(shape)
        if n not in self._positions:
            self._positions[n] = hash32(torch.arange(n, device=seeds.device, dtype=torch.long)).view(1, -1)
        keys = hash32(seeds ^ hash32((counter & _MASK32) + _COUNTER_SALT))  # plain ints: no tensor op
        return hash32(keys.view(-1, 1) ^ self._positions[n]).view(len(seeds), *shape)

    def subset(self, rows: Tensor) -> "Stream":
        """The same stream, at the same point, for the examples ``rows`` only."""
        other = Stream(self.seeds[rows], self.layout, self.index)
        other._draws, other._next = self._draws, self._next
        return other


def stream(seeds: Tensor, index: int = 0, layout: Layout = DEFAULT_LAYOUT) -> Stream:
    """Stream ``index`` (a restart, a step, a block) of the examples of ``seeds``, laid out by ``layout``."""
    return Stream(seeds, layout, index)
