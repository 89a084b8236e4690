"""The command line: parse, call the library, print. Bad input is one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import TartanError, first_line


def _table(rows: dict[str, dict | None]) -> str:
    """The splits' metrics (x100, the loss as it is), in the order the task reports them."""
    columns = next((list(m) for m in rows.values() if m), ["loss"])
    lines = ["| split | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for split, metrics in rows.items():
        if metrics:
            cells = [f"{100 * metrics[c]:.2f}" if c != "loss" else f"{metrics[c]:.4f}" for c in columns]
            lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_train(args) -> int:
    from .config import load_config
    from .run import train

    recipe, run_dir = Path(args.recipe), None
    if recipe.is_dir():  # `tartan train RUN_DIR` resumes the run it holds, where the folder is now
        recipe, run_dir = recipe / "config.yaml", recipe.resolve()
    config = load_config(recipe, args.overrides)
    if run_dir is not None:
        config.output_dir = str(run_dir)
    metrics = train(config, force=args.force)
    print(f"{metrics['name']} ({metrics['method']}) on {metrics['end_task']}, seed {metrics['seed']}: "
          f"selected on dev {metrics['metric']}, best step {metrics['best_step']}, "
          f"{metrics['train_seconds']:.0f} s, {metrics['tokens_per_second']:.0f} tokens/s")
    print(_table({"dev": metrics["dev"], "test": metrics["test"]}))
    print(f"run directory: {config.output_dir}")
    return 0


def cmd_eval(args) -> int:
    from .inference import evaluate_run

    metrics = evaluate_run(Path(args.run_dir), args.split, args.data_dir, args.device)
    print(_table({args.split: metrics}))
    return 0


def cmd_predict(args) -> int:
    from .inference import predict_file

    if args.output:
        from .rundir import check_writable_file, write_text_atomic
        import io

        check_writable_file(Path(args.output))  # before the work
        buffer = io.StringIO()
        count = predict_file(Path(args.run_dir), Path(args.file), buffer, device=args.device)
        write_text_atomic(Path(args.output), buffer.getvalue())
        print(f"{count} predictions written to {args.output}", file=sys.stderr)
    else:
        predict_file(Path(args.run_dir), Path(args.file), device=args.device)
    return 0


def cmd_download(args) -> int:
    from .config import default_data_dir
    from .data.download import download_tasks

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    paths = download_tasks(args.names, data_dir, base_url=args.base_url)
    print(f"{len(paths)} files in {data_dir}")
    return 0


def cmd_plot(args) -> int:
    from .plots import check_output, plots

    output = Path(args.output or f"{args.kind}.png")
    check_output(output)
    output = plots.get(args.kind)([Path(d) for d in args.run_dirs], output, tuple(args.pool or ()))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def cmd_sweep(args) -> int:
    from .sweep import load_sweep, read_sessions, run_sweep, run_states

    if args.dry_run:
        root, runs = load_sweep(Path(args.sweep), args.overrides, args.only)
        states = run_states(root, runs)
        for run, (kind, detail) in zip(runs, states):
            print(f"{run.id}  {kind}" + (f" ({detail})" if detail else ""))
        kinds = {"done": "done", "failed": "failed", "checkpoint": "at a checkpoint", "begun": "begun (no checkpoint)",
                 "other config": "holding a run of another config", "to do": "to do"}
        counts = ", ".join(f"{sum(k == kind for k, _ in states)} {words}" for kind, words in kinds.items()
                           if kind != "other config" or any(k == kind for k, _ in states))  # rare: said when it is so
        sessions = read_sessions(root)
        seconds = sum(float(s.get("seconds", 0.0)) for s in sessions)
        print(f"{len(runs)} runs under {root}: {counts}; the sweep has run {seconds:,.0f} s ({seconds / 3600:.2f} h) "
              f"over {len(sessions)} recorded sittings", file=sys.stderr)
        return 0
    status = run_sweep(Path(args.sweep), args.overrides, jobs=args.jobs, only=args.only)
    failed = [run_id for run_id, entry in status.items() if entry["status"] == "failed"]
    print(f"{len(status) - len(failed)} runs done, {len(failed)} failed" + (": " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0


def cmd_report(args) -> int:
    from .report import build_report, to_markdown, write_report
    from .rundir import check_writable_folder

    check_writable_folder(Path(args.output or args.roots[0]), "the report's folder")  # before the work
    baseline = args.baseline or "finetune"
    report = build_report([Path(r) for r in args.roots], baseline, args.permutations,
                          Path(args.reference) if args.reference else None, baseline_named=args.baseline is not None,
                          pool=tuple(args.pool or ()))
    print(to_markdown(report, baseline))
    paths = write_report(report, baseline, Path(args.output or args.roots[0]))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .export import export_classifier

    result = export_classifier(Path(args.run_dir), Path(args.output), args.device)
    labels = f", labels {', '.join(result['labels'])}" if result["labels"] else ""
    print(f"wrote {args.output}: {result['architecture']}{labels}; reproduces the run's outputs to "
          f"{result['max_difference']:.1e}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tartan", description="End-task aware training.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a recipe (resumes a killed run)",
                                description="Train the run a YAML recipe describes. Overrides are dotted "
                                            "key=value pairs, e.g. seed=1 train.max_steps=50. Given a run "
                                            "directory, resumes it.")
    train.add_argument("recipe", help="a YAML recipe, or a run directory to resume")
    train.add_argument("overrides", nargs="*", help="key=value overrides")
    train.add_argument("--force", action="store_true", help="retrain a finished run")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="evaluate a finished run on a split")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", default="test", choices=("train", "dev", "test"))
    evaluate.add_argument("--data-dir", help="read the task from here instead of the run's data_dir")
    evaluate.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's device setting)")
    evaluate.set_defaults(func=cmd_eval)

    predict = commands.add_parser("predict", help="predict a label for every line of a file",
                                  description="Writes one JSON line per input row: {label, probability}. "
                                              "FILE is .jsonl/.csv/.tsv with a text (and text_pair) field, "
                                              "or .txt with one text a line.")
    predict.add_argument("run_dir")
    predict.add_argument("file")
    predict.add_argument("--output", "-o", help="write here (default: standard output)")
    predict.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's device setting)")
    predict.set_defaults(func=cmd_predict)

    export = commands.add_parser("export", help="write a finished run as a Hugging Face model folder",
                                 description="Write the run's body, end-task head, tokenizer and label names as a folder "
                                             "that AutoModelForSequenceClassification (classification, regression), "
                                             "AutoModelForMultipleChoice or AutoModelForQuestionAnswering loads, "
                                             "checked against the run's own outputs first.")
    export.add_argument("run_dir")
    export.add_argument("output", help="a new or empty folder")
    export.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's device setting)")
    export.set_defaults(func=cmd_export)

    download = commands.add_parser("download", help="fetch 'Don't Stop Pretraining' task files",
                                   description="Fetch {train,dev,test}.jsonl of each named task into the data "
                                               "directory, checking each file before it replaces anything.")
    download.add_argument("names", nargs="+", help="task names, e.g. citation_intent chemprot sciie")
    download.add_argument("--data-dir", help="default: $TARTAN_DATA, else the user cache folder")
    download.add_argument("--base-url", help="mirror of the release (default: its canonical location)")
    download.set_defaults(func=cmd_download)
    from .plots import plots

    plot = commands.add_parser("plot", help="plot from run directories",
                               description="weights: the task weights over training, one panel per recipe "
                                           "name, seeds averaged with a band. curves: the end task's dev metric "
                                           "over training, one line per recipe name. efficiency: the test metric "
                                           "against domain.size as a multiple of |Train| (log axis), one line "
                                           "per recipe name with error bars. Runs sharing a recipe name are seeds.")
    plot.add_argument("kind", choices=plots.names())
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--output", "-o", help="PNG to write (default: KIND.png)")
    plot.add_argument("--pool", action="append", metavar="KEY",
                      help="runs that differ only in KEY are seeds of one line or panel, as in tartan report --pool")
    plot.set_defaults(func=cmd_plot)

    sweep = commands.add_parser("sweep", help="run a grid of recipes x end tasks x seeds (resumable)",
                                description="Runs every run of the grid SWEEP.yaml describes, one run directory "
                                            "each under its root. Finished runs are skipped, killed runs resume, "
                                            "a run that fails is recorded in ROOT/sweep_status.json and the sweep "
                                            "goes on (exit code 1 if any failed). Overrides apply to every run.")
    sweep.add_argument("sweep", help="the sweep file (YAML)")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and where each stands, check every config, run nothing")
    sweep.add_argument("--jobs", type=int, default=1,
                       help="runs trained at once, each in its own process with CPU threads shared out (default 1)")
    sweep.add_argument("--only", action="append", default=[], metavar="PATTERN",
                       help="only the runs whose id (END_TASK/RECIPE[/key=value]/seedS) matches this shell pattern; "
                            "repeatable (e.g. --only '*/domain.size=1x/*')")
    sweep.set_defaults(func=cmd_sweep)

    report = commands.add_parser("report", help="tables of methods per end task, with p-values against a baseline",
                                 description="Finds every finished run under the ROOTs, groups runs by their "
                                             "resolved config minus the seed, and prints per end task the mean, "
                                             "standard deviation and seeds of the task's metric on test and dev, "
                                             "with a two-sided permutation-test p-value of each group against "
                                             "the baseline. Writes report.md, report.csv and report.tex.")
    report.add_argument("roots", nargs="+", metavar="ROOT")
    report.add_argument("--baseline",
                        help="the baseline: a recipe name or method, or a label as the report prints it, "
                             "e.g. 'finetune [train.max_steps=600]' (default: finetune)")
    report.add_argument("--permutations", type=int, default=10_000, help="permutations of the test (default: 10,000)")
    report.add_argument("--pool", action="append", metavar="KEY",
                        help="count runs that differ only in KEY as seeds of one row, and say which seed ran at which "
                             "value: a dotted key, or a bare name for every section's (precision); repeatable")
    report.add_argument("--output", "-o", help="folder for report.{md,csv,tex} (default: the first ROOT)")
    report.add_argument("--reference", metavar="FILE",
                        help="published figures to print beside each row: YAML, end task -> recipe name -> figure")
    report.set_defaults(func=cmd_report)
    for sub in (train, evaluate, predict, export, download, plot, sweep, report):
        # SUPPRESS: `tartan --debug train` keeps working; `tartan train ... --debug` works too
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `key=value` after an option (`tartan sweep S.yaml --dry-run lr=1`): argparse fills a positional
    # list once, so later overrides come back unparsed; they are overrides all the same
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except TartanError as error:
        if args.debug:
            raise
        print(f"tartan: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tartan: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # not the user's mistake: tartan's, said in one line all the same
        if args.debug:
            raise
        print(f"tartan: internal error, a bug in tartan ({type(error).__name__}: {first_line(error)}); "
              "run again with --debug for the traceback to report", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
