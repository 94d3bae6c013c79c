"""Gradient-masking diagnostics: named checks that say, in words, why a robustness number is suspect.

A defense that only hides its gradients looks robust to gradient attacks and to nothing else
(Uesato et al. 2018, the "obscurity" of a defense; Athalye, Carlini, Wagner 2018, obfuscated
gradients). The checks are the symptoms those papers, and the checklist of Carlini et al.
2019 ("On Evaluating Adversarial Robustness"), list for it:

* table checks (:mod:`.table`) read the examples table of a finished run (pure pandas):
  ``gradient_free_beats_gradient`` and ``accuracy_not_decreasing``;
* probe checks (:mod:`.probes`) run small extra attacks on a sample of ``PROBE_EXAMPLES``
  clean-correct examples: ``unbounded_attack_fails``, ``attack_not_converged``,
  ``vanishing_gradients``, ``randomized_predictions`` and ``transfer_beats_whitebox``; and
  (:mod:`.checklist`) ``single_step_beats_iterative``, ``random_search_beats_attacks``,
  ``hard_label_beats_gradient``, ``gradient_mismatch``, ``restart_sensitivity``,
  ``step_size_sensitivity`` and ``targeted_beats_untargeted``.

Each check is declared once, with :func:`check` (:mod:`.registry`); the name lists and the report
sentences below are derived from that registry. Every check yields one :class:`Diagnostic` per
(defense, epsilon) it ran on, fired or not; a check that cannot run says why in its detail
("not run: ...") and does not fire.

Thresholds are constants of the submodule that uses them (re-exported here for reading; patch them
there). Paired comparisons (the same examples under two attacks, or under two epsilons) use the
exact one-sided sign test on the discordant examples (McNemar's exact test).
"""
from __future__ import annotations

from robench.diagnostics.registry import ALPHA, KINDS, Check, Diagnostic, Finding, check, diagnostics_frame, registered
from robench.diagnostics.table import (
    GRADIENT_FREE_GAP, accuracy_not_decreasing, gradient_free_beats_gradient, table_checks,
)
from robench.diagnostics.probes import (  # imported after .table: the registry's order is the report's order
    CONVERGENCE_DROP, CONVERGENCE_FACTOR, PGD_STEPS, PROBE_EOT_SAMPLES, PROBE_EXAMPLES, RANDOMIZED_PROBE_EXAMPLES,
    RANDOMNESS_LOGIT_TOLERANCE, RANDOMNESS_PASSES, TRANSFER_EXCESS, UNBOUNDED_MAX_ROBUST, UNBOUNDED_PGD_REL_STEPSIZE,
    UNBOUNDED_PGD_STEPS, UNBOUNDED_SPSA, VANISHING_FRACTION, VANISHING_NORM, input_gradient_norms, probe_checks,
    probe_examples, unbounded_threat,
)
from robench.diagnostics import checklist  # noqa: E402,F401  (after .probes: the rest of the checklist's probes)
from robench.schema import DIAGNOSTIC_COLUMNS
from robench.stats import sign_test

#: What a report shows for each check: what it means, why it suggests masking, what to do.
CHECKS: dict[str, str] = {c.name: c.sentence for c in registered()}
TABLE_CHECKS: tuple[str, ...] = tuple(c.name for c in registered("table"))
PROBE_CHECKS: tuple[str, ...] = tuple(c.name for c in registered("probe"))
#: diagnostics.csv's columns, as a list (what ``pd.DataFrame(columns=...)`` takes)
COLUMNS: list[str] = list(DIAGNOSTIC_COLUMNS)


def probe_budget(n_examples: int, *, randomized: bool) -> int:
    """Model queries of one probe unit with ``n_examples`` clean-correct candidates (a generous sum
    over every probe check, from their own constants): what progress counts, never a result."""
    from robench.attacks.decision import HopSkipJump

    hsj = HopSkipJump(**checklist.HSJ).budget(None)  # type: ignore[arg-type]  (its budget ignores the threat)
    pgd = PGD_STEPS + 1
    per_example = (UNBOUNDED_PGD_STEPS + UNBOUNDED_SPSA["steps"] * (UNBOUNDED_SPSA["samples"] + 1)
                   + pgd * (1 + CONVERGENCE_FACTOR) + pgd  # base, longer, transfer
                   + 2 * RANDOMNESS_PASSES + 2 + checklist.RANDOM_SEARCH_SAMPLES + hsj
                   + 4 * checklist.FD_PAIRS + 2 + pgd * (checklist.RESTARTS + len(checklist.STEP_FACTORS))
                   + pgd * checklist.TARGET_CLASSES)
    return min(n_examples, probe_examples(randomized)) * per_example

__all__ = [
    "ALPHA", "CHECKS", "COLUMNS", "CONVERGENCE_DROP", "CONVERGENCE_FACTOR",
    "GRADIENT_FREE_GAP", "KINDS", "PGD_STEPS", "PROBE_CHECKS", "PROBE_EOT_SAMPLES", "PROBE_EXAMPLES", "RANDOMIZED_PROBE_EXAMPLES", "RANDOMNESS_LOGIT_TOLERANCE",
    "RANDOMNESS_PASSES", "TABLE_CHECKS", "TRANSFER_EXCESS", "UNBOUNDED_MAX_ROBUST", "UNBOUNDED_PGD_REL_STEPSIZE",
    "UNBOUNDED_PGD_STEPS", "UNBOUNDED_SPSA", "VANISHING_FRACTION", "VANISHING_NORM", "Check", "Diagnostic", "Finding",
    "accuracy_not_decreasing", "check", "diagnostics_frame", "gradient_free_beats_gradient",
    "input_gradient_norms", "probe_budget", "probe_checks", "probe_examples", "registered", "sign_test", "table_checks", "unbounded_threat",
]
