"""benchmarks.quality's DCGAN table: the best-setting rule and the Markdown, on made-up rows (no training)."""

import argparse
import itertools

from benchmarks import quality


def _rows(fid_of):
    rows = []
    for dataset, loss, ema, backend, seed in itertools.product(
            quality.DCGAN_DATASETS, quality.DCGAN_LOSSES, (False, True), quality.BACKENDS, (0, 1)):
        key = quality.fid_key(dataset)
        rows.append({"dataset": dataset, "loss": loss, "ema": ema, "backend": backend, "seed": seed, "steps": 937,
                     "train_wall_s": 100.0 + seed, key: fid_of(dataset, loss, ema) + seed,
                     **{k: 0.5 for k in quality.DCGAN_SHOWN}})
    return rows


def test_the_best_setting_is_the_lowest_fid_on_every_dataset():
    rows = _rows(lambda dataset, loss, ema: 50.0 if (loss, ema) == ("hinge", True) else 80.0)
    assert quality.best_dcgan_setting(rows) == ("hinge", True)


def test_the_best_setting_weighs_the_datasets_alike():
    # hinge wins MNIST by a hair, non-saturating wins Fashion by far and is second on MNIST.
    fids = {("mnist", "hinge"): 90.0, ("mnist", "non-saturating"): 91.0, ("fashion_mnist", "hinge"): 150.0,
            ("fashion_mnist", "non-saturating"): 70.0}
    rows = _rows(lambda dataset, loss, ema: fids.get((dataset, loss), 400.0) + (10.0 if ema else 0.0))
    assert quality.best_dcgan_setting(rows) == ("non-saturating", False)


def test_the_markdown_has_one_table_per_dataset_and_names_the_best():
    rows = _rows(lambda dataset, loss, ema: 60.0 if (loss, ema) == ("non-saturating", False) else 90.0)
    args = argparse.Namespace(epochs=1.0, seeds="0,1", num_samples=10000, conditions="pinned")
    text = quality._dcgan_markdown(rows, args, [0, 1])
    for dataset in quality.DCGAN_DATASETS:
        assert f"## {dataset}" in text and quality.fid_key(dataset) in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line
                  and not line.startswith("| loss")]
    assert len(table_rows) == len(quality.DCGAN_DATASETS) * len(quality.DCGAN_LOSSES) * 2 * len(quality.BACKENDS)
    assert "60.5 ± 0.71" in text  # mean ± sample std of 60 and 61
    assert "**non-saturating, EMA off**" in text
