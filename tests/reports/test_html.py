"""The HTML report (robench/reports/html.py): content, escaping, self-containment, regeneration."""
from __future__ import annotations

import base64
import io
import json
import re
import sys

import pytest
from click.testing import CliRunner
from PIL import Image

from robench.reports import write_report
from robench.reports.commands import report

TWO_EPSILONS = {("none", 0.05): (18, 20), ("none", 0.1): (9, 20), ("bit-depth-3", 0.05): (19, 20), ("bit-depth-3", 0.1): (4, 20)}
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def full_run(run_dir_factory):
    return run_dir_factory(TWO_EPSILONS)


def data_uris(html: str) -> list[str]:
    return re.findall(r'src="(data:image/png;base64,[^"]+)"', html)


def test_report_holds_table_figures_images_diagnostics_and_metadata(full_run):
    path = write_report(full_run)
    html = path.read_text()
    assert path == full_run / "report.html"
    assert html.count('class="result-row') == 4
    # per attack, worst case with its interval, and the attack that broke most (SPSA breaks every broken example)
    assert "pgd" in html and "spsa" in html and "20.0%" in html and "spsa <span" in html
    assert re.search(r"20\.0% <span class=\"interval\">\[\d+\.\d%, \d+\.\d%\]", html)
    assert 'class="plot"' in html and html.count('class="grid"') == 4
    assert "gradient_free_beats_gradient" in html and "made_up_check" in html
    assert "2.13.0" not in html and "2.x" in html and "abc123" in html and "12.5 s" in html
    assert "Uesato" in html


def test_every_image_is_an_embedded_png_and_nothing_is_fetched(full_run):
    html = write_report(full_run).read_text()
    uris = data_uris(html)
    assert len(uris) == 2 + 4  # two figures, one grid per (defense, epsilon)
    for uri in uris:
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # no external resource of any kind
    assert "<script" not in html.lower() and "Content-Security-Policy" in html


def test_names_are_escaped_not_rendered(run_dir_factory):
    run = run_dir_factory({(EVIL, 0.1): (5, 10), ("costs $5 a $", 0.1): (5, 10)})  # "$" would start mathtext in a figure
    cards = json.loads((run / "run.json").read_text())
    cards["suite"]["attacks"][0]["repr"] = '"><img src=x onerror=alert(2)>'
    cards["failed_units"] = [{"defense": EVIL, "epsilon": 0.1, "attack": "pgd", "error": "<b>boom</b>"}]
    (run / "run.json").write_text(json.dumps(cards))
    html = write_report(run).read_text()
    assert EVIL not in html and "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "<b>boom" not in html and "&lt;b&gt;boom&lt;/b&gt;" in html
    assert "costs $5 a $" in html and len(data_uris(html)) == 2 + 2


def test_report_is_regenerated_from_the_files_alone(full_run):
    first = write_report(full_run).read_text()
    (full_run / "report.html").unlink()
    result = CliRunner().invoke(report, [str(full_run)])
    assert result.exit_code == 0, result.output
    assert (full_run / "report.html").read_text() == first  # deterministic: same files, same page


def test_optional_files_may_be_missing_and_one_epsilon_is_fine(run_dir_factory):
    run = run_dir_factory({("none", 0.1): (6, 10), ("jpeg", 0.1): (8, 10)}, diagnostics=False, adversarial=False)
    (run / "examples.csv").unlink()
    html = write_report(run).read_text()
    assert html.count('class="result-row') == 2 and len(data_uris(html)) == 2
    assert "no diagnostics.csv" in html and 'id="examples"' not in html


def test_failed_units_are_shown_prominently(run_dir_factory):
    failed = [{"defense": "none", "epsilon": 0.1, "attack": "spsa", "error": "RuntimeError: CUDA out of memory"}]
    html = write_report(run_dir_factory({("none", 0.1): (6, 10)}, failed_units=failed)).read_text()
    assert 'id="failed-units"' in html and "CUDA out of memory" in html
    assert html.index('id="failed-units"') < html.index('id="headline"')
    assert "partial" in html


def test_check_sentences_come_from_diagnostics_with_a_fallback(full_run, monkeypatch):
    pytest.importorskip("robench.diagnostics")
    from robench.diagnostics import CHECKS

    html = write_report(full_run).read_text()
    assert CHECKS["gradient_free_beats_gradient"][:60].replace("'", "&#39;") in html
    monkeypatch.setitem(sys.modules, "robench.diagnostics", None)  # import fails: fall back to the detail column
    html = write_report(full_run).read_text()
    assert "spsa broke 7 examples" in html and CHECKS["gradient_free_beats_gradient"][:60] not in html


def test_report_command_turns_bad_input_into_one_line(tmp_path):
    result = CliRunner().invoke(report, [str(tmp_path / "missing")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("defense,epsilon\nx,0.1\n")
    result = CliRunner().invoke(report, [str(tmp_path / "run")])
    assert result.exit_code == 2 and "lacks column" in result.output


# --------------------------------------------------------------------------- sequences and attack kinds
def test_a_run_of_sequences_renders_a_line_plot_per_example(run_dir_factory):
    """adversarial.npz with N x C x L arrays: the grid is a line plot of clean vs adversarial signal."""
    import numpy as np

    from robench.reports.html import report_context
    from robench.reports.rundir import load_run

    run = run_dir_factory({("none", 0.05): (6, 10), ("none", 0.1): (3, 10)}, sequence=(1, 40))
    assert load_run(run).adversarial["x"].shape == (6, 1, 40)
    context = report_context(load_run(run))
    assert [g["kind"] for g in context["grids"]] == ["sequence", "sequence"]
    html = write_report(run).read_text()
    assert html.count('class="grid"') == 2 and html.count('data-kind="sequence"') == 2 and 'data-kind="image"' not in html
    assert "line plots of clean and adversarial signals" in html and "clean signal (solid)" in html
    assert "clean image, adversarial image" not in html
    uris = data_uris(html)
    assert len(uris) == 2 + 2
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[-1].split(",", 1)[1]))).convert("RGB"), dtype=int)
    assert grid.shape[1] > 100 and grid.shape[0] > 100
    red = np.abs(grid - np.array([0xC0, 0x39, 0x2B])).sum(axis=2) < 40  # the adversarial line's colour
    assert red.sum() > 50, "no adversarial signal drawn"


def test_sequences_with_several_channels_render(run_dir_factory):
    run = run_dir_factory({("none", 0.1): (3, 10)}, sequence=(5, 64), diagnostics=False)
    html = write_report(run).read_text()
    assert html.count('data-kind="sequence"') == 1 and len(data_uris(html)) == 2 + 1


def test_images_are_still_drawn_as_images(full_run):
    html = write_report(full_run).read_text()
    assert html.count('data-kind="image"') == 4 and "clean image, adversarial image" in html
    assert "line plots" not in html


@pytest.mark.parametrize("shape", [(3, 40), (3, 1, 2, 6, 6)])
def test_adversarial_arrays_of_another_rank_are_one_clear_error(run_dir_factory, shape):
    import numpy as np

    from robench.errors import RobenchError
    from robench.reports.rundir import load_run

    run = run_dir_factory({("none", 0.1): (3, 10)})
    x = np.zeros(shape, dtype=np.float32)
    np.savez(run / "adversarial.npz", defense=np.array(["none"] * 3), epsilon=np.full(3, 0.1), attack=np.array(["pgd"] * 3),
             example=np.arange(3), x=x, x_adv=x)
    with pytest.raises(RobenchError, match=r"N x C x L \(sequences\) or N x C x H x W \(images\)") as error:
        load_run(run)
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(report, [str(run)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_gradient_free_is_read_from_run_json_never_guessed_from_the_name(run_dir_factory):
    """An attack whose run.json entry lacks the flag counts as a gradient attack, even if named "spsa"."""
    from robench.reports import html as html_module
    from robench.reports.html import report_context
    from robench.reports.rundir import load_run

    assert not hasattr(html_module, "GRADIENT_FREE_NAMES")
    run = run_dir_factory({("none", 0.1): (6, 10)})
    flagged = report_context(load_run(run))
    assert {a["label"]: a["gradient_free"] for a in flagged["attacks"]} == {"pgd": False, "spsa": True}
    assert "(grad-free)" in write_report(run).read_text() and not flagged["unrecorded"]

    cards = json.loads((run / "run.json").read_text())
    for entry in cards["suite"]["attacks"]:
        del entry["gradient_free"]
    (run / "run.json").write_text(json.dumps(cards))
    context = report_context(load_run(run))
    kinds = {a["label"]: (a["gradient_free"], a["recorded"], a["kind"]) for a in context["suite_attacks"]}
    assert kinds == {"pgd": (False, False, "gradient (not recorded in run.json)"),
                     "spsa": (False, False, "gradient (not recorded in run.json)")}
    html = write_report(run).read_text()
    assert "(grad-free)" not in html and ">gradient-free<" not in html
    assert 'id="unrecorded-kinds"' in html and "guesses nothing from their names" in html
    (gradient_figure,) = [f for f in context["figures"] if f["title"].startswith("Gradient attacks")]
    assert "only pgd, spsa count" in gradient_figure["caption"] and "guesses nothing" in gradient_figure["caption"]


def test_gradient_only_curves_are_the_worst_case_over_the_gradient_attacks(run_dir_factory):
    """With examples.csv, the gradient-only worst case of one attack is that attack's row of results.csv;
    over every attack, it is the suite's worst case."""
    import numpy as np

    from robench.reports.html import _gradient_only
    from robench.reports.rundir import load_run
    from robench.schema import WORST_CASE

    run = load_run(run_dir_factory(TWO_EPSILONS, diagnostics=False, adversarial=False))
    columns = ["robust_accuracy", "robust_accuracy_low", "robust_accuracy_high"]
    for labels, attack in ((["pgd"], "pgd"), (["pgd", "spsa"], WORST_CASE)):
        curves, title = _gradient_only(run, labels)
        expected = run.results[run.results["attack"] == attack]
        assert title == "Gradient attacks only" and len(curves) == len(expected) == 4
        assert curves["defense"].tolist() == expected["defense"].tolist()
        np.testing.assert_allclose(curves[columns].to_numpy(float), expected[columns].to_numpy(float))


def test_the_banner_tells_questions_from_notes_on_what_the_harness_handled(run_dir_factory):
    import pandas as pd

    from robench.diagnostics.probes import HANDLED
    from robench.reports import html as report_html

    assert report_html.HANDLED_MARK == HANDLED
    path = run_dir_factory({("bit-depth-3", 0.1): (4, 20), ("none", 0.1): (0, 20)})
    rows = [
        {"defense": "bit-depth-3", "epsilon": 0.1, "check": "vanishing_gradients", "fired": True,
         "detail": f"64 below 1e-20; {HANDLED} the target declares differentiable=False, so gradient attacks use BPDA"},
        {"defense": "none", "epsilon": 0.1, "check": "attack_not_converged", "fired": True, "detail": "the longer broke more"},
    ]
    pd.DataFrame(rows).to_csv(path / "diagnostics.csv", index=False)
    html = write_report(path).read_text()
    assert 'id="diagnostics-alert"' not in html and "2 note(s), no check questions a number" in html
    assert "no number to inflate" in html and html.count('class="badge note"') == 2
    rows[1]["defense"] = "bit-depth-3"  # robust accuracy 0.2 there: this one questions the number
    pd.DataFrame(rows).to_csv(path / "diagnostics.csv", index=False)
    html = write_report(path).read_text()
    assert "1 check(s) question a number" in html and "1 more fired check(s) are notes" in html


def test_cascade_cells_are_marked_and_explained(run_dir_factory):
    """In a cascade a later attack is given only what earlier attacks left standing: its cell is
    marked, says in its title how many it was given and broke, and a note under the table says why."""
    import pandas as pd

    run = run_dir_factory({("none", 0.1): (5, 20)})
    html = write_report(run).read_text()
    assert 'id="cascade-note"' not in html and "clean-correct examples (a cascade" not in html
    results = pd.read_csv(run / "results.csv")
    assert "attacked" in results.columns
    spsa = results["attack"] == "spsa"
    results.loc[spsa, "attacked"] = 11  # of the 18 clean-correct: PGD broke 7 before SPSA ran
    results.to_csv(run / "results.csv", index=False)
    html = write_report(run).read_text()
    assert 'id="cascade-note"' in html
    assert re.search(r'title="given 11 of the 18 clean-correct examples \(a cascade: only those earlier attacks left standing\); '
                     r'broke 13">25\.0%\*</td>', html)
    assert html.count("%*</td>") == 1  # PGD was given every clean-correct example: unmarked
