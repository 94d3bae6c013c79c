"""Property-based fuzzing of what robench reads from disk besides cards: .npz data files and run directories.

* Any .npz (random arrays of random shapes, dtypes and keys, in the x/y and the x_test/y_test form,
  or bytes that are no archive at all) through ``robench.data.load_dataset``: a valid Dataset
  (finite inputs in [0, 1], integer labels below ``num_classes``, matching lengths) or a
  one-line RobenchError, never any other exception.
* A real run directory, made once per module, damaged at random (a file truncated, garbled or
  deleted, a CSV cell set to random text, a byte of a unit file flipped), then ``robench report``,
  ``robench check`` and ``robench evaluate --resume``: exit 0 (a resume reruns what was damaged and
  gives back the original results.csv), or exit 2 with one line and no traceback (``check`` may
  also fail the gate, exit 1, when a damaged name no longer matches the baseline); and nothing
  lost: ``report`` and ``check`` change no file but report.html, which is whole or as it was.
"""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robench.cli import main
from robench.data import Dataset, load_dataset
from robench.errors import RobenchError
from robench_testing import TINY_SUITE, write_suite


def _fuzz(n: int):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- npz files
DTYPES = ("uint8", "int8", "int32", "int64", "uint64", "float16", "float32", "float64", "bool", "complex64", "<U2", "object")
KEYS = ("x", "y", "x_test", "y_test", "x_train", "y_train", "images", "labels")


@st.composite
def arrays(draw, n: int, labels: bool) -> np.ndarray:
    """An array of ``n`` rows (or any shape), of a random dtype, its values in a random regime."""
    plausible = draw(st.integers(0, 4)) > 0
    if plausible:  # images / sequences, or labels, of a likely dtype
        shape = (n,) if labels else (n, *draw(st.lists(st.sampled_from([1, 2, 3, 4, 5, 8]), min_size=2, max_size=3)))
        dtype = draw(st.sampled_from(("int64", "int32", "uint8") if labels else ("float32", "float64", "uint8")))
    else:
        shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=5)))
        dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    regimes = ("unit", "wide", "special", "small-ints", "huge")
    regime = draw(st.sampled_from(regimes[:1] if plausible and draw(st.booleans()) else regimes))
    if labels and plausible and draw(st.booleans()):
        regime = "small-ints"
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) if shape else 1
    if regime == "unit":
        values = rng.random(size)
    elif regime == "wide":
        values = rng.normal(0, 100, size)
    elif regime == "special":
        values = rng.choice([0.0, 1.0, np.nan, np.inf, -np.inf, -0.0, 0.5], size)
    elif regime == "small-ints":
        values = rng.integers(0, 4, size).astype(float)
    else:
        values = rng.choice([0.0, 1e12, -1e12, 2.0**63, 1e300], size)
    if dtype == "object":
        return np.array([None] * size, dtype=object).reshape(shape) if size else np.empty(shape, dtype=object)
    if dtype == "<U2":
        return rng.choice(["a", "1", "", "0"], size).reshape(shape)
    with np.errstate(all="ignore"):
        if np.issubdtype(np.dtype(dtype), np.integer):
            values = np.nan_to_num(values, nan=0, posinf=0, neginf=0)
            info = np.iinfo(dtype)
            values = np.clip(values, info.min, info.max)
        return values.astype(dtype).reshape(shape)


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray] | bytes:
    if draw(st.integers(0, 9)) == 0:  # not an archive of arrays at all
        return draw(st.one_of(st.binary(max_size=64), st.just(b"PK\x03\x04" + b"\x00" * 30)))
    form = draw(st.sampled_from(("pool", "splits", "random")))
    n = draw(st.one_of(st.integers(0, 16), st.integers(4, 16)))
    if form == "pool":
        keys = ["x", "y"]
    elif form == "splits":
        keys = ["x_test", "y_test"] + (["x_train", "y_train"] if draw(st.booleans()) else [])
    else:
        keys = draw(st.lists(st.sampled_from(KEYS), min_size=0, max_size=5, unique=True))
    contents = {}
    for key in keys:
        rows = n if draw(st.integers(0, 4)) else draw(st.integers(0, 12))  # mostly matching lengths
        contents[key] = draw(arrays(rows, labels=key.startswith("y") or key == "labels"))
    return contents


def _write_npz(path: Path, contents: dict[str, np.ndarray] | bytes) -> None:
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        np.savez(path, **contents)


def _assert_valid(data: Dataset) -> None:
    assert isinstance(data, Dataset)
    for x, y in ((data.x_test, data.y_test), (data.x_train, data.y_train)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y)
        assert torch.isfinite(x).all() and (x >= 0).all() and (x <= 1).all()
        assert (y >= 0).all() and (y < data.num_classes).all()
    assert len(data.x_test) >= 1 and data.x_test.ndim in (3, 4)
    assert data.x_train.shape[1:] == data.x_test.shape[1:]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@_fuzz(300)
@given(contents=npz_contents())
def test_any_npz_loads_as_a_valid_dataset_or_fails_in_one_line(scratch, contents):
    path = scratch / "fuzz.npz"
    _write_npz(path, contents)
    try:
        data = load_dataset(str(path))
    except RobenchError as error:
        assert _one_line(str(error)), str(error)
    else:
        _assert_valid(data)


# --------------------------------------------------------------------------------------------- run directories
OPTIONS = ["--defense", "none", "--n-examples", "6", "--no-diagnostics", "--quiet"]


@pytest.fixture(scope="module")
def pristine(scratch):
    """A real run directory and its baseline, made once: the tiny suite on six digits."""
    home = scratch / "pristine"
    home.mkdir()
    suite = write_suite(home, TINY_SUITE)
    run = home / "run"
    made = CliRunner().invoke(main, ["evaluate", *OPTIONS, "--suite", suite, "--out", str(run)])
    assert made.exit_code == 0, made.output
    based = CliRunner().invoke(main, ["check", str(run), "--baseline", str(home / "baseline.csv"), "--update-baseline"])
    assert based.exit_code == 0, based.output
    files = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.name != "suite.toml")
    return {"home": home, "suite": suite, "files": files,
            "results": pd.read_csv(run / "results.csv").drop(columns=["seconds"])}


OPERATIONS = ("truncate", "garble", "delete", "edit-cell", "flip-byte")


@st.composite
def damages(draw, files: list[str]) -> list[tuple]:
    """One to three damages, each to a file of the run (or its baseline)."""
    unit_files = [f for f in files if "/units/" in f]
    found = []
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(OPERATIONS))
        name = draw(st.sampled_from(unit_files if operation == "flip-byte" and draw(st.booleans()) else files))
        found.append((operation, name, draw(st.floats(0, 1)), draw(st.floats(0, 1)),
                      draw(st.one_of(st.binary(min_size=1, max_size=16), st.text(max_size=12).map(str.encode)))))
    return found


def _apply(root: Path, damage: list[tuple]) -> None:
    for operation, name, where, other, data in damage:
        path = root / name
        if not path.exists():
            continue
        content = path.read_bytes()
        at = int(where * len(content))
        if operation == "truncate":
            path.write_bytes(content[:at])
        elif operation == "garble":
            path.write_bytes(content[:at] + data + content[at + len(data):])
        elif operation == "delete":
            path.unlink()
        elif operation == "flip-byte" and content:
            at = min(at, len(content) - 1)
            mask = (data[0] if data else 0) or 1
            path.write_bytes(content[:at] + bytes([content[at] ^ mask]) + content[at + 1:])
        elif operation == "edit-cell" and name.endswith(".csv"):
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except Exception:  # noqa: BLE001 - damaged already: leave it so
                continue
            if frame.empty or not len(frame.columns):
                continue
            row, column = int(where * (len(frame) - 1)), frame.columns[int(other * (len(frame.columns) - 1))]
            frame.loc[frame.index[row], column] = data.decode("utf-8", "replace")
            frame.to_csv(path, index=False)


def _copy(pristine) -> Path:
    root = Path(tempfile.mkdtemp(dir=pristine["home"].parent))
    shutil.copytree(pristine["home"] / "run", root / "run")
    shutil.copy(pristine["home"] / "baseline.csv", root / "baseline.csv")
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_nothing_lost(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    report = "run/report.html"
    assert sorted(set(after) - {report}) == sorted(set(before) - {report}), "report and check add or remove no file"
    for name, content in before.items():
        if name != report:
            assert after[name] == content, f"{name} changed"
    if report in after and after[report] != before.get(report):
        assert after[report].rstrip().endswith(b"</html>"), "report.html is written whole or left as it was"


def _assert_clean_failure(result, allowed: tuple[int, ...]) -> None:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in allowed, result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") and _one_line(result.output), result.output


def test_the_run_directory_fuzz_has_a_real_run_to_damage(pristine):
    files = pristine["files"]
    assert "run/results.csv" in files and "run/plan.json" in files and "baseline.csv" in files
    assert any(f.endswith(".sha256") for f in files) and any(f.endswith(".npz") and "/units/" in f for f in files)


@_fuzz(12)
@given(data=st.data())
def test_report_on_a_damaged_run_is_a_report_or_one_line(pristine, data):
    root = _copy(pristine)
    try:
        _apply(root, data.draw(damages(pristine["files"])))
        before = _snapshot(root)
        result = CliRunner().invoke(main, ["report", str(root / "run")])
        _assert_clean_failure(result, (0, 2))
        _assert_nothing_lost(before, _snapshot(root))
        if result.exit_code == 0:
            assert (root / "run" / "report.html").read_text().rstrip().endswith("</html>")
    finally:
        shutil.rmtree(root)


@_fuzz(30)
@given(data=st.data())
def test_check_on_a_damaged_run_is_a_verdict_or_one_line(pristine, data):
    root = _copy(pristine)
    try:
        _apply(root, data.draw(damages(pristine["files"])))
        before = _snapshot(root)
        result = CliRunner().invoke(main, ["check", str(root / "run"), "--baseline", str(root / "baseline.csv")])
        _assert_clean_failure(result, (0, 1, 2))
        if result.exit_code in (0, 1):
            assert ("PASS" if result.exit_code == 0 else "FAIL") in result.output
        _assert_nothing_lost(before, _snapshot(root))
    finally:
        shutil.rmtree(root)


@_fuzz(10)
@given(data=st.data())
def test_resume_of_a_damaged_run_repairs_it_or_refuses_in_one_line(pristine, data):
    root = _copy(pristine)
    try:
        _apply(root, data.draw(damages(pristine["files"])))
        result = CliRunner().invoke(main, ["evaluate", *OPTIONS, "--suite", pristine["suite"], "--resume", str(root / "run")])
        _assert_clean_failure(result, (0, 2))
        if result.exit_code == 0:
            got = pd.read_csv(root / "run" / "results.csv").drop(columns=["seconds"])
            pd.testing.assert_frame_equal(got, pristine["results"])
    finally:
        shutil.rmtree(root)


def test_a_truncated_zip_is_no_crash(scratch):
    """The archive kind that np.load reports as zipfile.BadZipFile, not OSError or ValueError."""
    path = scratch / "cut.npz"
    np.savez(path, x_test=np.zeros((4, 1, 4, 4), np.float32), y_test=np.arange(4))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RobenchError, match="cannot read npz file"):
        load_dataset(str(path))
    assert not zipfile.is_zipfile(path)
