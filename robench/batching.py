"""Choose a forward batch size by a short timed probe of the target.

Per-row cost is not monotone in batch size: on a CPU a forward of ~1,000 rows costs about half
as much per row as one of 65,000 (activations fall out of cache), while on a GPU larger batches
keep improving until memory runs out. So robench measures instead of guessing: a few forwards
at doubling sizes, stopping once the cost per row has clearly turned up. Results never depend on
the chosen size (attacks sum in a fixed order), only speed does.
"""
from __future__ import annotations

import logging
import time

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

CANDIDATES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
_cache: dict[tuple, int] = {}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def fastest_batch_size(
    target: nn.Module,
    example: Tensor,
    *,
    candidates: tuple[int, ...] = CANDIDATES,
    limit: int | None = None,
    repeats: int = 2,
) -> int:
    """The candidate batch size with the lowest time per row for ``target`` on inputs like ``example``.

    ``example`` is one input (C, H, W) or a batch whose first row is used. Sizes above ``limit``
    are not tried. The answer is cached per target, input shape, dtype and device.
    """
    row = example[:1] if example.dim() > 1 and example.shape[0] >= 1 else example.unsqueeze(0)
    key = (id(target), tuple(row.shape[1:]), row.dtype, str(row.device), limit)
    if key in _cache:
        return _cache[key]
    best_size, best_cost = candidates[0], float("inf")
    for size in candidates:
        if limit is not None and size > limit:
            break
        batch = row.expand(size, *row.shape[1:]).contiguous()
        try:
            target(batch)  # warm-up (allocations, kernel selection)
            _synchronize(row.device)
            start = time.perf_counter()
            for _ in range(repeats):
                target(batch)
            _synchronize(row.device)
        except torch.cuda.OutOfMemoryError:
            break
        cost = (time.perf_counter() - start) / (repeats * size)
        if cost < best_cost:
            best_size, best_cost = size, cost
        elif cost > 1.3 * best_cost:
            break  # past the sweet spot
    log.debug("fastest batch size for %s on %s: %d (%.2f us/row)", type(target).__name__, row.device, best_size, best_cost * 1e6)
    _cache[key] = best_size
    return best_size
