"""The `bertforge` command as a user runs it: stages, errors, and a sweep that ends in a comparison."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bertforge.common.errors import EXIT_PREEMPTED
from tests.launch.conftest import TINY_RUN, ledger, with_upstream


def bertforge(*args, data_dir, work, module=None, env=None):
    env = dict(os.environ, BERTFORGE_DATA=str(data_dir), BERTFORGE_WORK=str(work), WANDB_MODE="offline",
               **(env or {}))
    script = Path(sys.executable).parent / "bertforge"  # the console script of this environment
    command = [sys.executable, "-m", module, *args] if module else [str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def sweep(*args, data_dir, work, module=None) -> Path:
    """Run a `-m` sweep as a user does, require success, and return its one sweep folder."""
    result = bertforge(*args, data_dir=data_dir, work=work, module=module)
    assert result.returncode == 0, result.stderr[-2000:]
    [folder] = list((work / "hydra").glob("multirun-*"))
    return folder


def test_usage_lists_every_stage(tmp_path, data_dir):
    out = bertforge(data_dir=data_dir, work=tmp_path).stdout
    for stage in ("corpus", "vocab", "shards", "pretrain", "evaluate", "publish", "run", "demo"):
        assert stage in out


def test_bad_input_exits_with_one_clear_line(tmp_path, data_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    result = bertforge("corpus", "source=jsonl", f"source.inputs.0.path={bad}", data_dir=data_dir,
                       work=tmp_path / "w")
    assert result.returncode == 2
    assert f"{bad}:2: no string field 'text'" in result.stderr and "text_key" in result.stderr
    assert "Traceback" not in result.stderr


def test_vocab_sweep_ends_in_a_table_and_a_plot(tmp_path, data_dir):
    work = tmp_path / "w"
    folder = sweep("vocab", "-m", "tokenizer.vocab_size=1000,3000", data_dir=data_dir, work=work, module="bertforge")
    table = (folder / "comparison.md").read_text()
    assert sum(line.startswith("|") for line in table.splitlines()) == 4  # header, rule, two jobs
    assert "tokenizer.vocab_size" in table and "vocab/fertility" in table and "**Recommended:**" in table
    assert (folder / "comparison.png").stat().st_size > 1000
    assert len(list((work / "corpus").iterdir())) == 1  # both jobs shared one corpus stage
    assert len(list((work / "vocab").iterdir())) == 2


HEAVY = ('torch', 'lightning', 'transformers', 'datatrove', 'tokenizers', 'wandb', 'matplotlib', 'numpy')


def heavy_modules_after(imports: str) -> str:
    probe = f"import sys, {imports}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def test_the_command_line_imports_no_heavy_library():
    """`bertforge --help`, a config error and a reused stage start at once: the stage graph imports each
    stage's module (torch, Lightning, transformers, datatrove) only when that stage is built."""
    assert heavy_modules_after("bertforge.cli, bertforge.stages, bertforge.experiment") == "[]"


def test_hydra_callbacks_and_launch_checks_import_no_heavy_library():
    """Hydra loads every callback in conf/base.yaml for every command, and the launch checks run for every
    command whose plan holds the pretrain stage: Lightning there cost a reused command 2-4 s."""
    import yaml

    base = yaml.safe_load((Path(__file__).parents[2] / "conf" / "base.yaml").read_text())
    targets = [callback["_target_"].rsplit(".", 1)[0] for callback in base["hydra"]["callbacks"].values()]
    assert "pretrain.distributed" in targets
    assert heavy_modules_after(", ".join([*targets, "pretrain.phases"])) == "[]"


def test_a_key_by_its_old_place_is_told_its_new_one(tmp_path, data_dir):
    result = bertforge("pretrain", "trainer.max_steps=3", "trainer=gpu_phases", data_dir=data_dir, work=tmp_path)
    assert result.returncode == 2
    assert "trainer.max_steps is now training.max_steps" in result.stderr
    assert "trainer=gpu_phases is now trainer=gpu training=two_phase" in result.stderr


def test_a_misspelt_key_gets_the_right_name_not_hydras_plus_hint(tmp_path, data_dir):
    result = bertforge("pretrain", "experiment=demo_ga", "training.max_stepz=3", data_dir=data_dir, work=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("bertforge pretrain: error: unknown config key 'training.max_stepz': "
                                     "did you mean training.max_steps?")
    listed = bertforge("corpus", "source.inputs.0.pth=x", data_dir=data_dir, work=tmp_path)
    assert "did you mean source.inputs.0.path?" in listed.stderr and "+" not in listed.stderr
    # A key without its section: Hydra said "+max_steps=3", which only failed later
    bare = bertforge("pretrain", "experiment=demo_ga", "max_steps=3", data_dir=data_dir, work=tmp_path)
    assert bare.returncode == 2 and bare.stderr.strip() == (
        "bertforge pretrain: error: unknown config key 'max_steps': did you mean training.max_steps?")


def test_a_token_on_the_command_line_is_refused_before_hydra_saves_it(tmp_path, data_dir):
    """A `+key` the schema lacks is refused like a misspelt one, and anything that looks like a token is
    refused whatever its key: Hydra would save both in the run's .hydra/ folder before any check ran."""
    token = "hf_" + "Q7x" * 12
    for override in (f"+publish.token={token}", f"publish.repo_id={token}"):
        result = bertforge("publish", "experiment=demo_ga", override, data_dir=data_dir, work=tmp_path)
        assert result.returncode == 2 and "holds a token" in result.stderr and token not in result.stderr
    result = bertforge("publish", "experiment=demo_ga", "+publish.tokn=abc", data_dir=data_dir, work=tmp_path)
    assert result.returncode == 2 and "unknown config key 'publish.tokn'" in result.stderr
    env_token = bertforge("publish", "experiment=demo_ga", "publish.model_name=s3cr3t-value", data_dir=data_dir,
                          work=tmp_path, env={"WANDB_API_KEY": "s3cr3t-value"})
    assert env_token.returncode == 2 and "holds a token" in env_token.stderr
    assert not any(token in path.read_text() or "s3cr3t" in path.read_text()
                   for path in tmp_path.rglob("*") if path.is_file())


def test_a_sweep_with_a_bad_point_stops_before_its_first_job(tmp_path, data_dir):
    """Hydra composes a point only at its turn: the first point would build every stage, then the second
    fail and end the sweep without its comparison. Every point is checked before any job starts."""
    result = bertforge("shards", "-m", "experiment=demo_ga", "shards.tasks=0,-1", data_dir=data_dir, work=tmp_path)
    assert result.returncode == 2
    assert "sweep job #1 (experiment=demo_ga shards.tasks=-1): shards.tasks=-1" in result.stderr
    assert not (tmp_path / "corpus").exists()  # job #0 did not run
    missing = tmp_path / "nowhere.jsonl"
    result = bertforge("corpus", "-m", "source=jsonl", f"source.inputs.0.path={data_dir / 'none.jsonl'},{missing}",
                       data_dir=data_dir, work=tmp_path)
    assert result.returncode == 2 and "sweep job #0" in result.stderr and "does not exist" in result.stderr


def test_a_sweep_that_would_push_different_models_to_one_repo_stops_before_its_first_job(tmp_path, data_dir):
    """Each point's push would replace the one before on the hub: refused before any job, naming the two
    points (tests/bertforge/test_sweep_check.py: which points clash)."""
    from tests.hub_server import HubServer

    token = "hf_sweep_test_token_0123456789"
    with HubServer(tmp_path / "hub", tokens={token}) as hub:
        push = ["publish.push_to_hub=true", f"publish.endpoint={hub.url}"]
        result = bertforge("publish", "-m", "experiment=demo_ga", "tokenizer.vocab_size=1000,1500", *push,
                           "publish.repo_id=my-org/ga-bert", data_dir=data_dir, work=tmp_path / "w",
                           env={"HF_TOKEN": token})
        assert result.returncode == 2, result.stderr[-2000:]
        assert "sweep jobs #0 (experiment=demo_ga tokenizer.vocab_size=1000 " in result.stderr
        assert "and #1 (experiment=demo_ga tokenizer.vocab_size=1500 " in result.stderr
        assert f"push different models to {hub.url}/my-org/ga-bert at main" in result.stderr
        assert not (tmp_path / "w" / "corpus").exists()  # job #0 did not run


# The tests below train from the corpus, vocab and shards of the launch tests' tiny run (upstream_work).
TWO_RANKS = [o for o in TINY_RUN if not o.startswith(("training.max_steps", "checkpoint.every", "optim.warmup"))] + [
    "training.max_steps=4", "checkpoint.every_n_steps=4", "optim.warmup_steps=1", "trainer=ddp_cpu",
    "impl.cpu_threads=1"]


def processes_working_in(work: Path) -> list[str]:
    """Command lines of the processes whose BERTFORGE_WORK is `work` (every rank has rank 0's environment)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"BERTFORGE_WORK={work}\0".encode() in (proc / "environ").read_bytes() + b"\0":
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # ended meanwhile, or not ours
            pass
    return found


@pytest.mark.xdist_group("processes")  # two ranks: not beside another multi-process test on two cores
def test_a_local_sweep_of_a_two_rank_run_trains_each_point_once(upstream_work, tmp_path, data_dir):
    """Lightning starts rank 1 with rank 0's command line: with the sweep's `-m` and every value, it replayed
    the whole sweep (a second sweep folder, rank 1 running ahead to the next point). Each rank 1 runs its
    job alone, its log beside the job's, and none is left running when the sweep returns."""
    work = with_upstream(upstream_work, tmp_path / "w")
    folder = sweep("pretrain", "-m", *TWO_RANKS, "optim.lr=1e-3,2e-3", data_dir=data_dir, work=work)
    assert processes_working_in(work) == []
    for job in ("0", "1"):
        assert (folder / job / "train_ddp_process_1.log").exists()
    trained = sorted((work / "pretrain").glob("pretrain-*"))
    assert len(trained) == 2  # one folder per learning rate
    for stage in trained:  # each rank trained each of the 4 steps once: one ledger row per step
        assert sorted(ledger(stage)) == [0, 1] and all(len(rows) == 4 for rows in ledger(stage).values())
    assert sum(line.startswith("|") for line in (folder / "comparison.md").read_text().splitlines()) == 4


def test_a_signal_before_training_stops_the_run_at_its_first_step_to_resume(upstream_work, tmp_path, data_dir):
    """SLURM's warning while the command still plans or waits for upstream stages: it ended the process
    (killed by SIGUSR1, no checkpoint, no requeue). Now the run stops at its first step boundary, saved,
    with the preempted run's status and message."""
    work = with_upstream(upstream_work, tmp_path / "w")
    env = dict(os.environ, BERTFORGE_DATA=str(data_dir), BERTFORGE_WORK=str(work), WANDB_MODE="offline")
    run = subprocess.Popen([str(Path(sys.executable).parent / "bertforge"), "pretrain", *TINY_RUN],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = []
    for line in run.stdout:  # the shards stage is reused before the pretrain stage imports its libraries
        output.append(line)
        if "shards: reusing" in line:
            run.send_signal(signal.SIGUSR1)
            break
    output += run.stdout.readlines()
    assert run.wait(timeout=300) == EXIT_PREEMPTED, "".join(output)[-3000:]
    assert "bertforge pretrain: stopped on the preemption signal at step 1; saved " in "".join(output)
    assert len(list((work / "pretrain").glob(".pretrain-*.work/checkpoints/last.ckpt"))) == 1
