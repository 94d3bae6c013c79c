"""robench list reads robench/catalog.json instead of importing torch; the file must match the registries."""
import json
import subprocess
import sys

from robench import catalog


def test_the_catalog_file_matches_the_registries():
    stored = json.loads(catalog.CATALOG.read_text())
    assert stored == catalog.build(), "robench/catalog.json is stale: regenerate it with `python -m robench.catalog`"


def test_robench_list_imports_no_torch_and_shows_every_section():
    code = ("import sys; from click.testing import CliRunner; from robench.cli import main; "
            "r = CliRunner().invoke(main, ['list']); print(r.output); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'robench list imported torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for title in (*catalog.SECTIONS, "defenses (cards)", "suites"):
        assert title in done.stdout
    assert "cnn " in done.stdout and "spsa " in done.stdout and "quick " in done.stdout


def test_robench_list_parameters_shows_each_declared_default_and_doc_without_torch():
    code = ("import sys; from click.testing import CliRunner; from robench.cli import main; "
            "r = CliRunner().invoke(main, ['list', '--parameters']); print(r.output); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'robench list imported torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steps=100 (an integer >= 1): iterations per restart" in done.stdout
    assert "intermediate='crown' (one of 'crown', 'ibp'): " in done.stdout


def test_an_unreadable_catalog_falls_back_to_the_registries(tmp_path, monkeypatch):
    broken = tmp_path / "catalog.json"
    broken.write_text("{not json")
    monkeypatch.setattr(catalog, "CATALOG", broken)
    assert catalog.sections() == catalog.build()
