"""Job arrays: --list prints the runs in order, --run ID / --index K train exactly one, each part records
into its own results file, and --summary-only merges every file."""
import pytest
import yaml

from hybridseq import ConfigError, cli
from hybridseq.ablate import load_sweep, select
from hybridseq.ablate.store import ResultStore

from ablate_cases import TWO_BY_TWO, sweep


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(**TWO_BY_TWO)))
    return path


def listed(capsys, path, out):
    capsys.readouterr()
    assert cli.main(["ablate", str(path), "--out", str(out), "--list"]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def test_array_tasks_each_train_one_run_into_their_own_file(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    runs = load_sweep(sweep_file).runs()
    rows = listed(capsys, sweep_file, out)
    assert rows == [[str(k), r.run_id, r.variant, str(r.seed), "todo"] for k, r in enumerate(runs)]
    assert not out.exists()                                       # listing writes nothing

    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--workers", "0", "--index", "1"]) == 0
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--workers", "0", "--run", runs[2].run_id]) == 0
    files = sorted(p.name for p in (out / "results.d").iterdir())
    assert files == sorted(f"run-{runs[k].run_id}.jsonl" for k in (1, 2))
    assert not (out / "results.jsonl").exists() and not (out / "summary.md").exists()
    assert [row[4] for row in listed(capsys, sweep_file, out)] == ["todo", "ok", "ok", "todo"]

    # the same run again (a requeued array task) trains nothing
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--workers", "0", "--index", "2"]) == 0
    assert "1 of 1 runs already recorded" in capsys.readouterr().out
    assert len((out / "results.d" / f"run-{runs[2].run_id}.jsonl").read_text().splitlines()) == 1

    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--summary-only"]) == 0
    table = capsys.readouterr().out
    assert "| transformer | 1 |" in table and "| mlp | 1 |" in table
    for k in (0, 3):                                              # the remaining array tasks
        assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--workers", "0", "--index", str(k)]) == 0
    capsys.readouterr()
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--summary-only"]) == 0
    assert "| transformer | 2 |" in capsys.readouterr().out
    assert "| mlp | 2 |" in (out / "summary.md").read_text()
    assert len(ResultStore(out).latest()) == 4


def test_a_shard_records_into_its_own_file(sweep_file, tmp_path):
    out = tmp_path / "out"
    assert cli.main(["ablate", str(sweep_file), "--out", str(out), "--workers", "0", "--shard", "1/3"]) == 0
    lines = (out / "results.d" / "shard-1-of-3.jsonl").read_text().splitlines()
    assert len(lines) == 1 and load_sweep(sweep_file).runs()[1].run_id in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--index", "4"], "--index: expected 0 <= K < 4 (the sweep has 4 runs), got 4"),
    (["--run", "0123456789ab"], "--run: no run '0123456789ab' in this sweep"),
    (["--shard", "0/2", "--index", "1"], "--index: choose one of --shard, --run and --index"),
])
def test_bad_parts_are_config_errors(sweep_file, tmp_path, capsys, args, message):
    assert cli.main(["ablate", str(sweep_file), "--out", str(tmp_path / "o"), "--workers", "0", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_latest_record_wins_across_files(tmp_path):
    whole, part = ResultStore(tmp_path), ResultStore(tmp_path, "run-x")
    part.append({"run_id": "x", "status": "failed"})
    whole.append({"run_id": "x", "status": "ok"})             # retried later in a whole-sweep pass
    part.append({"run_id": "y", "status": "ok"})
    assert {k: r["status"] for k, r in ResultStore(tmp_path).latest().items()} == {"x": "ok", "y": "ok"}
    part.append({"run_id": "x", "status": "failed"})          # and a later failure supersedes it again
    assert ResultStore(tmp_path).latest()["x"]["status"] == "failed"
    assert ResultStore(tmp_path).finished() == {"x", "y"} and ResultStore(tmp_path).finished(True) == {"y"}


def test_select_without_a_part_is_the_whole_sweep():
    runs = load_sweep(sweep(**TWO_BY_TWO)).runs()
    assert select(runs) == (runs, None)
    with pytest.raises(ConfigError, match="--shard: expected i/n"):
        select(runs, shard_spec="1")
