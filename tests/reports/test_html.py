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
