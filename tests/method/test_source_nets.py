"""Source nets and the kernel bank (dwp_lib.source_nets, dwp_lib.kernel_bank), on a small learnable random task."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from support import fake_data, tiny

from dwp_lib import artifacts, source_nets
from dwp_lib.kernel_bank import KernelBank, build_kernel_bank
from dwp_lib.nets import FConv, fconv_macs, xavier_normal_init
from dwp_lib.source_nets import SourceData, load_source_nets, train_and_save_net


@pytest.fixture(scope="module")
def data() -> SourceData:
    return fake_data()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    cfg = tiny(n_nets=3, train_images=600)
    out = tmp_path_factory.mktemp("nets")
    records = [
        train_and_save_net(cfg, i, data, torch.device("cpu"), out) for i in range(cfg.n_nets)
    ]
    return cfg, out, records


def test_fconv_shapes_and_layers():
    net = FConv(4, 6)
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    k = net.kernels()
    assert k["conv1"].shape == (4, 1, 7, 7) and k["conv2"].shape == (6, 4, 5, 5)
    assert net.features(torch.zeros(2, 1, 28, 28)).shape == (2, 6 * 9)


@pytest.mark.parametrize("widths", [(4, 6), (32, 64), (256, 512)])
def test_fconv_macs_is_what_torch_counts(widths):
    """The source-compute axis of the search's curve: torch's own FLOP counter (2 per
    multiply-accumulate of the convolutions and the linear layer) on one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        FConv(*widths)(torch.zeros(1, 1, 28, 28))
    assert 2 * fconv_macs(widths) == counter.get_total_flops()


def test_xavier_normal_is_not_the_default_init():
    layer = torch.nn.Conv2d(64, 128, 5)
    torch.manual_seed(0)
    xavier_normal_init(layer)
    w = layer.weight.detach().flatten()
    std = (2.0 / ((64 + 128) * 25)) ** 0.5
    assert abs(w.std().item() / std - 1) < 0.02
    assert torch.all(layer.bias == 0)
    # a normal, not PyTorch's default Kaiming-uniform: kurtosis ~3 (uniform: 1.8)
    kurt = ((w - w.mean()) ** 4).mean() / w.var() ** 2
    assert 2.8 < kurt.item() < 3.2
    # the seeded path draws the same law and is reproducible
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = xavier_normal_init(FConv(16, 32), g1).conv2.weight
    b = xavier_normal_init(FConv(16, 32), g2).conv2.weight
    assert torch.equal(a, b)
    assert abs(a.std().item() / (2.0 / ((16 + 32) * 25)) ** 0.5 - 1) < 0.05


def test_config_validation():
    with pytest.raises(ValueError, match="precision"):
        tiny(precision="fp8")
    with pytest.raises(ValueError, match="prune_norms"):
        tiny(prune_norms=(0.1,))
    assert tiny().training_key() == tiny(n_nets=9, prune_norms=(0.2, 0.1)).training_key()
    assert tiny().training_key() != tiny(lr=1e-4).training_key()


def test_records_accuracy_and_lr(trained, data):
    cfg, _, records = trained
    assert [r["index"] for r in records] == [0, 1, 2]
    assert len({r["seed"] for r in records}) == 3
    for r in records:
        assert 0.5 < r["test_accuracy"] <= 1.0  # chance is 0.1
        steps = cfg.epochs * -(-cfg.train_images // cfg.batch_size)
        assert r["steps"] == steps
        assert r["lr_first"] == pytest.approx(cfg.lr)
        assert r["lr_last"] == pytest.approx(cfg.lr / steps) and r["lr_last"] > 0


def test_nets_are_distinct_modules(trained):
    cfg, out, _ = trained
    nets, _ = load_source_nets(out, cfg)
    assert len({id(n) for n in nets}) == len(nets) == 3
    ws = [n.conv1.weight for n in nets]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(ws[i], ws[j])
    # and their inits differed too (each net has its own seed)
    inits = [source_nets.new_source_net(cfg, i).conv2.weight for i in range(3)]
    assert not torch.allclose(inits[0], inits[1])


def test_training_is_reproducible(data):
    cfg = tiny(train_images=200)
    a, ra = source_nets.train_one_net(cfg, 0, data, "cpu")
    b, rb = source_nets.train_one_net(cfg, 0, data, "cpu")
    assert torch.equal(a.conv2.weight, b.conv2.weight)
    assert ra["test_accuracy"] == rb["test_accuracy"]


def test_an_interrupted_run_resumes_to_the_same_weights(data, tmp_path):
    """A run stopped after an epoch resumes from its checkpoint to the bits of one that was not."""
    cfg = tiny(train_images=200, epochs=3)
    whole, rw = source_nets.train_one_net(cfg, 0, data, "cpu", False)
    ckpt, seen = tmp_path / "net_000.ckpt", []

    def stop_at_second(epoch, steps, net, loss):
        seen.append((epoch, steps))
        if epoch == 1:  # after epoch 0's checkpoint: the resumed run repeats epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        source_nets.train_one_net(cfg, 0, data, "cpu", False, stop_at_second, ckpt)
    assert artifacts.read_record(ckpt)["provenance"]["epochs_done"] == 1
    resumed, rr = source_nets.train_one_net(
        cfg, 0, data, "cpu", False, lambda *a: seen.append(a[:2]), ckpt
    )
    steps = -(-200 // cfg.batch_size)
    assert seen == [(0, steps), (1, 2 * steps), (1, 2 * steps), (2, 3 * steps)]
    want, got = whole.state_dict(), resumed.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    for key in ("test_accuracy", "steps", "lr_first", "lr_last", "train_loss_last_epoch"):
        assert rr[key] == rw[key], key
    # a finished checkpoint gives the net again without training; another net's is refused
    again, _ = source_nets.train_one_net(cfg, 0, data, "cpu", False, pytest.fail, ckpt)
    assert torch.equal(again.conv2.weight, whole.conv2.weight)
    with pytest.raises(artifacts.ArtifactError, match="trains net 0"):
        source_nets.train_one_net(cfg, 1, data, "cpu", False, checkpoint=ckpt)
    with pytest.raises(artifacts.ArtifactError, match="trains net 0"):
        source_nets.train_one_net(tiny(train_images=200), 0, data, "cpu", False, checkpoint=ckpt)


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_one_before(data, tmp_path):
    """The checkpoint alternates between two files, so a kill while one is written leaves the
    other: the run resumes from it, to the bits of a run that was never stopped."""
    cfg = tiny(train_images=200, epochs=3)
    whole, _ = source_nets.train_one_net(cfg, 0, data, "cpu", False)
    ckpt = tmp_path / "net_000.ckpt"
    first, second = source_nets.checkpoint_slots(ckpt)
    real = artifacts.atomic_write_bytes

    def killed_on_the_second_slot(path, blob):
        if Path(path) == second:  # after save_artifact removed the old file and wrote its record
            raise KeyboardInterrupt
        real(path, blob)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(artifacts, "atomic_write_bytes", killed_on_the_second_slot)
        with pytest.raises(KeyboardInterrupt):
            source_nets.train_one_net(cfg, 0, data, "cpu", False, checkpoint=ckpt)
    assert artifacts.is_valid_artifact(first) and not artifacts.is_valid_artifact(second)
    assert source_nets.checkpoint_epochs(ckpt) == 1
    seen = []
    resumed, _ = source_nets.train_one_net(
        cfg, 0, data, "cpu", False, lambda *a: seen.append(a[0]), ckpt
    )
    assert seen == [1, 2]  # epoch 0 came from the first slot
    want, got = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert source_nets.checkpoint_epochs(ckpt) == 3
    source_nets.delete_checkpoint(ckpt)
    assert not any(p.exists() for p in tmp_path.iterdir())


def test_a_stage_stopped_inside_a_net_resumes_it(data, tmp_path, monkeypatch):
    """The source stage checkpoints each net after every epoch: stopped inside net 0, it trains
    only the rest of that net, to the weights of an unstopped run, and leaves no checkpoint."""
    cfg = tiny(train_images=200, epochs=3)
    whole = train_and_save_net(cfg, 0, data, torch.device("cpu"), tmp_path / "whole")
    out, real, calls = tmp_path / "stopped", source_nets.training_step, []
    per_epoch = -(-200 // cfg.batch_size)

    def stop_in_epoch_two(*args):
        calls.append(1)
        if len(calls) > per_epoch:  # epoch 0 and its checkpoint are done
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(source_nets, "training_step", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_and_save_net(cfg, 0, data, torch.device("cpu"), out)
    monkeypatch.undo()
    assert [p.name for p in out.glob("net_*.pt")] == [] and source_nets.checkpoint_epochs(
        out / "training-net_000.pt"
    ) == 1
    again = train_and_save_net(cfg, 0, data, torch.device("cpu"), out)
    a, _ = artifacts.load_artifact(whole["path"])
    b, _ = artifacts.load_artifact(again["path"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert sorted(p.name for p in out.iterdir()) == ["net_000.pt", "net_000.pt.json"]


GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "golden", "source_net.json")


def test_a_seeded_source_net_reproduces_its_committed_weights(data):
    """One tiny source net, seeded, has the weights whose SHA-256 is committed in
    ``tests/golden/source_net.json`` (bit for bit on the CPU and torch that wrote it, its test
    accuracy to 1e-4 elsewhere): the guard that keeps refactoring from changing what the source
    stage computes. ``DWP_WRITE_GOLDEN=1`` rewrites it after an intended change."""
    net, record = source_nets.train_one_net(tiny(train_images=200), 0, data, "cpu", False)
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
    here = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    got = {"weights_sha256": digest.hexdigest(), "test_accuracy": record["test_accuracy"]}
    got |= {"steps": record["steps"], "lr_last": record["lr_last"]}
    if os.environ.get("DWP_WRITE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            json.dump({**here, **got}, f, indent=1, sort_keys=True)
            f.write("\n")
    with open(GOLDEN) as f:
        want = json.load(f)
    assert got["steps"] == want["steps"] and got["lr_last"] == want["lr_last"]
    if all(want[k] == v for k, v in here.items()):
        assert got == {k: want[k] for k in got}
    else:
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-4)


def test_bank_counts_before_and_after_pruning(trained):
    cfg, out, records = trained
    n, (c1, c2) = cfg.n_nets, cfg.widths
    bank = build_kernel_bank(out, cfg)
    assert bank.slices("conv1", "all_unpruned").shape == (n * c1, 7, 7)
    assert bank.slices("conv2", "all_unpruned").shape == (n * c1 * c2, 5, 5)
    # slice o * c_in + i of net j is kernel (o, i) of conv2 of net j
    nets, _ = load_source_nets(out, cfg)
    origin = bank.origin("conv2", "all_unpruned")
    s = 5 * c1 + 3 + c1 * c2  # net 1, out 5, in 3
    assert (origin["net"][s], origin["out_channel"][s], origin["in_channel"][s]) == (1, 5, 3)
    assert torch.equal(bank.slices("conv2", "all_unpruned")[s], nets[1].conv2.weight[5, 3])
    # no pruning: train + test = all; 20 % test
    for layer in ("conv1", "conv2"):
        tr, te = bank.slices(layer, "train"), bank.slices(layer, "test")
        assert len(tr) + len(te) == len(bank.slices(layer, "all_unpruned"))
        assert len(te) == round(0.2 * (len(tr) + len(te)))
    prov = bank.provenance
    assert [r["test_accuracy"] for r in prov["nets"]] == [r["test_accuracy"] for r in records]
    assert prov["seeds"] == [0, 1, 2]
    assert prov["norms"]["conv1"]["before_pruning"]["count"] == n * c1

    # prune at the median norm of each layer: about half are kept, all above the threshold
    med = tuple(bank.norms(layer, "all_unpruned").median().item() for layer in ("conv1", "conv2"))
    pruned = build_kernel_bank(out, dataclasses.replace(cfg, prune_norms=med))
    for li, layer in enumerate(("conv1", "conv2")):
        kept = pruned.norms(layer, "all")
        assert kept.min() >= med[li]
        assert pruned.norms(layer, "pruned").max() < med[li]
        assert len(kept) + len(pruned.slices(layer, "pruned")) == len(
            bank.slices(layer, "all_unpruned")
        )
        st = pruned.provenance["norms"][layer]
        assert st["after_pruning"]["median"] > st["before_pruning"]["median"]
    # a compact bank without the unpruned slices says so when asked for them
    compact = build_kernel_bank(
        out, dataclasses.replace(cfg, prune_norms=med, store_unpruned=False)
    )
    assert torch.equal(compact.slices("conv1", "train"), pruned.slices("conv1", "train"))
    with pytest.raises(ValueError, match="store_unpruned"):
        compact.slices("conv1", "all_unpruned")
    with pytest.raises(ValueError, match="no slice has an L2 norm >= the pruning threshold"):
        build_kernel_bank(out, dataclasses.replace(cfg, prune_norms=(0.0, 100.0)))
    with pytest.raises(KeyError, match="splits are"):
        bank.slices("conv1", "validation")
    # "filters" init: a conv weight made of bank slices
    w = bank.random_kernels("conv2", 4, 3, generator=torch.Generator().manual_seed(0))
    train = bank.slices("conv2", "train")
    assert w.shape == (4, 3, 5, 5)
    assert all((train == w[o, i]).all((1, 2)).any() for o in range(4) for i in range(3))


def test_split_by_net_holds_out_whole_nets(trained):
    cfg, out, _ = trained
    bank = build_kernel_bank(out, dataclasses.replace(cfg, split_by="net", test_fraction=0.34))
    tr = set(bank.origin("conv2", "train")["net"].tolist())
    te = set(bank.origin("conv2", "test")["net"].tolist())
    assert len(te) == 1 and not tr & te and len(tr | te) == 3


def test_same_module_twice_is_refused():
    net = FConv(2, 3)
    with pytest.raises(ValueError, match="same module"):
        build_kernel_bank([net, net], tiny(n_nets=2))


def test_bank_save_load_and_corruption(trained, tmp_path):
    cfg, out, _ = trained
    bank = build_kernel_bank(out, cfg)
    path = tmp_path / "bank.pt"
    bank.save(path)
    again = KernelBank.load(path)
    assert torch.equal(again.slices("conv2", "test"), bank.slices("conv2", "test"))
    assert again.provenance["norms"] == bank.provenance["norms"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(artifacts.CorruptArtifactError, match="bank.pt is corrupted"):
        KernelBank.load(path)


def test_plots(trained):
    import matplotlib

    matplotlib.use("Agg")
    from dwp_lib import plots

    cfg, out, _ = trained
    med = (0.0, 0.3)
    bank = build_kernel_bank(out, dataclasses.replace(cfg, prune_norms=med))
    for fig in (
        plots.plot_bank_slices(bank, n=10, order="norm"),
        plots.plot_bank_slices(bank, scale="shared"),
        plots.plot_slice_norms(bank),
    ):
        assert len(fig.axes) == 2
    fig = plots.plot_bank_slices(bank, n=10, ncols=5, order="norm")
    for ax, layer in zip(fig.axes, bank.layers, strict=True):
        k = bank.slices(layer, "train").shape[-1]
        assert ax.get_title().startswith(f"{layer}: 10 of ")
        assert ax.images[0].get_array().shape == (2 * (k + 1) - 1, 5 * (k + 1) - 1)
    fig = plots.plot_slice_norms(bank)
    for ax, layer in zip(fig.axes, bank.layers, strict=True):
        assert ax.get_xlabel() == "slice L2 norm"
        kept = sum(p.get_height() for p in ax.patches[:60])  # the kept slices' 60 bins, first
        assert kept == len(bank.norms(layer, "all"))
    fig = plots.plot_source_accuracy(bank)
    (ax,) = fig.axes
    acc = [r["test_accuracy"] for r in bank.provenance["nets"]]
    assert [p.get_height() for p in ax.patches] == pytest.approx(acc)
    grid = plots.slice_grid(torch.ones(5, 3, 3) * torch.tensor([1.0, -2, 3, 4, 5]).view(5, 1, 1), 4)
    assert grid.shape == (7, 15) and np.isnan(grid).sum() == 7 * 15 - 5 * 9
    assert np.nanmax(np.abs(grid)) == 1.0  # each slice scaled to its own max
    matplotlib.pyplot.close("all")
