"""The output contract of ``robench evaluate --out DIR``: results.csv, examples.csv, run.json.

Later tools (``robench report``, ``robench check``) read only these files. Each is written
atomically, and all of them only after the evaluation finished, so a crash leaves no
half-written report.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from robench.errors import RobenchError
from robench.io import atomic_write_bytes, atomic_write_csv, atomic_write_json
from robench.assemble import Evaluation
from robench.schema import ADVERSARIAL, DIAGNOSTICS, EXAMPLES, RESULTS, RUN


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and make sure we can write there, before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobenchError(f"cannot create output directory {str(path)!r} ({exc.strerror}); choose another --out") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise RobenchError(f"output directory {str(path)!r} is not writable; choose another --out")
    return path


def write_evaluation(evaluation: Evaluation, out: str | Path, *, report: bool = True) -> list[Path]:
    """Write the output files, each atomically; the HTML report last, from the files alone."""
    out = Path(out)
    atomic_write_csv(out / EXAMPLES, evaluation.examples)
    atomic_write_json(out / RUN, evaluation.run)
    atomic_write_csv(out / DIAGNOSTICS, evaluation.diagnostics)
    written = [out / RESULTS, out / EXAMPLES, out / RUN, out / DIAGNOSTICS]
    if evaluation.adversarial:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **evaluation.adversarial)
        atomic_write_bytes(out / ADVERSARIAL, buffer.getvalue())
        written.append(out / ADVERSARIAL)
    atomic_write_csv(out / RESULTS, evaluation.results)
    if report:
        from robench.reports import write_report

        written.append(write_report(out))
    return written
