"""dwp_lib.release and the authors' kernel VAE architectures, on a small *fake* release.

No test reads the real files: a fake release (random weights in the authors' module layout, tiny
banks, a licence) is built in a temporary cache with its own hashes, and the module's pinned
release is swapped for it.
"""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch
from release_fakes import authors_vae
from support import micro_config

from dwp_lib import authors_vaes
from dwp_lib import release as rel
from dwp_lib.authors_vaes import AUTHORS_KEY_MAP, load_authors_state_dict
from dwp_lib.kernel_layers import KernelVAEConfig, LayerSpec
from dwp_lib.kernel_vae import KernelVAE

# ------------------------------------------------------------------------------------------------
# A plain re-creation of the authors' two kernel VAEs (their module names and layer order)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, params", [(7, 112_678), (5, 564_234)])
def test_authors_preset_matches_a_plain_recreation_to_1e5(k, params):
    theirs = authors_vae(k, seed=k)
    ours = KernelVAE(KernelVAEConfig.authors(k))
    assert sum(p.numel() for p in ours.parameters()) == params
    assert sum(p.numel() for p in theirs.parameters()) == params
    load_authors_state_dict(ours, theirs.state_dict()).eval()
    w = 0.3 * torch.randn(64, k, k)
    z_mu, z_var = theirs.encoder(w.unsqueeze(1))
    mu, logvar = ours.encode(w)
    torch.testing.assert_close(mu, z_mu.flatten(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar.exp(), z_var.flatten(1), atol=1e-5, rtol=1e-5)
    z = torch.randn(64, ours.latent_dim)
    w_mu, w_var = theirs.decoder(z[:, :, None, None])
    mean, wlogvar = ours.decode(z)
    torch.testing.assert_close(mean, w_mu.squeeze(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wlogvar.exp(), w_var.squeeze(1), atol=1e-5, rtol=1e-5)


def test_authors_state_dict_that_does_not_fit_is_a_clear_error():
    theirs = authors_vae(7, 0).state_dict()
    with pytest.raises(ValueError, match=r"shape mismatches.*KernelVAEConfig.authors\(5\)"):
        load_authors_state_dict(KernelVAE(KernelVAEConfig.authors(5)), theirs)
    broken = {k: v for k, v in theirs.items() if "fc_mu" not in k}
    broken["encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['w_mean.bias'.*unexpected.*encoder.extra"):
        load_authors_state_dict(KernelVAE(KernelVAEConfig.authors(7)), broken)
    # ours is another network: the authors' weights do not load into it
    with pytest.raises(ValueError, match="does not fit"):
        load_authors_state_dict(KernelVAE(KernelVAEConfig.for_kernel(7)), theirs)
    assert len(AUTHORS_KEY_MAP) == 6


def test_layer_lists_are_checked_and_parsed():
    assert LayerSpec.parse("c3p1:64") == LayerSpec("c", 3, 1, 64)
    assert LayerSpec.parse("t3:32").out_side(5) == 7
    with pytest.raises(ValueError, match="write 'c3:64'"):
        LayerSpec.parse("conv3x3")
    with pytest.raises(ValueError, match=r"map 7x7 to 3x3, not 1x1"):
        KernelVAEConfig(kernel_size=7, encoder=("c3:8", "c3:8"))
    with pytest.raises(ValueError, match="released kernel VAEs for 7x7 and 5x5 slices only"):
        KernelVAEConfig.authors(3)
    with pytest.raises(ValueError, match="variance="):
        KernelVAEConfig(variance="exp")
    # our default network, written as layer lists
    assert (
        KernelVAEConfig.for_kernel(5)
        .describe()
        .startswith("encoder c3p1:64 c3:64 c3:64 | decoder c1:64 t3:64 t3:64 t3p1:64")
    )


def test_softplus_variance_stays_finite_where_softplus_underflows():
    vae = KernelVAE(KernelVAEConfig.authors(7))
    with torch.no_grad():
        vae.w_var.bias.fill_(-200.0)
        vae.z_var.bias.fill_(-200.0)
    w = torch.randn(4, 7, 7)
    mu, logvar = vae.encode(w)
    assert torch.isfinite(logvar).all() and torch.isfinite(vae.decode(mu)[1]).all()


# ------------------------------------------------------------------------------------------------
# The release as a data source
# ------------------------------------------------------------------------------------------------


def test_a_placed_release_verifies_and_loads_strictly(fake_release, capsys):
    fake, files = fake_release
    assert rel.cli(None) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == len(files) and "GPL-3.0" in out
    vaes = authors_vaes.load_released_vaes()
    assert vaes["conv1"].kernel_size == 7 and vaes["conv2"].kernel_size == 5
    theirs = authors_vae(5, seed=5)
    z = torch.randn(8, 4)
    torch.testing.assert_close(
        vaes["conv2"].decode(z)[0], theirs.decoder(z[:, :, None, None])[0].squeeze(1)
    )
    assert vaes["conv1"].record["licence"] == "GPL-3.0"
    assert vaes["conv1"].record["sha256"] == fake.files[fake.vaes["conv1"]]
    bank = rel.load_released_bank()
    assert bank["conv1"]["train"].shape == (30, 7, 7) and set(bank["conv2"]) == {"test"}
    record = (rel.release_dir() / rel.RECORD).read_text()
    assert "GPL-3.0" in record and fake.commit in record


def test_one_corrupted_byte_names_the_file_and_its_hash(fake_release):
    fake, files = fake_release
    path = fake.vaes["conv2"]
    local = rel.release_dir() / path
    data = bytearray(local.read_bytes())
    data[100] ^= 1
    local.write_bytes(bytes(data))
    with pytest.raises(rel.ReleaseUnavailableError) as err:
        authors_vaes.load_released_vaes()
    msg = str(err.value)
    assert f"{path}: damaged" in msg and fake.files[path] in msg
    assert str(rel.release_dir()) in msg and "DWP_OFFLINE=1" in msg


def test_offline_without_the_files_names_the_folder(fake_release):
    fake, _ = fake_release
    import shutil

    shutil.rmtree(rel.release_dir() / "data")
    with pytest.raises(rel.ReleaseUnavailableError) as err:
        rel.fetch_release()
    msg = str(err.value)
    assert "missing" in msg and "place a copy of each file" in msg
    assert str(rel.release_dir()) in msg
    assert all(p in msg for p in fake.files if p != "LICENSE")


def test_download_fills_the_cache_and_checks_the_hash(fake_release, monkeypatch, tmp_path):
    """Online: a missing file is fetched (here from a loopback server) and verified."""
    fake, files = fake_release
    served = tmp_path / "served"
    for p, b in files.items():
        (served / p).parent.mkdir(parents=True, exist_ok=True)
        (served / p).write_bytes(b)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import dataclasses
        import shutil

        url = f"http://127.0.0.1:{server.server_address[1]}/"
        online = dataclasses.replace(fake, base_url=url)
        monkeypatch.setattr(rel, "AUTHORS_RELEASE", online)
        monkeypatch.delenv("DWP_OFFLINE")
        shutil.rmtree(rel.release_dir() / "data")
        got = rel.fetch_release()
        assert all(got[p].read_bytes() == b for p, b in files.items())
        assert "downloaded from http://127.0.0.1" in (rel.release_dir() / rel.RECORD).read_text()
        # a server that sends other bytes than the registry's hash: refused, nothing kept
        (served / online.vaes["conv1"]).write_bytes(b"not the weights")
        (rel.release_dir() / online.vaes["conv1"]).unlink()
        with pytest.raises(rel.ReleaseUnavailableError, match="SHA-256"):
            rel.fetch_release()
        assert not (rel.release_dir() / online.vaes["conv1"]).exists()
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------------------------
# The experiment with the released prior beside ours
# ------------------------------------------------------------------------------------------------


def test_experiment_compares_the_released_prior_with_ours(fake_release, fake_world, tmp_path):
    from dwp_lib.experiment import Experiment, method_label, read_rows

    fake, _ = fake_release
    methods = "dwp@released:dwp@released,dwp:dwp,normal:dwp@released,dwp@released/normal:xavier"
    cfg = micro_config(**{"grid.methods": methods, "init.inits": "xavier,dwp@released"})
    exp = Experiment(cfg, tmp_path / "run", "cpu", verbose=False, command="test")
    rows = exp.prior_grid()
    assert {(r["prior"], r["init"]) for r in rows} == {
        ("dwp@released", "dwp@released"),
        ("dwp", "dwp"),
        ("normal", "dwp@released"),
        ("dwp@released/normal", "xavier"),
    }
    by = {(r["prior"], r["init"]): r for r in rows if r["seed"] == 0}
    released_sha = fake.files[fake.vaes["conv1"]][:12]
    assert f"released:conv1={released_sha}" in by[("dwp@released", "dwp@released")]["vae_sha256"]
    assert "released" not in by[("dwp", "dwp")]["vae_sha256"]
    assert by[("normal", "dwp@released")]["vae_sha256"].startswith("released:")
    # the released init is the released VAE's samples, not ours: other kernels, other results
    assert by[("normal", "dwp@released")]["acc_ensemble"] is not None
    curves = exp.init_experiment()
    assert {r["init"] for r in curves} == {"xavier", "dwp@released"}
    prov = exp.provenance()
    assert prov["released_prior"]["licence"] == "GPL-3.0"
    assert prov["released_prior"]["commit"] == fake.commit
    assert set(prov["released_prior"]["layers"]) == {"conv1", "conv2"}
    assert "released" in method_label("normal:dwp@released")
    # resumes: nothing is run again
    again = Experiment(cfg, tmp_path / "run", "cpu", verbose=False)
    assert len(again.prior_grid()) == len(rows)
    assert len(read_rows(tmp_path / "run" / "results.csv")) == len(rows)


def test_experiment_without_the_release_says_where_to_put_it(fake_world, monkeypatch, tmp_path):
    from dwp_lib.experiment import Experiment, ExperimentError

    monkeypatch.setenv("DWP_OFFLINE", "1")
    cfg = micro_config(**{"grid.methods": "dwp@released:xavier"})
    exp = Experiment(cfg, tmp_path / "run", "cpu", verbose=False)
    with pytest.raises(ExperimentError, match="(?s)dwp@released.*place a copy") as err:
        exp.prior_grid()
    assert str(rel.release_dir()) in str(err.value)


def test_our_vaes_fitted_to_the_released_banks(fake_release, fake_world, tmp_path):
    """vae.<layer>.bank=released: our kernel VAE trained on the authors' slices (7x7: their
    train split; 5x5: a seeded 80% of their test file), cached apart from the pipeline's."""
    from dwp_lib import artifacts
    from dwp_lib.experiment import Experiment, ExperimentError

    splits = rel.released_bank_splits()
    assert len(splits["conv2"]["train"]) == 24 and len(splits["conv2"]["test"]) == 6  # of 30
    assert torch.equal(splits["conv2"]["test"], rel.released_bank_splits()["conv2"]["test"])
    base = micro_config(**{"grid.methods": "dwp:dwp", "init.enabled": "false"})
    cfg = micro_config(
        **{"grid.methods": "dwp:dwp", "init.enabled": "false", "vae.conv2.bank": "released"}
    )
    assert base.key() == micro_config(**{"grid.methods": "dwp:dwp", "init.enabled": "false",
                                         "vae.conv2.bank": "pipeline"}).key()  # fmt: skip
    assert cfg.key() != base.key()
    ours = Experiment(base, tmp_path / "a", "cpu", verbose=False)
    exp = Experiment(cfg, tmp_path / "b", "cpu", verbose=False)
    assert torch.equal(exp.vae_slices("conv2", "train"), splits["conv2"]["train"])
    assert torch.equal(exp.vae_slices("conv1", "train"), ours.vae_slices("conv1", "train"))
    assert exp.vae_path("conv2") != ours.vae_path("conv2")
    assert exp.vae_path("conv1") == ours.vae_path("conv1")  # the same VAE: shared in the cache
    rows = exp.prior_grid()
    assert len(rows) == 2 and exp.vae_records["conv2"]["bank"] == "released"
    rec = artifacts.read_record(exp.vae_path("conv2"))
    assert "released bank" in rec["provenance"]["slices_from"]
    with pytest.raises(ExperimentError, match="bank='theirs': use one of pipeline, released"):
        micro_config(**{"vae.conv1.bank": "theirs"})
