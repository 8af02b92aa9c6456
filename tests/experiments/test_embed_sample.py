"""`embed` and `sample` end to end on tiny runs: the files they write, their shapes and their content."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_train
from ugvae import run
from ugvae.data import folder_groups, to_unit_float
from ugvae.data.folder import read_images
from ugvae.guide import check_images
from ugvae.trained import load_run


@pytest.fixture(scope="module")
def ugvae_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "ugvae")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return tiny_train(tmp_path_factory, "vae")


@pytest.fixture
def image_sets(tmp_path):
    """Two sets of different sizes, modes and pixel sizes: 3 gray 32x32 images, 5 RGB 28x28 ones."""
    root = tmp_path / "sets"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        Image.new("L", (32, 32), color=40 * i).save(root / "a" / f"{i}.png")
    for i in range(5):
        Image.new("RGB", (28, 28), color=(200, 30 * i, 10)).save(root / "b" / f"{i}.png")
    return root


def exit_code(argv) -> int:
    try:
        return run.main(argv)
    except SystemExit as e:
        return e.code


def test_embed_a_folder_of_image_sets_one_group_per_sub_folder(ugvae_run, image_sets, capsys):
    assert run.main(["embed", "--run", ugvae_run, "--folder", str(image_sets), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    out_dir = os.path.join(ugvae_run, "embed", "sets")
    assert f"wrote {out_dir}/embeddings.npz" in out and f"wrote {out_dir}/beta.csv" in out
    assert "resized to 28x28" in err  # the 32x32 set: a notice
    assert "5 of 8 images are in colour and were converted to grayscale" in err  # the RGB set
    e = np.load(os.path.join(out_dir, "embeddings.npz"))
    assert list(e["group_source"]) == ["a", "b"] and list(e["group_size"]) == [3, 5]
    assert e["beta_loc"].shape == e["beta_scale"].shape == (2, 2) and (e["beta_scale"] > 0).all()
    assert e["z_loc"].shape == e["z_scale"].shape == (8, 2) and e["pi"].shape == (8, 3)
    np.testing.assert_allclose(e["pi"].sum(-1), 1, atol=1e-5)
    assert list(e["sample_group"]) == [0, 0, 0, 1, 1, 1, 1, 1] and list(e["sample_index"]) == [-1] * 8
    assert list(e["sample_name"][:4]) == ["a/0.png", "a/1.png", "a/2.png", "b/0.png"]

    # The same numbers as the guide gives each set read as one group (RGB converted to the run's gray).
    trained = load_run(ugvae_run)
    guide = trained.guide
    for g, name in enumerate("ab"):
        paths = sorted((image_sets / name).iterdir())
        x = to_unit_float(read_images(paths, 28, channels=1).images).unsqueeze(0)
        post = guide.global_posterior(x)
        np.testing.assert_allclose(e["beta_loc"][g], post.loc[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(e["z_loc"][e["sample_group"] == g], guide.local_posterior(x).z_loc[0], atol=1e-5)

    lines = open(os.path.join(out_dir, "beta.csv")).read().splitlines()
    assert lines[0] == "group_id,group_source,group_size,beta_loc_0,beta_loc_1,beta_scale_0,beta_scale_1"
    assert len(lines) == 3 and lines[2].startswith('1,"b",5,')

    # A second call never overwrites the first output.
    assert run.main(["embed", "--run", ugvae_run, "--folder", str(image_sets), "--device", "cpu"]) == 0
    assert os.path.isfile(os.path.join(ugvae_run, "embed", "sets-2", "embeddings.npz"))


def test_embed_cuts_a_flat_folder_and_a_split_into_groups_of_b(ugvae_run, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(10):
        Image.new("L", (28, 28), color=20 * i).save(flat / f"{i:02d}.png")
    assert run.main(["embed", "--run", ugvae_run, "--folder", str(flat), "-B", "4", "--out", str(tmp_path / "o")]) == 0
    e = np.load(tmp_path / "o" / "embeddings.npz")
    assert list(e["group_size"]) == [4, 4, 2] and list(e["group_source"]) == ["flat[0:4]", "flat[4:8]", "flat[8:10]"]

    assert run.main(["embed", "--run", ugvae_run, "--split", "test", "-B", "7", "--out", str(tmp_path / "t")]) == 0
    e = np.load(tmp_path / "t" / "embeddings.npz")
    n = len(e["sample_index"])  # synthetic:200 has 40 test images: groups of 7 and a last one of 5
    assert n == 40 and list(e["group_size"]) == [7] * 5 + [5] and list(e["sample_index"]) == list(range(n))
    assert e["group_source"][-1] == "test[35:40]" and e["sample_name"][3] == "test[3]"
    from ugvae.data import load_dataset

    config = load_run(ugvae_run)

    guide = config.guide
    test = load_dataset(config.train_cfg.dataset, "test")
    x = to_unit_float(test.images[35:40]).unsqueeze(0)
    np.testing.assert_allclose(e["beta_loc"][-1], guide.global_posterior(x).loc[0].numpy(), atol=1e-5)


def test_embed_of_a_model_without_beta_writes_the_local_codes_and_says_so(vae_run, image_sets, capsys):
    assert run.main(["embed", "--run", vae_run, "--folder", str(image_sets), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "beta is absent" in out and "beta.csv" not in out
    out_dir = os.path.join(vae_run, "embed", "sets")
    assert os.listdir(out_dir) == ["embeddings.npz"]
    e = np.load(os.path.join(out_dir, "embeddings.npz"))
    assert "beta_loc" not in e and "pi" not in e and e["z_loc"].shape == (8, 2)


@pytest.mark.parametrize(
    "problem, words",
    [
        ("missing", ["does not exist", "--folder"]),  # the field `folder`, shown as its flag
        ("loose and nested images", ["both sub-folders of images and loose images", "put every image"]),
        ("empty", ["holds no images"]),
        ("--out with files", ["already holds files", "never overwritten"]),
    ],
)
def test_embed_refuses_bad_input_in_one_line(ugvae_run, image_sets, tmp_path, problem, words, capsys):
    folder, extra = image_sets, []
    if problem == "missing":
        folder = tmp_path / "nowhere"
    elif problem == "loose and nested images":
        Image.new("L", (28, 28)).save(image_sets / "loose.png")
    elif problem == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    else:
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep.txt").write_text("mine")
        extra = ["--out", str(tmp_path / "full")]
    assert exit_code(["embed", "--run", ugvae_run, "--folder", str(folder), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for word in words:
        assert word in err


def test_sample_draws_groups_that_share_one_beta(ugvae_run, tmp_path, capsys):
    assert run.main(["sample", "--run", ugvae_run, "--num-groups", "3", "-B", "5", "--device", "cpu"]) == 0
    out_dir = os.path.join(ugvae_run, "samples", "prior")
    out = capsys.readouterr().out
    assert f"wrote {out_dir}/samples.png" in out and f"wrote {out_dir}/samples.npz" in out
    s = np.load(os.path.join(out_dir, "samples.npz"))
    assert s["images"].shape == (3, 5, 1, 28, 28) and s["images"].min() >= 0 and s["images"].max() <= 1
    assert s["beta"].shape == (3, 2) and s["z"].shape == (3, 5, 2) and s["d"].shape == (3, 5)
    assert len({tuple(b) for b in s["beta"]}) == 3  # one beta per group, drawn independently
    # Each image is the decoder's mean of its own (z, beta): beta is shared along a row.
    model = load_run(ugvae_run).model
    decoded = model.decode(torch.from_numpy(s["z"]), torch.from_numpy(s["beta"])[:, None])
    np.testing.assert_allclose(s["images"], decoded.detach().numpy(), atol=1e-5)
    with Image.open(os.path.join(out_dir, "samples.png")) as png:
        assert png.size[0] > 100


def test_sample_with_beta_from_a_folder_fixes_beta_to_its_posterior_mean(ugvae_run, image_sets, tmp_path):
    out = tmp_path / "like-b"
    argv = ["sample", "--run", ugvae_run, "--num-groups", "2", "-B", "4", "--beta-from", str(image_sets / "b")]
    assert run.main([*argv, "--out", str(out)]) == 0
    s = np.load(out / "samples.npz")
    trained = load_run(ugvae_run)
    guide = trained.guide
    groups = folder_groups(image_sets / "b", (1, 28, 28))
    loc = guide.global_posterior(to_unit_float(groups.images).unsqueeze(0)).loc[0].numpy()
    np.testing.assert_allclose(s["beta"], np.stack([loc, loc]), atol=1e-5)
    assert s["images"].shape == (2, 4, 1, 28, 28) and list(s["group_source"]) == ["b", "b"]


def test_sample_with_beta_from_a_folder_of_sets_draws_each_set_from_its_own_beta(ugvae_run, image_sets, tmp_path):
    """The same folder `embed` reads as one group per sub-folder: one beta per set, never pooled."""
    assert (
        run.main(
            ["sample", "--run", ugvae_run, "-B", "3", "--beta-from", str(image_sets), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    s = np.load(tmp_path / "o" / "samples.npz")
    e = load_run(ugvae_run).embed(str(image_sets))
    assert list(s["group_source"]) == ["a", "b"] and s["images"].shape == (2, 3, 1, 28, 28)
    np.testing.assert_allclose(s["beta"], e.beta_loc, atol=1e-5)


def test_sample_of_a_model_without_beta_is_a_clear_error(vae_run, capsys):
    assert exit_code(["sample", "--run", vae_run, "--num-groups", "2"]) == 2
    err = capsys.readouterr().err
    assert "has no global latent" in err and "UG-VAE or ML-VAE" in err


@pytest.mark.parametrize(
    "x, words",
    [
        (torch.zeros(1, 2, 1, 28, 28, dtype=torch.uint8), ["float tensor", "/ 255"]),
        (torch.zeros(2, 1, 28, 28), ["(G, B, C, H, W)", "unsqueeze(0)"]),
        (torch.full((1, 2, 1, 28, 28), 3.0), ["[0, 1]", "max 3"]),
        (torch.full((1, 2, 1, 28, 28), float("nan")), ["[0, 1]", "NaN"]),
    ],
    ids=["uint8", "no group dim", "0..255 floats", "NaN"],
)
def test_guides_reject_images_that_are_not_groups_of_unit_floats(ugvae_run, x, words):
    guide = load_run(ugvae_run).guide
    for call in (check_images, guide.local_posterior, guide.global_posterior):
        with pytest.raises(ValueError) as e:
            call(x)
        for word in words:
            assert word in str(e.value)


def test_a_missing_beta_from_folder_is_named_by_its_own_flag(ugvae_run, tmp_path, capsys):
    assert exit_code(["sample", "--run", ugvae_run, "--beta-from", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "does not exist; check --beta-from" in err and "--folder" not in err


def test_a_read_only_run_embeds_and_samples_into_another_folder(ugvae_run, image_sets, tmp_path):
    """Issue 22 (16): with `--out` elsewhere the run itself is only read: no lock taken, no new folder,
    nothing written (checked on the listing too, as root may write into read-only folders anyway)."""
    frozen = shutil.copytree(ugvae_run, tmp_path / "frozen")
    before = sorted(os.listdir(frozen))
    os.chmod(frozen, 0o555)
    try:
        assert run.main(["embed", "--run", str(frozen), "--folder", str(image_sets), "--out", str(tmp_path / "e")]) == 0
        assert run.main(["sample", "--run", str(frozen), "-B", "2", "--out", str(tmp_path / "s")]) == 0
    finally:
        os.chmod(frozen, 0o755)
    assert sorted(os.listdir(frozen)) == before  # no embed/ or samples/ folder, nothing else
    assert os.path.isfile(tmp_path / "e" / "embeddings.npz") and os.path.isfile(tmp_path / "s" / "samples.npz")


@pytest.mark.parametrize("active_dims", [0, 2])
def test_embed_and_sample_from_sets_say_once_when_beta_was_inactive(
    ugvae_run, image_sets, tmp_path, caplog, active_dims
):
    """Issue 30 (1b): `sample --beta-from` on an inactive-beta run labelled rows "beta of SET" that were
    ordinary draws, without a word."""
    copy = shutil.copytree(ugvae_run, str(tmp_path / "run"))
    summary_path = os.path.join(copy, "summary.json")
    summary = json.load(open(summary_path))
    json.dump({**summary, "beta_active_dims": active_dims}, open(summary_path, "w"))
    notices = []
    for argv in (
        ["embed", "--run", copy, "--folder", str(image_sets)],
        ["embed", "--run", copy, "--split", "test"],
        ["sample", "--run", copy, "-B", "2", "--beta-from", str(image_sets)],
        ["sample", "--run", copy, "-B", "2"],  # from p(beta): nothing claimed of a set, nothing to say
    ):
        caplog.clear()
        assert run.main(argv) == 0
        notices.append([r.getMessage() for r in caplog.records if "beta was inactive" in r.getMessage()])
    if active_dims:
        assert notices == [[], [], [], []]
        return
    assert [len(n) for n in notices] == [1, 1, 1, 0]
    assert "every group's beta_loc is about the same" in notices[0][0] and notices[1] == notices[0]
    assert "the rows drawn with the beta of a set look like the rows drawn from p(beta)" in notices[2][0]
