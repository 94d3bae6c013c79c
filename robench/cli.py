"""The ``robench`` command: thin click wrappers that parse, call library code, and print."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from robench.console import TRACEBACK_ENV, friendly_errors, setup_logging
from robench.errors import RobenchError

log = logging.getLogger("robench")


class OneLineErrors(click.Group):
    """click's usage errors (a missing value, an unknown option) as one line and exit 2, like
    every other bad input of robench, instead of click's four-line usage block."""

    def main(self, args=None, *rest, **kwargs):  # noqa: ANN001, ANN002, ANN003 - click's signature
        kwargs["standalone_mode"] = False
        try:
            code = super().main(args, *rest, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            where = f"; see {exc.ctx.command_path} --help" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message().rstrip('.')}{where}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robench")
@click.option("--traceback", "show_trace", is_flag=True, help="On an error, print the full traceback too.")
def main(show_trace: bool) -> None:
    """robench: adversarial-robustness evaluation that weak attacks cannot fool."""
    if show_trace:
        os.environ[TRACEBACK_ENV] = "1"


@main.command()
@click.option("--dataset", default="digits", show_default=True,
              help="Registered data set (digits, mnist, ...), or a path to an .npz file (x_test, y_test [, x_train, y_train], or x, y).")
@click.option("--model", default="cnn", show_default=True, help="Registered model, or package.module:callable returning a trained nn.Module.")
@click.option("--defense", "defenses", multiple=True, help="Defense card name or path (repeatable). Default: every registered defense in the default set.")
@click.option("--suite", default="quick", show_default=True, help="Attack suite card name or path.")
@click.option("--norm", default="linf", show_default=True, help="Threat model norm: linf or l2 (any case).")
@click.option("--epsilon", "epsilons", multiple=True, type=float, help="Perturbation budget (repeatable). Default: the data set's standard one for the norm (robench list).")
@click.option("--n-examples", default=100, show_default=True, type=int, help="Test examples to attack.")
@click.option("--seed", default=0, show_default=True, type=int, help="Run seed; every random choice derives from it.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--max-batch", type=int, default=None, help="Largest forward batch (rows); default: fixed by the input size (never by timing).")
@click.option("--shard-size", default=256, show_default=True, type=int, help="Examples per work unit.")
@click.option("--no-diagnostics", is_flag=True, help="Skip the gradient-masking probes.")
@click.option("--normalize", default=None, metavar="MEAN,STD",
              help="The model expects inputs normalized per channel: MEAN,STD (e.g. 0.1307,0.3081; per channel 0.485/0.456/0.406,0.229/0.224/0.225). Applied inside the target: epsilon stays in pixel space.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where units run.")
@click.option("--address", default=None, help="Ray cluster address (with --executor ray); default: a local instance.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write results, examples, diagnostics, run.json and report.html here.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, help="Finish an interrupted run in this directory (same options).")
@click.option("--quiet", is_flag=True, help="Only the final table.")
@click.option("--force", is_flag=True, help="Write into an --out folder that holds files robench did not write (never deleting them).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: torch's own). On a busy machine 1 is often fastest.")
@click.option("--cards", "card_dirs", multiple=True, type=click.Path(file_okay=False),
              help="A folder holding defenses/ and attacks/ cards to look named cards up in first (repeatable; also $ROBENCH_CARDS). The current directory is never searched by default.")
@friendly_errors
def evaluate(
    dataset: str, model: str, defenses: tuple[str, ...], suite: str, norm: str, epsilons: tuple[float, ...],
    n_examples: int, seed: int, device: str, max_batch: int | None, shard_size: int, no_diagnostics: bool, normalize: str | None,
    executor: str, address: str | None, out: str | None, resume: str | None, quiet: bool, force: bool,
    threads: int | None, card_dirs: tuple[str, ...],
) -> None:
    """Attack every defense with every attack of a suite; report worst-case robust accuracy."""
    setup_logging(quiet)
    from robench.output import prepare_out_dir, write_evaluation
    from robench.progress import Progress
    from robench.runner import evaluate_config
    from robench.spec import EvalConfig
    from robench.store import RunStore
    from robench.table import summary_table
    from robench.target import parse_normalization

    norm = norm.strip().lower()
    normalization = parse_normalization(normalize) if normalize else None
    from robench.cards import env_card_dirs

    for folder in card_dirs:
        if not Path(folder).is_dir():
            raise RobenchError(f"--cards {folder}: no such folder; give a folder holding defenses/ and attacks/ cards")
    folders = tuple(dict.fromkeys((*(str(Path(d).resolve()) for d in card_dirs), *env_card_dirs())))
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if max_batch is not None and max_batch < 1:
        raise RobenchError(f"--max-batch must be >= 1, got {max_batch}")
    if resume and out and Path(resume).resolve() != Path(out).resolve():
        raise RobenchError("--resume DIR writes into DIR; drop --out or give the same directory")
    target_dir = resume or out
    if target_dir and not resume:
        RunStore(target_dir).check_owned(force=force)  # before anything is created there
    made = _missing_folders(Path(target_dir)) if target_dir else []
    out_dir = prepare_out_dir(target_dir) if target_dir else None
    config = EvalConfig(
        dataset=dataset, model=model, defenses=tuple(defenses), suite=suite, norm=norm,
        epsilons=tuple(epsilons), n_examples=n_examples, seed=seed, device=device, max_batch=max_batch,
        shard_size=shard_size, diagnostics=not no_diagnostics,
        normalize=normalization, card_dirs=folders,
    )
    store = RunStore(out_dir) if out_dir is not None else None
    progress = Progress(enabled=not quiet)
    try:
        try:
            evaluation = evaluate_config(config, store=store, executor=executor, address=address,
                                         on_unit=progress.update, on_plan=progress.start, resume=bool(resume), force=force)
        finally:
            progress.close()
            for folder in made:  # the folders this command made, if still empty: a failed start leaves nothing
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    except KeyboardInterrupt:
        if out_dir is not None and out_dir.is_dir():
            click.echo(f"interrupted: finished units are kept in {out_dir}; "
                       f"finish the run with: robench evaluate --resume {out_dir} (and the same options)", err=True)
        else:
            click.echo("interrupted; nothing was saved (use --out DIR to keep finished units)", err=True)
        sys.exit(130)
    progress.close()
    click.echo(summary_table(evaluation.results))
    for card in evaluation.run["defenses"]:
        for finding in card.get("discovered") or ():
            click.echo(f"found: {card['name']}: {finding}")
    fired = evaluation.diagnostics[evaluation.diagnostics["fired"].astype(bool)] if len(evaluation.diagnostics) else evaluation.diagnostics
    for row in fired.itertuples():
        click.echo(f"warning: {row.defense} eps={row.epsilon:g}: {row.check}: {row.detail}")
    click.echo(f"({evaluation.run['timings']['seconds']:.1f}s on {evaluation.run['device']}; "
               f"{evaluation.run['rejected_proposals']} proposal(s) rejected by verification)")
    if out_dir is not None:
        for path in write_evaluation(evaluation, out_dir):
            log.info("wrote %s", path)
    failed = evaluation.run["failed_units"]
    if failed:
        first = failed[0]
        where = f"; details in {out_dir / 'run.json'}, rerun them with --resume {out_dir}" if out_dir else ""
        raise RobenchError(f"{len(failed)} unit(s) failed, e.g. defense {first['defense']!r} eps={first['epsilon']:g} "
                           f"attack {first['attack']!r}: {first['error']}{where}")


@main.command("list")
@click.option("--parameters", is_flag=True, help="Also show each attack's and certifier's hyperparameters: default, what it admits, what it does.")
@friendly_errors
def list_command(parameters: bool) -> None:
    """Show registered data sets, models, defense factories, defense cards, attacks, certifiers and suites."""
    from robench import catalog
    from robench.cards import all_defense_cards, load_suite_card, suite_card_names

    registered = catalog.sections()  # no torch import unless a plugin may add entries

    def section(title: str, rows: list[tuple[str, str]]) -> None:
        click.echo(click.style(title, bold=True))
        width = max((len(n) for n, _ in rows), default=0)
        declared = registered["parameters"].get(title, {}) if parameters else {}
        for name, text in rows:
            click.echo(f"  {name.ljust(width)}  {text}")
            for param, default, admits, doc in declared.get(name, ()):
                click.echo(f"  {''.ljust(width)}    {param}={default} ({admits}): {doc}")
    for title in ("datasets", "models", "defense factories"):
        section(title, [(name, text) for name, text in registered[title]])
    section("defenses (cards)", [(c.name, f"{c.factory} {c.params or ''}  {c.paper}".strip()) for c in all_defense_cards()])
    section("attacks", [(name, text) for name, text in registered["attacks"]] + [("foolbox.<Class>", "any foolbox attack by class name")])
    section("certifiers", [(name, text) for name, text in registered["certifiers"]])
    section("suites", [(n, ", ".join(s.label for s in (*load_suite_card(n).attacks, *load_suite_card(n).certifiers)))
                       for n in suite_card_names()])


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.absolute().parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _add_subcommands() -> None:
    """Commands that live beside the code they drive (reports, zoo); imported lazily by click."""
    from robench.reports.commands import check, report
    from robench.zoo.commands import zoo

    main.add_command(report)
    main.add_command(check)
    main.add_command(zoo)


_add_subcommands()

if __name__ == "__main__":
    main()
