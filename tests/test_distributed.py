"""Two CPU processes (gloo) sharing `diffews evaluate` and `diffews segment`, as `accelerate launch` starts them.

The processes are forked from the test process with the environment a launcher gives each of its
processes (RANK, WORLD_SIZE, ...), so they start in milliseconds instead of importing torch again;
`benchmarks/bench_scaling.py` runs them under the real launcher.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import box_mask, random_image
from PIL import Image

import diffews.evaluation.evaluate as evaluate_module
from diffews.cli import segment as segment_module
from diffews.cli.main import main
from diffews.distributed import Processes
from diffews.io import OutputFolder

TIMINGS = ("elapsed_s", "episodes_per_s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launched_as(rank: int, count: int, port: int, **more: str) -> None:
    """Give this process the environment a launcher gives process `rank` of `count` (rendezvous at 127.0.0.1:`port`), and `more`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(count), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **more)


def fork_ranks(target, ranks, *args, timeout: float = 120) -> list[int | None]:
    """Run ``target(rank, *args)`` in a forked child for each of `ranks`; their exit statuses (negative: killed
    by that signal; None: still running `timeout` s after the previous one ended, then killed)."""
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=_single_threaded, args=(target, rank, *args)) for rank in ranks]
    for child in children:
        child.start()
    statuses = []
    for child in children:
        child.join(timeout)
        statuses.append(child.exitcode)
        if child.exitcode is None:
            child.kill()
            child.join()
    return statuses


def _single_threaded(target, *args) -> None:
    """``target(*args)`` with one intra-op thread: a forked child cannot use the OpenMP threads of a parent
    that ran with several (OMP_NUM_THREADS=2 hung both ranks in their first parallel region)."""
    torch.set_num_threads(1)
    target(*args)


def _process(rank: int, count: int, port: int, argv: list[str], logs: Path, setup) -> None:
    launched_as(rank, count, port)
    with open(logs / f"rank{rank}.out", "w") as out, open(logs / f"rank{rank}.err", "w") as err:
        sys.stdout, sys.stderr = out, err
        if setup is not None:
            setup(rank)
        try:
            status = main(argv)
        except BaseException as error:  # noqa: BLE001 - reported through the exit status
            print(f"{type(error).__name__}: {error}", file=err)
            status = 1
        out.flush(), err.flush()
    os._exit(status)


def run_processes(argv: list[str], logs: Path, count: int = 2, setup=None) -> list[int | None]:
    """Run ``diffews argv`` as `count` launched processes; their exit statuses (negative: killed by
    that signal); their output lands in ``logs/rank<i>.out`` and ``.err``. ``setup(rank)`` runs first in each."""
    logs.mkdir(parents=True, exist_ok=True)
    return fork_ranks(_process, range(count), count, _free_port(), argv, logs, setup)


def without_timings(report: dict) -> dict:
    return {**report, "results": {fold: {k: v for k, v in r.items() if k not in TIMINGS} for fold, r in report["results"].items()}}


def count_batches(log: Path):
    """A `setup` that records the episodes of every batch a process scores in ``log/calls<rank>``."""

    def setup(rank: int) -> None:
        predict = evaluate_module.predict

        def counted(predictor, batch, *args, **named):
            with open(log / f"calls{rank}", "a") as calls:
                calls.write(f"{len(batch['class_id'])}\n")
            return predict(predictor, batch, *args, **named)

        evaluate_module.predict = counted

    return setup


def batches(log: Path, rank: int) -> list[int]:
    path = log / f"calls{rank}"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


EVALUATE = ["evaluate", "--model", "tiny-random", "--workers", "0", "--batch-size", "2", "--benchmark", "pascal", "--fold", "all", "--episodes", "5", "--score-size", "64"]


@pytest.fixture(scope="module")
def one_process_report(benchmarks, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "report.json"
    assert main([*EVALUATE, "--root", str(benchmarks[0]), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_shards_are_whole_batches_covering_every_item_once():
    for total, batch, count in [(7, 2, 2), (5, 2, 2), (1, 4, 3), (10, 1, 4), (0, 2, 2)]:
        shards = [Processes(rank, count).shard(total, batch) for rank in range(count)]
        assert [i for shard in shards for i in shard] == list(range(total))
        assert all(shard.start % batch == 0 for shard in shards if shard)
        sizes = [-(-len(shard) // batch) for shard in shards]
        assert max(sizes) - min(sizes) <= 1


def test_two_processes_report_what_one_process_reports(benchmarks, tmp_path, one_process_report):
    out = tmp_path / "report.json"
    statuses = run_processes([*EVALUATE, "--root", str(benchmarks[0]), "--out", str(out)], tmp_path / "logs", setup=count_batches(tmp_path))
    assert statuses == [0, 0], (tmp_path / "logs" / "rank1.err").read_text()
    report = json.loads(out.read_text())
    assert without_timings(report) == without_timings(one_process_report)
    # 5 episodes in batches of 2 per fold: batch (2) for process 0, (2, 1) for process 1, in each of the 4 folds
    assert batches(tmp_path, 0) == [2] * 4 and batches(tmp_path, 1) == [2, 1] * 4
    table = (tmp_path / "logs" / "rank0.out").read_text()
    assert f"{report['mean']['miou']:7.2f}" in table and f"wrote {out}" in table
    assert (tmp_path / "logs" / "rank1.out").read_text() == ""  # only the main process prints
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls0", "calls1", "logs", "report.json"]  # progress files gone


def test_a_killed_process_resumes_and_other_process_counts_are_refused(benchmarks, tmp_path, one_process_report, capsys):
    out = tmp_path / "report.json"
    argv = [*EVALUATE, "--root", str(benchmarks[0]), "--out", str(out)]
    counter = count_batches(tmp_path)

    def kill_process_1_at_its_third_batch(rank: int) -> None:
        counter(rank)
        predict = evaluate_module.predict

        def predict_or_die(*args, **named):
            if rank == 1 and len(batches(tmp_path, 1)) == 2:  # fold 0 done, fold 1 not started
                os.kill(os.getpid(), signal.SIGKILL)
            return predict(*args, **named)

        evaluate_module.predict = predict_or_die

    assert run_processes(argv, tmp_path / "killed", setup=kill_process_1_at_its_third_batch) == [2, -signal.SIGKILL]
    assert "error: process 1 of 2: another process of this run stopped" in (tmp_path / "killed" / "rank0.err").read_text()
    assert not out.exists()
    progress = [json.loads((tmp_path / f"report.json.partial.{rank}-of-2.json").read_text())["progress"] for rank in (0, 1)]
    assert {fold: p["done"] for fold, p in progress[0].items()} == {"0": 2, "1": 2}  # stopped at the merge of fold 1
    assert {fold: p["done"] for fold, p in progress[1].items()} == {"0": 3}

    assert main(argv) == 2  # one process where two left their progress
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path}/report.json.partial.0-of-2.json: saved progress of this evaluation run with 2 processes, "
        "now run with 1 process; rerun it with 2 processes to continue, or delete it to start over"
    )
    for rank in (0, 1):
        (tmp_path / f"calls{rank}").unlink()
    assert run_processes(argv, tmp_path / "resumed", setup=counter) == [0, 0]
    assert batches(tmp_path, 0) == [2] * 2 and batches(tmp_path, 1) == [2, 1] * 3  # only what was left
    assert without_timings(json.loads(out.read_text())) == without_timings(one_process_report)
    assert not list(tmp_path.glob("*.partial*"))


def test_one_process_progress_is_refused_by_two(benchmarks, tmp_path):
    out = tmp_path / "report.json"
    (tmp_path / "report.json.partial.json").write_text("{}")
    assert run_processes([*EVALUATE, "--root", str(benchmarks[0]), "--out", str(out)], tmp_path / "logs") == [2, 2]
    assert (tmp_path / "logs" / "rank0.err").read_text().strip().splitlines()[-1] == (
        f"error: {tmp_path}/report.json.partial.json: saved progress of this evaluation run with 1 process, "
        "now run with 2 processes; rerun it with 1 process to continue, or delete it to start over"
    )
    assert not out.exists()


@pytest.fixture
def segment_files(tmp_path, rng):
    """One support pair and five query images of different sizes (five: an odd number of queries)."""
    (tmp_path / "queries").mkdir()
    random_image(rng, 60, 80).save(tmp_path / "s.jpg")
    Image.fromarray(box_mask(60, 80).astype(np.uint8) * 255).save(tmp_path / "s.png")
    for index, (height, width) in enumerate([(40, 30), (33, 47), (20, 24), (64, 64), (31, 17)]):
        random_image(rng, height, width).save(tmp_path / "queries" / f"q{index}.png")
    return tmp_path


def segment_argv(root: Path, out: Path) -> list[str]:
    return [
        "segment", "--model", "tiny-random", "--support", str(root / "s.jpg"), str(root / "s.png"),
        "--query", str(root / "queries"), "--out", str(out), "--batch-size", "2", "--resolution", "64",
    ]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_two_processes_segment_byte_for_byte_what_one_process_does(segment_files, tmp_path):
    assert main(segment_argv(segment_files, tmp_path / "one")) == 0

    def record(rank: int) -> None:
        encode, save = segment_module.load_inference_pipeline, segment_module.OutputFolder.save_image

        def load(*args):
            pipe = encode(*args)
            original = pipe.encode_support
            pipe.encode_support = lambda *a, **k: _append(tmp_path / f"encoded{rank}", "support") or original(*a, **k)
            return pipe

        segment_module.load_inference_pipeline = load
        segment_module.OutputFolder.save_image = lambda self, image, name: _append(tmp_path / f"saved{rank}", name) or save(self, image, name)

    assert run_processes(segment_argv(segment_files, tmp_path / "two"), tmp_path / "logs", setup=record) == [0, 0]
    assert folder_bytes(tmp_path / "two") == folder_bytes(tmp_path / "one")
    saved = [(tmp_path / f"saved{rank}").read_text().split() for rank in (0, 1)]
    # three batches of at most 2: one for process 0, two for process 1; every file written once
    assert saved[0] == ["q0_mask.png", "q0_overlay.png", "q1_mask.png", "q1_overlay.png"]
    assert sorted(saved[1]) == sorted(f"q{i}_{kind}.png" for i in (2, 3, 4) for kind in ("mask", "overlay"))
    assert [(tmp_path / f"encoded{rank}").read_text().split() for rank in (0, 1)] == [["support"], ["support"]]
    assert (tmp_path / "logs" / "rank0.out").read_text() == f"wrote 5 masks and overlays to {tmp_path / 'two'}\n"
    assert (tmp_path / "logs" / "rank1.out").read_text() == ""


def _append(path: Path, line: str) -> None:
    with open(path, "a") as file:
        file.write(line + "\n")


def test_a_failure_in_one_process_undoes_the_writes_of_all(segment_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputFolder(out) as earlier:  # an earlier diffews run's mask, which this run replaces
        earlier.save_image(Image.new("L", (4, 4), 255), "q0_mask.png")
    (out / "notes.txt").write_text("not ours")
    before = folder_bytes(out)

    def fail_in_process_1(rank: int) -> None:
        if rank == 1:
            segment_module.mask_image = lambda mask: (_ for _ in ()).throw(OSError(28, "No space left on device"))

    statuses = run_processes(segment_argv(segment_files, out), tmp_path / "logs", setup=fail_in_process_1)
    assert statuses == [2, 2]  # process 1: its full disk, one line; process 0: stopped with it
    assert "error: process 1 of 2: another process of this run stopped" in (tmp_path / "logs" / "rank0.err").read_text()
    assert folder_bytes(out) == before  # process 0's files removed, the earlier mask restored
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def test_shipped_accelerate_configs_load():
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    one_node = config_args.load_config_from_file(str(ACCELERATE_CONFIGS / "one_node_multi_gpu.yaml"))
    assert (one_node.distributed_type, one_node.num_machines, one_node.use_cpu) == ("MULTI_GPU", 1, False)
    zero2 = config_args.load_config_from_file(str(ACCELERATE_CONFIGS / "deepspeed_zero2.yaml"))
    assert (zero2.distributed_type, zero2.deepspeed_config["zero_stage"]) == ("DEEPSPEED", 2)


class FakeDeepSpeedAccelerator:
    """What the trainer reads of an `Accelerator` launched with a DeepSpeed config (deepspeed itself is not needed)."""

    def __init__(self, **options):
        self.options = options
        self.state = type("State", (), {"deepspeed_plugin": type("Plugin", (), {"deepspeed_config": {"train_micro_batch_size_per_gpu": "auto"}})()})()


def test_the_trainer_gives_deepspeed_its_batch_size_and_clipping_and_refuses_to_resume(tmp_path, monkeypatch):
    accelerate = pytest.importorskip("accelerate")
    from training_fixtures import tiny_config

    from diffews.errors import InputError
    from diffews.training import Trainer

    monkeypatch.setattr(accelerate, "Accelerator", FakeDeepSpeedAccelerator)
    trainer = Trainer(tiny_config(tmp_path, batch_size=3, max_grad_norm=0.5, gradient_accumulation_steps=2))
    trainer.accelerator = trainer._accelerator(tmp_path)
    assert trainer.accelerator.state.deepspeed_plugin.deepspeed_config == {"train_micro_batch_size_per_gpu": 3, "gradient_clipping": 0.5}
    assert trainer.accelerator.options["gradient_accumulation_steps"] == 2  # DeepSpeed's "auto" takes accelerate's
    with pytest.raises(InputError, match="resuming is not supported under DeepSpeed"):
        trainer._resume(tmp_path / "checkpoints" / "step-00000002")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected an integer >= 1"),
        ({"RANK": "5"}, "RANK='5': expected an integer 0..1"),
        ({"MASTER_PORT": "abc"}, "MASTER_PORT='abc': expected an integer 1..65535"),
    ],
)
def test_bad_launcher_variables_are_one_line(monkeypatch, variables, message):
    from diffews.distributed import launched_processes
    from diffews.errors import InputError

    launch = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", **variables}
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=f"^{message}; start the run with accelerate launch or torchrun$"):
        launched_processes()


def test_a_taken_port_is_one_line(monkeypatch):
    """Rank 0 serves the rendezvous on MASTER_PORT: another program holding it is named in one line."""
    import torch.distributed as dist

    from diffews.distributed import launched_processes
    from diffews.errors import InputError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launch = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        for name, value in launch.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(InputError, match=rf"^process 1 of 2: cannot join the run's processes at 127.0.0.1:{port} \("):
            launched_processes()
    assert not dist.is_initialized()


def _join(rank: int, count: int, port: int, logs: Path, launcher: dict[str, str]) -> None:
    """Join a run of `count` processes as `rank` (2 s wait to join) and sum the ranks; the sum or the error
    to ``logs/rank<i>.out`` / ``.err``. `launcher`: more environment, as a launcher sets it."""
    import torch

    import diffews.distributed as distributed
    from diffews.errors import InputError

    launched_as(rank, count, port, **launcher)
    distributed.WAIT_TO_JOIN = timedelta(seconds=2)
    try:
        processes = distributed.launched_processes()
        (logs / f"rank{rank}.out").write_text(str(int(processes.sum(torch.tensor([rank])).item())))
    except BaseException as error:  # noqa: BLE001 - reported through the exit status
        (logs / f"rank{rank}.err").write_text(str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}")
        os._exit(2 if isinstance(error, InputError) else 1)
    os._exit(0)


@pytest.mark.parametrize(("count", "started"), [(3, (0, 2)), (2, (1,))], ids=["a-worker-never-starts", "rank-0-never-starts"])
def test_a_process_that_never_starts_ends_the_run_in_one_line(tmp_path, count, started):
    """The others stop after the wait to join (not the day a merge may wait), each with one line naming the address."""
    port = _free_port()
    assert fork_ranks(_join, started, count, port, tmp_path, {}, timeout=60) == [2] * len(started)
    for rank in started:
        message = (tmp_path / f"rank{rank}.err").read_text()
        assert re.fullmatch(rf"process {rank + 1} of {count}: cannot join the run's processes at 127\.0\.0\.1:{port} \(.+\)", message), message


def test_processes_join_through_the_store_of_torchrun(tmp_path):
    """Under torchrun (and accelerate launch) the launcher serves the rendezvous on MASTER_PORT and every process is its client."""
    import torch.distributed as dist

    port = _free_port()
    launcher_store = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
    try:
        statuses = fork_ranks(_join, (0, 1), 2, port, tmp_path, {"TORCHELASTIC_USE_AGENT_STORE": "True"}, timeout=60)
    finally:
        del launcher_store
    assert statuses == [0, 0], [path.read_text() for path in tmp_path.glob("*.err")]
    assert [(tmp_path / f"rank{rank}.out").read_text() for rank in (0, 1)] == ["1", "1"]
