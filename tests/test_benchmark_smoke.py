"""The step-throughput benchmark end to end on a tiny configuration: its outputs' structure, not its speed."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

# benchmarks/ is not an installed package: import it from this checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
GPU_SH = os.path.join(ROOT, "benchmarks", "gpu.sh")

from benchmarks import flops, recipe, scaling, step_throughput, sweep  # noqa: E402
from gan_common.config import Config  # noqa: E402

pytestmark = pytest.mark.slow  # make test only: every test runs a benchmark CLI end to end

ROW_KEYS = {"backend", "variant", "batch_size", "steps_per_s", "images_per_s", "step_ms_median", "step_ms_p25",
            "step_ms_p75", "first_call_s", "gflops_per_s", "frac_of_peak", "steps_per_call"}


def test_flop_count_is_the_issues_0_725_gflop_at_batch_64():
    parts = flops.step_flops(Config.tutorial(), 64)
    # G: 100*256 + 256*512 + 512*784 = 558080 MACs a row; D: 784*512 + 512*256 + 256 = 532736.
    # Per row: D step 558080 + 4 * 532736 + 2 * (131072 + 256); G step 2 * 558080 + 2 * 532736 + (131072 + 401408).
    assert parts["total"] == 2 * 64 * (2951680 + 2714112) == 725_221_376
    assert sum(v for k, v in parts.items() if k != "total") == parts["total"]


def test_the_floor_benchmarks_time_exactly_the_counted_products():
    for batch in (1, 64, 1000):
        plan = flops.matmul_plan(Config.tutorial(), batch)
        assert flops.plan_flops(Config.tutorial(), plan) == flops.flops_per_step(Config.tutorial(), batch)
    # the products listed in flops
    assert len(flops.matmul_plan(Config.tutorial(), 64)) == 3 + 3 + 3 + 2 + 3 + 3 + 3 + 3 + 2


def test_xla_dots_agree_with_the_analytic_count():
    xla = flops.xla_step_flops(Config.tutorial(), 64)
    analytic = flops.flops_per_step(Config.tutorial(), 64)
    # The dots autodiff hands to XLA are exactly the minimum: no D weight grads in G's step, no d/dx, no d/dz.
    assert xla["dots_traced"] == analytic
    # After optimisation XLA (CPU) turns the 256 -> 1 layer's input grads (outer products, k = 1) into
    # broadcast multiplies: 2 * (2B + B) * 256 = 98304 FLOPs fewer, 0.014 % of the step.
    assert xla["dots"] == pytest.approx(analytic, rel=1e-3)
    assert xla["cost_analysis"] >= xla["dots"]  # XLA's total adds elementwise work and Adam


def test_the_reports_torch_variants_are_the_torch_runners():
    """benchmarks.report keeps its own list (it imports no framework): it must name what torch_runners makes."""
    from benchmarks import report, torch_runners

    assert report.TORCH_VARIANTS == torch_runners.VARIANTS


def test_dcgan_flops_count_each_convolution_as_its_patches_times_its_kernel():
    config = flops.arch_config("dcgan")
    # Multiply-adds per image, (positions, k, n) per layer: G fc 100 * 6272, deconv1 49 * 128 * 1024,
    # deconv2 196 * 64 * 16; D conv1 196 * 16 * 64, conv2 49 * 1024 * 128, fc 6272.
    g, d = 627200 + 6422528 + 200704, 200704 + 6422528 + 6272
    g_skip, d_skip = g - 627200, d - 200704  # no input gradient of the first layer
    assert flops.step_flops(config, 64)["total"] == 2 * 64 * (3 * g + g_skip + 6 * d + 2 * d_skip) == 10_369_171_456
    assert flops.plan_flops(config, flops.matmul_plan(config, 64)) == flops.flops_per_step(config, 64)


def test_dcgan_sweep_has_every_variant_and_convolution_implementation():
    args = step_throughput.parse_args(["--arch", "dcgan", "--conv-impls", "auto,xla", "--precisions", "float32,bf16"])
    assert args.ks == sweep.DCGAN_KS
    args.max_images_per_call = sweep.DCGAN_CPU_MAX_IMAGES
    images = np.zeros((640, 28, 28, 1), np.uint8)
    variants = ("step", "fused", "eager", "tuned", "tuned_cl", "matmuls")
    specs, _ = sweep.variant_specs(64, flops.arch_config("dcgan", batch_size=64), images, variants, args,
                                   sweep.DeviceData())  # constructors only: nothing is built or timed
    assert [label for label, _ in specs] == [
        "jax fused_k10+bf16 (K=10)", "jax fused_k10+bf16+xla (K=10)", "torch eager+bf16", "jax step",
        "jax fused_k10 (K=10)", "jax fused_k10+xla (K=10)", "jax matmuls", "torch eager", "torch tuned",
        "torch tuned_cl", "torch matmuls"]


def test_fused_k_is_capped_for_big_batches_and_never_duplicated():
    assert sweep.fused_ks((1, 10, 100), 64, 16384) == [(1, 1), (10, 10), (100, 100)]
    assert sweep.fused_ks((1, 10, 100), 4096, 16384) == [(1, 1), (4, 100)]


def test_quick_run_writes_rows_for_both_backends(tmp_path):
    paths = {ext: str(tmp_path / f"bench.{ext}") for ext in ("json", "png", "md")}
    step_throughput.main(["--quick", "--batch-sizes", "8", "--repeats", "2", "--ks", "2", "--precisions",
                          "float32,bf16", "--json", paths["json"], "--plot", paths["png"], "--markdown", paths["md"]])

    result = json.load(open(paths["json"]))
    rows = result["rows"]
    for row in rows:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["error"] is None, row
        assert row["steps_per_s"] > 0
        assert row["images_per_s"] == pytest.approx(row["batch_size"] * row["steps_per_s"])
        assert row["step_ms_p25"] <= row["step_ms_median"] <= row["step_ms_p75"]
    got = {(r["backend"], r["variant"], r["batch_size"]) for r in rows}
    want = {(b, v, n) for b, v in [("jax", "step"), ("jax", "fused_k2"), ("jax", "matmuls"), ("jax", "adam"),
                                   ("torch", "eager"), ("torch", "tuned"), ("torch", "matmuls"), ("torch", "adam"),
                                   ("jax", "fused_k2+bf16"), ("torch", "eager+bf16")]
            for n in (8,)}
    assert got == want
    # Adam has no matmul FLOPs; every other row has a rate.
    assert all((r["gflops_per_s"] is None) == (r["variant"] == "adam") for r in rows)

    h = result["header"]
    assert h["machine"]["cpu_model"] and h["machine"]["cpu_count"] >= 1
    assert h["device"]["jax"] and h["device"]["torch"]
    assert {"python", "jax", "jaxlib", "flax", "optax", "torch"} <= set(h["versions"])
    assert h["peak"]["gflops"] > 0
    assert {q["batch_size"] for q in result["ratios"]} == {8}
    assert all(q["jax_fused_over_torch_eager"] > 0 for q in result["ratios"])
    # Floors are reported apart and never stand in for the best torch training step.
    assert all(q["torch_best"] in ("eager", "tuned") for q in result["ratios"])
    assert all(set(q["floors_ms"]) == {"jax matmuls", "torch matmuls", "jax adam", "torch adam"}
               and min(q["floors_ms"].values()) > 0 for q in result["ratios"])
    assert all(q["jax_fused_bf16_over_float32"] > 0 and q["torch_eager_bf16_over_float32"] > 0
               for q in result["ratios"])

    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = open(paths["md"]).read()
    assert "| backend | variant |" in md and "versions:" in md and "bf16 ratios (same run):" in md
    assert "floors, ms a step" in md


def test_quick_run_of_the_default_recipe_times_its_step_in_both_backends():
    result = step_throughput.main(["--quick", "--recipe", "default", "--batch-sizes", "8", "--ks", "2",
                                   "--repeats", "1", "--variants", "fused,eager,tuned"])
    model = result["header"]["settings"]["model"]
    assert model["recipe"] == "default" and model["r1_weight"] > 0 and model["ema_decay"] > 0
    rows = result["rows"]
    assert {(r["backend"], r["variant"]) for r in rows} == {("jax", "fused_k2"), ("torch", "eager"), ("torch", "tuned")}
    assert all(r["error"] is None and r["steps_per_s"] > 0 for r in rows)
    # torch.compile and CUDA graphs are left out of its default variants (R1's double backward, every 4th step)
    gpu_variants = sweep.default_variants(on_gpu=True, dcgan=False, recipe="default")
    assert {"eager", "tuned", "fused"} <= set(gpu_variants)
    assert not {"compiled", "compiled_ro", "cuda_graph"} & set(gpu_variants)
    assert {"compiled", "cuda_graph"} <= set(sweep.default_variants(on_gpu=True, dcgan=False, recipe="tutorial"))


def test_scaling_quick_run_times_every_device_count(tmp_path):
    """benchmarks.scaling in its own process (it simulates 4 CPU devices before JAX starts)."""
    out = str(tmp_path / "scaling.json")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--quick", "--json", out], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.load(open(out))["rows"]
    got = {(r["variant"], r["devices"]) for r in rows}
    assert got == {("fused", 1), ("fused", 2), ("fused", 4), ("fused_data_shd", 2), ("fused_data_shd", 4),
                   ("allreduce", 2), ("allreduce", 4)}
    assert all(r["error"] is None and r["steps_per_s"] > 0 for r in rows)
    assert [r["speed_vs_1_device"] for r in rows if (r["variant"], r["devices"]) == ("fused", 1)] == [1.0]


def test_profile_step_sorts_the_traced_ops_into_groups(capsys):
    """benchmarks.profile_step on a tiny run: every group is reported, and the matmuls are found."""
    from benchmarks import profile_step

    assert profile_step.main(["--batch-size", "2", "--steps-per-call", "2", "--repeats", "1", "--top", "3"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith(("matmul ", "parameter-shaped", "other", "all"))}
    assert {"matmul", "parameter-shaped", "other", "all"} <= set(rows)
    assert float(rows["matmul"][0]) > 0 and float(rows["parameter-shaped"][0]) > 0  # dots and Adam were found


def test_matmul_kernels_times_every_distinct_product_in_both_backends(capsys):
    """benchmarks.matmul_kernels on a tiny run: one row per distinct product of the plan, rates in both backends."""
    from benchmarks import matmul_kernels

    want = matmul_kernels.products(Config.tutorial(), 2)
    # Every product of the plan is some row, counted as often as it occurs in the step.
    assert sum(n for *_, n in want) == len(flops.matmul_plan(Config.tutorial(), 2))
    assert matmul_kernels.main(["--batch-size", "2", "--iters", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith(("fwd", "wgrad", "igrad"))]
    assert len(rows) == len(want)
    assert all(float(r[-3]) > 0 and float(r[-2]) > 0 for r in rows)  # XLA and torch GFLOP/s
    # The closing line sums a step's products in each backend: positive times, and their difference.
    total = re.fullmatch(r"a step's products, summed: XLA (\S+) ms, torch (\S+) ms \(XLA - torch: (\S+) ms\)", out[-1])
    assert total is not None, out[-1]
    xla_ms, torch_ms, diff_ms = map(float, total.groups())
    assert xla_ms > 0 and torch_ms > 0 and abs(xla_ms - torch_ms - diff_ms) <= 2e-3  # printed to 3 decimals


def _gpu_sh_commands(out_dir: str) -> dict[str, list[list[str]]]:
    """The `python -m X ...` lines of benchmarks/gpu.sh, as each module's argvs ($precision as float32)."""
    with open(GPU_SH) as f:
        script = f.read().replace("\\\n", " ")
    commands: dict[str, list[list[str]]] = {}
    for line in script.splitlines():
        if line.startswith("python -m "):
            line = line.split("${extra", 1)[0].split("2>&1", 1)[0]
            line = line.replace('"$precision"', "float32").replace('"$out/', f'"{out_dir}/')
            module, *argv = shlex.split(line)[2:]
            commands.setdefault(module, []).append(argv)
    return commands


def test_gpu_script_passes_only_flags_the_benchmarks_accept(tmp_path):
    """benchmarks/gpu.sh has never had a GPU here: its syntax and every flag it passes are checked on the CPU."""
    from gan_common.cli import parse_args as train_args

    assert subprocess.run(["bash", "-n", GPU_SH]).returncode == 0
    commands = _gpu_sh_commands(str(tmp_path))
    assert set(commands) == {"benchmarks.step_throughput", "benchmarks.scaling", "benchmarks.recipe"}
    # exits (SystemExit) on a bad flag
    mlp, dcgan, mlp_recipe = (step_throughput.parse_args(argv) for argv in commands["benchmarks.step_throughput"])
    assert mlp.json == str(tmp_path / "step_throughput.json") and tuple(mlp.precisions) == ("float32", "bf16")
    assert max(mlp.batch_sizes) == 65536  # the issue's GPU sweep reaches 65,536
    # The DCGAN: both backends' variants (all, by default), XLA's convolutions (auto on a GPU) and the custom ones.
    assert dcgan.arch == "dcgan" and dcgan.variants is None and dcgan.conv_impls == ("auto", "custom")
    assert dcgan.json == str(tmp_path / "step_throughput_dcgan.json") and "bf16" in dcgan.precisions
    # The default recipe's step (R1 and the EMA; --preset mlp and best) beside the seed's
    assert mlp.recipe == "tutorial" and (mlp_recipe.arch, mlp_recipe.recipe) == ("mlp", "default")
    assert mlp_recipe.json == str(tmp_path / "step_throughput_recipe.json")
    scalings = [scaling.parse_args(argv) for argv in commands["benchmarks.scaling"]]
    assert [(a.arch, a.json) for a in scalings] == [("mlp", str(tmp_path / "scaling.json")),
                                                    ("dcgan", str(tmp_path / "scaling_dcgan.json"))]
    # time to quality: the best preset and the default in both backends, evaluated along the way, then tabled
    runs, report = (recipe.parse_args(argv) for argv in commands["benchmarks.recipe"])
    assert set(runs.rows.split(",")) == {"best", "best_torch", "default", "default_torch"} and not runs.report
    assert report.report and report.json == str(tmp_path / "time_to_quality.json") and report.target == 6
    for name in runs.rows.split(","):  # each row's train command parses, with its evaluations on
        config, _ = train_args(recipe.train_argv(name, runs, 0, "x")[3:], "gan_jax.train", "")
        assert config.eval_every > 0 and config.preset in ("best", "")


def test_gpu_script_on_a_cpu_machine_says_what_is_missing(tmp_path):
    """Without CUDA, gpu.sh stops before any timing with one line naming what each backend lacks."""
    # Hide any GPU from both backends, so that this holds on a CUDA machine too.
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", GPU_SH, "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "benchmarks/gpu.sh needs CUDA in both backends" in done.stderr
    assert "sees no CUDA device" in done.stderr and "runs on cpu" in done.stderr  # torch's lack and jax's
    assert not (tmp_path / "out" / "step_throughput.json").exists()


def test_tuned_torch_step_trains_as_the_reference_with_the_default_recipe():
    """The `tuned` runner's R1 (from its one D call) and EMA against gan_torch.step.train_step, on tiny nets over
    9 steps (R1 on steps 0, 4 and 8; the EMA's warm-up), from the same weights and inputs."""
    import torch

    from benchmarks.torch_runners import TunedStep
    from gan_torch.step import create, train_step

    config = Config(g_hidden="32", d_hidden="32", latent_dim=16, batch_size=8)  # the recipe's levers: R1, EMA
    gan, state = create(config)
    tuned = TunedStep(config, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for step in range(9):
        x = torch.rand(8, 28, 28, 1, generator=gen) * 2 - 1
        z_d, z_g = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
        want = train_step(gan, state, x, z_d, z_g)[1]
        got = tuned(x, z_d, z_g)
        # fused against foreach Adam, and R1's gradient from the real rows of one D call against a second D call:
        # float32 rounding only, measured 1e-7 relative. R1 left out, or at twice its weight, measured 0.34 apart
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"metrics of step {step}")
    for name, ours, ref in (("G", tuned.G, state.generator), ("D", tuned.D, state.discriminator),
                            ("EMA", tuned.ema, state.g_ema)):
        for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
            # measured 3e-8 apart (R1 left out or doubled: 2e-3); Adam moves a weight by about lr, 2e-4, a step
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_tuned_torch_step_refuses_what_it_does_not_implement():
    import torch

    from benchmarks.torch_runners import TunedStep

    with pytest.raises(ValueError, match="not --loss hinge"):
        TunedStep(Config(loss="hinge", r1_weight=0.0), torch.device("cpu"))
