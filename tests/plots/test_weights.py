import pytest

from tartan.cli import main


def write_run(folder, name, rows):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {name}\n")
    (folder / "task_weights.csv").write_text("step,task,weight\n" + "".join(f"{s},{t},{w}\n" for s, t, w in rows))
    return folder


def test_weights_plot_of_several_seeds_and_recipes(tmp_path, capsys):
    runs = [write_run(tmp_path / f"{name}{seed}", name, [(s, t, w + 0.01 * seed) for s in (10, 20, 30)
                                                           for t, w in (("end", 0.5), ("tapt", 0.3), ("dapt", 0.2))])
            for name in ("meta_tartan", "meta_tartan_same_head") for seed in range(3)]
    output = tmp_path / "plots" / "weights.png"
    assert main(["plot", "weights", *map(str, runs), "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000
    assert str(output) in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(None, "no task_weights.csv"),
                                              ("step,task,weight\nten,end,0.5\n", "task_weights.csv:2: expected")])
def test_weights_plot_bad_input_is_one_line(content, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "task_weights.csv").write_text(content)
    assert main(["plot", "weights", str(run), "-o", str(tmp_path / "w.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "w.png").exists()


def test_weights_plot_pools_what_it_is_told_to(tmp_path, monkeypatch):
    import tartan.plots.weights as weights

    runs = [write_run(tmp_path / f"seed{seed}", "meta_tartan", [(s, "end", 0.5) for s in (10, 20)]) for seed in (0, 1)]
    asked = []
    monkeypatch.setattr(weights, "group_by_setting", lambda dirs, pool=(): asked.append(pool) or {"meta_tartan": dirs})
    assert main(["plot", "weights", *map(str, runs), "-o", str(tmp_path / "w.png"), "--pool", "precision",
                 "--pool", "meta.lr"]) == 0
    assert asked == [("precision", "meta.lr")]


def test_a_seed_that_stopped_early_does_not_cut_the_others_short(tmp_path, monkeypatch):
    import tartan.plots.weights as weights

    figures = []
    monkeypatch.setattr(weights, "save", lambda figure, output: figures.append(figure) or output)
    runs = [write_run(tmp_path / f"seed{seed}", "meta_tartan", [(s, "end", 0.5 + 0.1 * seed) for s in steps])
            for seed, steps in enumerate([(10, 20, 30), (10, 20, 30), (10, 20)])]
    assert main(["plot", "weights", *map(str, runs), "-o", str(tmp_path / "w.png")]) == 0
    (line,) = figures[0].axes[0].get_lines()
    assert list(line.get_xdata()) == [10, 20, 30]
    assert list(line.get_ydata()) == pytest.approx([0.6, 0.6, 0.55])  # step 30: the two seeds that reached it
