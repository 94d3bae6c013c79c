"""Forward batch sizes: a fixed size from the input's size (what attacks use), and a timed probe.

Attacks chunk their forwards by :func:`chunk_rows`, which depends on the shape of one input and
nothing else: a convolution's last float32 bits can follow the batch size its kernel runs at, so a
size chosen by timing would let the load on the machine change a number (issue 13). The timed
probe :func:`fastest_batch_size` stays for benchmarks and for users who pass its answer as
``--max-batch``.

The probe:

Per-row cost is not monotone in batch size: on a CPU a forward of ~1,000 rows costs about half
as much per row as one of 65,000 (activations fall out of cache), while on a GPU larger batches
keep improving until memory runs out. So robench measures instead of guessing: a few forwards
at doubling sizes, stopping once the cost per row has clearly turned up, or once one forward takes
longer than ``SLOW_FORWARD_S`` (past that, the per-call overhead that batching amortizes is
negligible, and a slow model would spend minutes probing sizes it does not need). Results never
depend on the chosen size (attacks sum in a fixed order), only speed does.
"""
from __future__ import annotations

import logging
import time
import weakref

import torch
from torch import Tensor, nn

from robench.tags import target_tags
from robench.target import probe_target

log = logging.getLogger(__name__)

#: input elements per chunk: about 1,000 rows of 1 x 28 x 28 (the sweet spot per row measured on a
#: CPU), 4,096 rows of 8 x 8, 256 of 3 x 32 x 32
CHUNK_ELEMENTS = 1 << 20
#: the smallest and largest chunk :func:`chunk_rows` picks
CHUNK_MIN, CHUNK_MAX = 64, 4096


def chunk_rows(example: Tensor) -> int:
    """Rows per forward chunk for inputs like ``example`` (one input, or a batch): a power of two
    from the size of one input alone, so no number depends on timing or on the machine."""
    row = example[0] if example.dim() > 1 and example.shape[0] >= 1 else example
    elements = max(int(row.numel()), 1)
    rows = max(CHUNK_MIN, min(CHUNK_MAX, CHUNK_ELEMENTS // elements))
    return 1 << (rows.bit_length() - 1)


#: a forward this slow is large enough: bigger batches would not amortize anything more
SLOW_FORWARD_S = 0.1
#: the fixed chunk size for randomized targets (see fastest_batch_size)
RANDOMIZED_BATCH = 1024
#: a larger size wins only if it is this much cheaper per row (timings are noisy; smaller is safer)
TIE = 1.05
CANDIDATES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
#: per target (weakly held, so a freed target's id is never mistaken for a new one's): key -> size
_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


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
    repeats: int = 3,
) -> int:
    """The candidate batch size with the lowest time per row for ``target`` on inputs like ``example``.

    ``example`` is one input (C, H, W) or a batch whose first row is used. Sizes above ``limit``
    are not tried. The answer is cached per target, input shape, dtype and device.
    """
    # a wrapper that forwards to one target per row (BPDA) is probed and cached as that target, so
    # a fresh wrapper per work unit does not pay for a new probe each time
    target = probe_target(target)
    if target_tags(target).randomized:
        # a randomized defense's draws depend on the batch an example runs in: a size chosen by
        # timing would make its numbers vary from run to run, so it gets a fixed one
        return min(RANDOMIZED_BATCH, limit) if limit is not None else RANDOMIZED_BATCH
    row = example[:1] if example.dim() > 1 and example.shape[0] >= 1 else example.unsqueeze(0)
    key = (tuple(row.shape[1:]), row.dtype, str(row.device), limit, tuple(candidates))
    try:
        known = _cache.setdefault(target, {})
    except TypeError:  # a target that cannot be weakly referenced is probed every time
        known = {}
    if key in known:
        return known[key]
    best_size, best_cost = candidates[0], float("inf")
    for size in candidates:
        if limit is not None and size > limit:
            break
        batch = row.expand(size, *row.shape[1:]).contiguous()
        try:
            target(batch)  # warm-up (allocations, kernel selection)
            _synchronize(row.device)
            per_forward = float("inf")
            for _ in range(repeats):  # the fastest repeat: the least disturbed by other processes
                start = time.perf_counter()
                target(batch)
                _synchronize(row.device)
                per_forward = min(per_forward, time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            break
        cost = per_forward / size
        if cost < best_cost / TIE:  # a larger batch must be clearly faster to win: it costs memory
            best_size, best_cost = size, cost
        elif cost > 1.3 * best_cost:
            break  # past the sweet spot
        if per_forward > SLOW_FORWARD_S:
            break  # large enough; stop before a slow model spends minutes probing
    log.debug("fastest batch size for %s on %s: %d (%.2f us/row)", type(target).__name__, row.device, best_size, best_cost * 1e6)
    known[key] = best_size
    return best_size
