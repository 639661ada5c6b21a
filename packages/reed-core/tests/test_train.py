import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import reed_core.checkpoint as ckpt
from reed_core import NonFiniteLossError, TrainConfig, Trainer, latest_checkpoint
from reed_core.testing import assert_loss_decreases

sys.path.insert(0, str(Path(__file__).parent))
from _train_setup import build  # noqa: E402


def _trainer(out, steps, **kw):
    model, obj, data = build(**{k: kw.pop(k) for k in ("dropout", "nan_at", "seed", "init_seed") if k in kw})
    cfg = TrainConfig(max_steps=steps, lr=3e-3, progress=False, log_every=1, **kw)
    return Trainer(model, obj, data, cfg, out, model_config={"kind": "tiny"}, device="cpu")


def test_loss_decreases(tmp_path):
    losses = [h["loss"] for h in _trainer(tmp_path, 150, dropout=0.0).fit()]
    assert_loss_decreases(losses, min_drop=0.08)


def test_exact_resume_matches_straight_run(tmp_path):
    straight = _trainer(tmp_path / "a", 12, checkpoint_every=6).fit()
    first = _trainer(tmp_path / "b", 6, checkpoint_every=6).fit()
    # a brand-new process: fresh model (different init), then resume from the checkpoint
    second_trainer = _trainer(tmp_path / "b", 12, checkpoint_every=6, init_seed=7)
    second = second_trainer.fit()
    assert second_trainer.step == 12 and len(second) == 6
    assert [h["loss"] for h in straight] == [h["loss"] for h in first + second]
    sa = torch.load(latest_checkpoint(tmp_path / "a" / "checkpoints") / "train_state.pt", weights_only=True)
    sb = torch.load(latest_checkpoint(tmp_path / "b" / "checkpoints") / "train_state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 12
    from safetensors.torch import load_file

    ma = load_file(str(latest_checkpoint(tmp_path / "a" / "checkpoints") / "model.safetensors"))
    mb = load_file(str(latest_checkpoint(tmp_path / "b" / "checkpoints") / "model.safetensors"))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    # metrics were truncated at the resume point, not duplicated
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_time_budget_stops_with_a_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    import reed_core.train as train_mod

    clock = iter(range(10_000))  # one fake second per clock read
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: float(next(clock)))
    straight = _trainer(tmp_path / "a", 10).fit()
    chunks, step = [], 0
    while step < 10:  # budget of 20 fake seconds per call: a few steps each, then a checkpoint
        t = _trainer(tmp_path / "b", 10, init_seed=len(chunks))
        chunks.append(t.fit(time_budget=20.0))
        assert t.budget_exhausted == (t.step < 10) and 0 < len(chunks[-1]) < 10
        assert latest_checkpoint(tmp_path / "b" / "checkpoints").name.endswith(f"{t.step:08d}")
        step = t.step
    assert len(chunks) >= 2
    assert [h["loss"] for h in straight] == [h["loss"] for c in chunks for h in c]
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_checkpoints_the_step_in_flight_and_resumes_exactly(tmp_path, signum):
    straight = _trainer(tmp_path / "a", 10).fit()
    t = _trainer(tmp_path / "b", 10)
    data = t.data

    def signalled(step, shard=0, num_shards=1):  # Ctrl-C / a preemption notice arrives during step 3's data
        if step == 3:
            os.kill(os.getpid(), signum)
        return data(step, shard, num_shards)

    t.data = signalled
    before = signal.getsignal(signum)
    first = t.fit()  # no KeyboardInterrupt: the step in flight finishes, a checkpoint is written
    assert (t.step, t.stop_signal, t.budget_exhausted) == (4, signum, False) and len(first) == 4
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000004"
    assert signal.getsignal(signum) is before  # the handlers are given back
    second = _trainer(tmp_path / "b", 10, init_seed=5)
    rest = second.fit()
    assert second.stop_signal is None and second.step == 10
    assert [h["loss"] for h in straight] == [h["loss"] for h in first + rest]


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: a shell starts background jobs with SIGINT ignored, and Python
    then keeps it ignored, so a test run from such a job would see no KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_second_signal_or_no_out_dir_interrupts_at_once(tmp_path, python_sigint):
    t = _trainer(tmp_path, 10, checkpoint_every=100)
    data = t.data

    def impatient(step, shard=0, num_shards=1):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # noted; the next one gets Python's own handler
            for _ in range(1000):  # let Python run the handler first: two pending SIGINTs would coalesce into one
                if t._signal_seen is not None:
                    break
                time.sleep(0.001)
            os.kill(os.getpid(), signal.SIGINT)
        return data(step, shard, num_shards)

    t.data = impatient
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert latest_checkpoint(tmp_path / "checkpoints") is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    nowhere = _trainer(None, 10)  # no out_dir: nowhere to checkpoint, so Ctrl-C interrupts as usual
    data = nowhere.data
    nowhere.data = lambda step, *a: (os.kill(os.getpid(), signal.SIGINT) if step == 2 else None, data(step, *a))[1]
    with pytest.raises(KeyboardInterrupt):
        nowhere.fit()
    assert nowhere.step == 2


def test_checkpoint_layout_and_weights_only(tmp_path):
    t = _trainer(tmp_path, 4, checkpoint_every=2, keep_checkpoints=1)
    t.fit()
    ckdir = tmp_path / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(ckdir)] == ["step_00000004"]
    last = latest_checkpoint(ckdir)
    assert {p.name for p in last.iterdir()} == {
        "model.safetensors", "ema.safetensors", "projectors.safetensors", "config.json", "train_state.pt"}
    state = torch.load(last / "train_state.pt", weights_only=True)
    assert state["step"] == 4 and "optimizer" in state and "torch" in state["rng"]
    cfg = json.loads((last / "config.json").read_text())
    assert cfg["model"] == {"kind": "tiny"} and cfg["train"]["max_steps"] == 4
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss", "denoise", "align/fake", "weight/fake", "weight/denoise", "grad_norm", "steps_per_s", "lr"):
        assert key in rec


def test_checkpoint_never_half_written(tmp_path, monkeypatch):
    t = _trainer(tmp_path, 2, checkpoint_every=2)
    t.fit()
    good = latest_checkpoint(tmp_path / "checkpoints")

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    t.step = 3
    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        t.save()
    assert latest_checkpoint(tmp_path / "checkpoints") == good
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
    # a stale temp dir left by a killed process is ignored and then cleaned up
    stale = tmp_path / "checkpoints" / ".tmp-step_00000009-x"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path / "checkpoints") == good
    ckpt.prune_checkpoints(tmp_path / "checkpoints", keep=2)
    assert not stale.exists()


def test_nan_loss_stops_with_clear_message(tmp_path):
    t = _trainer(tmp_path, 10, checkpoint_every=2, nan_at=5)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 5.*step_00000004"):
        t.fit()
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000004"
    assert torch.load(latest_checkpoint(tmp_path / "checkpoints") / "train_state.pt", weights_only=True)["step"] == 4


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_lr_warms_up_then_decays_to_lr_final_and_resumes_exactly(tmp_path, decay):
    import math

    kw = {"lr_warmup_steps": 4, "lr_decay": decay, "lr_final": 0.1, "checkpoint_every": 7}
    straight = _trainer(tmp_path / "a", 20, **kw).fit()
    lrs = [h["lr"] / 3e-3 for h in straight]  # the factor applied at step s = index s
    assert lrs[:5] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    p = [(s - 4) / 16 for s in range(4, 20)]
    want = [0.1 + 0.9 * (0.5 * (1 + math.cos(math.pi * q)) if decay == "cosine" else 1 - q) for q in p]
    assert lrs[4:] == pytest.approx(want)
    assert all(b <= a + 1e-12 for a, b in zip(lrs[4:], lrs[5:], strict=False))  # monotone, no jump at the join
    assert TrainConfig(max_steps=20, **kw).lr_factor()(20) == pytest.approx(0.1)
    part = _trainer(tmp_path / "b", 20, **kw)  # interrupted after 7 steps, then resumed by a fresh process
    first = [part.train_step() for _ in range(7)]
    part.save()
    second = _trainer(tmp_path / "b", 20, init_seed=3, **kw).fit()
    assert [h["lr"] for h in first + second] == [h["lr"] for h in straight]
    assert [h["loss"] for h in first + second] == [h["loss"] for h in straight]


def test_config_validation():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(max_steps=1, precision="fp8")
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(max_steps=10, lr_decay="step")
    with pytest.raises(ValueError, match="lr_final"):
        TrainConfig(max_steps=10, lr_decay="cosine", lr_final=2.0)
    with pytest.raises(ValueError, match="lr_warmup_steps < max_steps"):
        TrainConfig(max_steps=10, lr_decay="cosine", lr_warmup_steps=10)
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight_decay >= 0"):
            TrainConfig(max_steps=10, weight_decay=bad)


def test_weight_decay_shrinks_matrices_not_biases_or_norms_and_resumes_exactly(tmp_path):
    """AdamW's decoupled decay with zero gradients: a decayed weight becomes w (1 - lr wd) after one step; biases
    and norm scales (one dimension) keep their values. Without decay there is one parameter group (the layout of
    older checkpoints)."""
    from reed_core.train import _adamw

    layer, norm = torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)
    params = [*layer.parameters(), *norm.parameters()]
    before = [p.detach().clone() for p in params]
    opt = _adamw(params, TrainConfig(max_steps=1, lr=0.1, weight_decay=0.5), torch.device("cpu"))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(layer.weight, before[0] * (1 - 0.1 * 0.5))
    assert all(torch.equal(p, b) for p, b in zip(params[1:], before[1:], strict=True))
    assert len(_adamw(params, TrainConfig(max_steps=1), torch.device("cpu")).param_groups) == 1

    straight = _trainer(tmp_path / "a", 8, weight_decay=0.1).fit()
    assert [h["loss"] for h in straight] != [h["loss"] for h in _trainer(tmp_path / "c", 8).fit()]
    first = _trainer(tmp_path / "b", 4, weight_decay=0.1, checkpoint_every=4).fit()
    second = _trainer(tmp_path / "b", 8, weight_decay=0.1, checkpoint_every=4, init_seed=5).fit()
    assert [h["loss"] for h in first + second] == [h["loss"] for h in straight]


def test_ddp_two_processes_match_single_process(tmp_path):
    """2 gloo ranks x 4 samples == 1 process with grad_accum=2 x 4 samples (same global batch, same noise)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, signal, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _train_setup import build
        from reed_core import TrainConfig, Trainer
        torch.set_num_threads(1)
        model, obj, data = build(dropout=0.0)
        cfg = TrainConfig(max_steps=5, lr=3e-3, progress=False, log_every=1)
        t = Trainer(model, obj, data, cfg, None, device="cpu")
        run = t.fit(resume=False)
        model2, obj2, data2 = build(dropout=0.0)

        def preempted(step, shard=0, num_shards=1):  # SIGTERM reaches rank 1 alone, during step 2
            if step == 2 and t.rank == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return data2(step, shard, num_shards)

        t2 = Trainer(model2, obj2, preempted, cfg, {str(tmp_path / "stop")!r}, device="cpu")
        t2.fit(resume=False)
        if t.rank == 0:
            out = {{"loss": [h["loss"] for h in run], "params": [p.detach().flatten().tolist() for p in model.parameters()],
                    "stopped": [t2.step, t2.stop_signal]}}
            with open({str(tmp_path / "ddp.json")!r}, "w") as fh:
                fh.write(json.dumps(out))
        # skip interpreter finalisation, where Gloo's threads can still abort a finished run on a loaded machine
        # (pytorch/pytorch#190489; the Trainer's own exit hook makes it rarer, not impossible)
        torch.distributed.destroy_process_group()
        os._exit(0)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["stopped"] == [3, signal.SIGTERM]  # both ranks stopped after the step in flight, with a checkpoint
    assert latest_checkpoint(tmp_path / "stop" / "checkpoints").name == "step_00000003"
    model, obj, data = build(dropout=0.0)
    cfg = TrainConfig(max_steps=5, lr=3e-3, progress=False, log_every=1, grad_accum=2)
    single = Trainer(model, obj, data, cfg, None, device="cpu").fit(resume=False)
    assert [h["loss"] for h in single] == pytest.approx(ddp["loss"], rel=1e-5, abs=1e-6)
    for p, q in zip(model.parameters(), ddp["params"], strict=True):
        assert torch.allclose(p.detach().flatten(), torch.tensor(q), atol=1e-5)


def test_ema_warmup_forgets_the_initial_weights():
    from reed_core import EMA

    model = torch.nn.Linear(3, 3, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema, plain = EMA(model, 0.999), EMA(model, 0.999, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)  # the trained weights, constant from step 0 on
    for step in range(600):
        ema.update(model, step)
        plain.update(model, step)
    # share of the initial weights: 9! 600! / 609! ~ 1e-19 with warm-up, 0.999^600 = 0.549 without
    assert ema.shadow["weight"].min().item() == pytest.approx(1.0, abs=1e-6)
    assert plain.shadow["weight"].max().item() == pytest.approx(1 - 0.999**600, rel=1e-3)
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10**6) == 0.999 and plain.decay_at(0) == 0.999


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, caplog):
    _trainer(tmp_path, 4, checkpoint_every=4).fit()
    mp = tmp_path / "metrics.jsonl"
    mp.write_text(mp.read_text() + '{"step": 5, "loss": 0.1')  # killed mid-write
    with caplog.at_level("WARNING"):
        run = _trainer(tmp_path, 6, checkpoint_every=2).fit()
    assert len(run) == 2 and "torn last line" in caplog.text and str(mp) in caplog.text
    assert [json.loads(ln)["step"] for ln in mp.read_text().splitlines()] == list(range(1, 7))
    mp.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not JSON"):
        _trainer(tmp_path, 8).fit()


def test_outputs_honour_the_umask_and_directories_are_refused(tmp_path):
    from reed_core import save_weights
    from reed_core.io import atomic_write

    old = os.umask(0o022)
    try:
        f = atomic_write(tmp_path / "out.fasta", ">a\nAC\n")
        assert (f.stat().st_mode & 0o777) == 0o644
        w = save_weights(tmp_path / "w.safetensors", {"a": torch.arange(3.0)})
        assert (w.stat().st_mode & 0o777) == 0o644 and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        _trainer(tmp_path / "run", 2, checkpoint_every=2).fit()
        ck = latest_checkpoint(tmp_path / "run" / "checkpoints")
        assert (ck.stat().st_mode & 0o777) == 0o755
        assert {f.name: f.stat().st_mode & 0o777 for f in ck.iterdir()} == {
            f: 0o644 for f in ("config.json", "model.safetensors", "ema.safetensors", "projectors.safetensors", "train_state.pt")}
    finally:
        os.umask(old)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        atomic_write(tmp_path, "x")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save_weights(tmp_path, {"a": torch.zeros(1)})


def test_config_of_another_domain_is_named(tmp_path):
    from reed_core import load_config
    from reed_core.checkpoint import CheckpointError

    _trainer(tmp_path, 2, checkpoint_every=2).fit()
    ck = latest_checkpoint(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="not a REED domain checkpoint; expected a reed-protein model"):
        load_config(ck, "protein")
    assert load_config(ck)["model"] == {"kind": "tiny"}


def _score(model):
    """A validation score that depends on the weights (not monotonic in the step) and draws global random numbers,
    as sampling-based evaluations do."""
    torch.randn(5)
    with torch.no_grad():
        return {"score": float(sum(p.sum() for p in model.parameters()).sin()), "other": 1.0}


def test_validation_keeps_the_best_weights_and_leaves_training_unchanged(tmp_path):
    from reed_core import Validation

    plain = _trainer(tmp_path / "plain", 12).fit()
    t = _trainer(tmp_path / "a", 12)
    t.validation = Validation(_score, every=5, best="score")
    run = t.fit()
    assert [h["loss"] for h in run] == [h["loss"] for h in plain]  # dropout draws untouched by the evaluation
    records = [json.loads(ln) for ln in (tmp_path / "a" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 12] and all(r["other"] == 1.0 for r in records)
    best = max(records, key=lambda r: r["score"])
    assert t.best == {"metric": "score", "value": best["score"], "step": best["step"]}
    assert records[-1]["best_step"] == best["step"]
    config = json.loads((tmp_path / "a" / "best" / "config.json").read_text())
    assert config["best"] == t.best and config["step"] == best["step"]
    fresh, _, _ = build()
    ckpt.load_weights(tmp_path / "a" / "best", fresh, "ema")
    assert _score(fresh)["score"] == best["score"]
    with pytest.raises(ValueError, match="every >= 1"):
        Validation(_score, every=0)


def test_validation_best_survives_resume(tmp_path):
    from reed_core import Validation

    def run(out, steps, init_seed=0):
        t = _trainer(out, steps, checkpoint_every=4, init_seed=init_seed)
        t.validation = Validation(_score, every=2, best="score", mode="min")
        t.fit()
        return t

    straight = run(tmp_path / "a", 12)
    run(tmp_path / "b", 6)
    (tmp_path / "b" / "checkpoints" / "step_00000006").rename(tmp_path / "b" / "gone")  # killed after step 6's eval
    resumed = run(tmp_path / "b", 12, init_seed=3)  # resumes at step 4; step 6 is scored again, not twice
    assert resumed.best == straight.best
    lines = [(tmp_path / x / "validation.jsonl").read_text() for x in ("a", "b")]
    assert lines[0] == lines[1]
    assert [json.loads(ln)["step"] for ln in lines[1].splitlines()] == [2, 4, 6, 8, 10, 12]
    from safetensors.torch import load_file

    ea, eb = (load_file(str(tmp_path / x / "best" / "ema.safetensors")) for x in ("a", "b"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
