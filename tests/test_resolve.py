"""Resolution (robench/resolve.py): capabilities are declared and checked before anything runs,
and rows name the model that was actually attacked."""
from __future__ import annotations

import pytest
import torch

import robench
from robench_testing import TINY_SUITE, SignalNet, write_suite
from robench.cards import load_defense_card
from robench.errors import RobenchError
from robench.registry import defenses, load_builtins
from robench.resolve import attacked_model, defense_cards
from robench.data import Dataset
from robench.target import IMAGE, SEQUENCE, input_kind

load_builtins()


def _sequences(n: int = 10):
    model = SignalNet().eval()
    x = torch.rand(n, 1, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _sequence_data() -> Dataset:
    _, x, y = _sequences()
    return Dataset("signals", x[:0], y[:0], x, y, num_classes=3)


def test_input_kind_by_rank():
    assert input_kind((1, 8, 8)) == IMAGE and input_kind((1, 40)) == SEQUENCE
    with pytest.raises(RobenchError, match="neither images"):
        input_kind((5,))


def test_a_sequence_model_is_evaluated_end_to_end(tmp_path):
    model, x, y = _sequences()
    evaluation = robench.evaluate(model, x, y, defenses=("none", "bit-depth-3"), suite=write_suite(tmp_path, TINY_SUITE),
                                  epsilons=(0.1,), diagnostics=False)
    worst = evaluation.results[evaluation.results.attack == "worst-case"]
    assert set(worst["defense"]) == {"none", "bit-depth-3"} and (worst["n_examples"] == len(x)).all()


def test_an_image_defense_named_for_sequences_is_refused_before_running(tmp_path):
    model, x, y = _sequences()
    with pytest.raises(RobenchError, match=r"defense 'jpeg-75' \(jpeg\) supports images .* holds sequences"):
        robench.evaluate(model, x, y, defenses=("none", "jpeg-75"), suite=write_suite(tmp_path, TINY_SUITE),
                         diagnostics=False)


def test_square_in_a_suite_runs_on_sequences(tmp_path):
    model, x, y = _sequences()  # square has a 1-D form (intervals for windows) since it supports sequences
    suite = write_suite(tmp_path, 'name = "sq"\n[[attack]]\nattack = "square"\n[attack.params]\nqueries = 5\n')
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.1,), diagnostics=False)
    square = evaluation.results[evaluation.results.attack == "square"]
    assert len(square) == 1 and (square["n_examples"] == len(x)).all()


def test_an_image_attack_in_the_suite_is_refused_for_sequences(tmp_path):
    model, x, y = _sequences()
    (tmp_path / "image_only.py").write_text(
        "from robench.attacks.base import Attack\n"
        "class ImageOnly(Attack):\n"
        "    name = 'image-only'\n"
        "    inputs = ('image',)\n"
        "    def run(self, target, x, y, threat, *, seeds):\n"
        "        raise AssertionError('must be refused before it runs')\n")
    suite = write_suite(tmp_path, f'name = "img"\n[[attack]]\nattack = "{tmp_path / "image_only.py"}:ImageOnly"\n'
                                  'label = "image-only"\n')
    with pytest.raises(RobenchError, match=r"attack 'image-only' supports images \(N x C x H x W\), but .* holds sequences"):
        robench.evaluate(model, x, y, suite=suite, diagnostics=False)


def test_the_default_defense_set_is_what_fits_the_data():
    sequence_defenses = {c.name for c in defense_cards((), _sequence_data())}
    assert "none" in sequence_defenses and "bit-depth-3" in sequence_defenses
    assert not sequence_defenses & {"jpeg-75", "random-resize-pad", "thermometer-16", "adv-trained", "lipschitz"}


def test_an_image_zoo_model_is_refused_for_sequences(tmp_path):
    from robench.resolve import load_model

    with pytest.raises(RobenchError, match="model 'cnn' supports images"):
        load_model("cnn", _sequence_data())


def test_rows_name_the_model_a_defense_trained_for_itself():
    assert defenses.entry("adversarial_training").extra.get("own_model") == "cnn"
    assert attacked_model(load_defense_card("adv-trained"), "cnn") == "adv-trained(cnn)"
    assert attacked_model(load_defense_card("bit-depth-3"), "cnn") == "cnn"


def test_evaluate_leaves_the_callers_rng_state_unchanged(tmp_path):
    model, x, y = _sequences()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    robench.evaluate(model, x, y, defenses=("none",), suite=write_suite(tmp_path, TINY_SUITE), diagnostics=True)
    assert torch.equal(torch.get_rng_state(), before), "robench.evaluate must not touch the global torch RNG"


def test_evaluate_keeps_no_reference_to_the_model(tmp_path):
    import gc
    import weakref

    model, x, y = _sequences()
    alive = weakref.ref(model)
    evaluation = robench.evaluate(model, x, y, defenses=("none", "bit-depth-3"), suite=write_suite(tmp_path, TINY_SUITE),
                                  diagnostics=True)
    del model
    gc.collect()
    assert alive() is None, "no context cache may keep the caller's model alive after evaluate returns"
    assert len(evaluation.results)


def test_normalization_lives_inside_the_target_and_epsilon_stays_in_pixel_space(tmp_path):
    from robench.target import Normalized, parse_normalization

    model, x, y = _sequences()
    mean, std = (0.5,), (0.25,)
    inner = SignalNet().eval()
    # a model trained on normalized inputs: it undoes the normalization itself, so the wrapped
    # target must classify exactly as the plain model does on pixel-space inputs
    expects_normalized = torch.nn.Sequential(_Affine(std[0], mean[0]), inner)
    wrapped = Normalized(expects_normalized, mean, std)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), inner(x), atol=1e-5)
    suite = write_suite(tmp_path, TINY_SUITE)
    plain = robench.evaluate(inner, x, y, defenses=("none",), suite=suite, diagnostics=False)
    normed = robench.evaluate(expects_normalized, x, y, defenses=("none",), suite=suite, diagnostics=False,
                              normalize=(mean, std))
    assert list(plain.results["robust"]) == list(normed.results["robust"])
    assert parse_normalization("0.1307,0.3081") == ((0.1307,), (0.3081,))
    assert parse_normalization("0.4/0.5/0.6,0.2/0.2/0.3") == ((0.4, 0.5, 0.6), (0.2, 0.2, 0.3))
    for bad in ("0.1", "a,b", "0.1,0", "0.1/0.2,0.3"):
        with pytest.raises(RobenchError, match="--normalize"):
            parse_normalization(bad)


class _Affine(torch.nn.Module):
    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return x * self.scale + self.shift


def test_a_cascade_gives_each_attack_only_what_is_left_and_breaks_the_same_examples(tmp_path):
    """A deterministic target and batch-independent attacks: each example meets each attack as it
    would outside the cascade, so the worst case is the same; later attacks are given fewer."""
    from robench_testing import conv_problem

    model, x, y, _ = conv_problem("cascade", n=24)
    plain = write_suite(tmp_path, TINY_SUITE, "plain.toml")
    cascade = write_suite(tmp_path, "cascade = true\n" + TINY_SUITE, "cascade.toml")
    runs = {name: robench.evaluate(model, x, y, defenses=("none",), suite=suite, epsilons=(0.1,), diagnostics=True)
            for name, suite in (("plain", plain), ("cascade", cascade))}
    rows = {name: run.results.set_index("attack") for name, run in runs.items()}
    assert rows["cascade"].loc["worst-case", "robust"] == rows["plain"].loc["worst-case", "robust"]
    pgd = rows["plain"].loc["pgd"]
    broken_by_pgd = int(round(pgd["clean_accuracy"] * pgd["n_examples"])) - int(pgd["robust"])
    assert broken_by_pgd > 0, "the case must let the first attack break something"
    assert rows["cascade"].loc["pgd", "attacked"] == rows["plain"].loc["pgd", "attacked"] == len(x)
    assert rows["cascade"].loc["spsa", "attacked"] == len(x) - broken_by_pgd
    assert rows["cascade"].loc["spsa", "queries_mean"] < rows["plain"].loc["spsa", "queries_mean"]
    examples = runs["cascade"].examples
    skipped = examples[(examples.attack == "spsa") & ~examples.attacked.astype(bool)]
    assert (skipped["queries"] == 0).all() and len(skipped) == broken_by_pgd


def test_epsilon_defaults_to_the_data_sets_standard_one(tmp_path):
    model, x, y = _sequences()
    evaluation = robench.evaluate(model, x, y, defenses=("none",), suite=write_suite(tmp_path, TINY_SUITE), norm="l2",
                                  diagnostics=False)
    assert set(evaluation.results["epsilon"]) == {1.0}
    assert evaluation.run["config"]["epsilons"] == [1.0], "run.json records the epsilon that ran"
