"""Results into words and pictures: ratios from one run, fixed-width tables, Markdown, the plot.

A step-throughput result is {'header', 'flops', 'rows', 'ratios'}; a scaling result {'header', 'rows'}.
Rows are benchmarks.timing.row_of's. Nothing here times anything or imports a framework.
"""

from __future__ import annotations

import matplotlib.ticker
from matplotlib.figure import Figure

from benchmarks import flops as flops_lib

# Variant names of the step-throughput rows (the `variant` column; fused rows are fused_kK, bf16 rows end +bf16).
JAX_VARIANTS = ("step", "fused")
TORCH_VARIANTS = ("eager", "tuned", "tuned_cl", "compiled", "compiled_ro", "cuda_graph")  # = torch_runners.VARIANTS
FLOOR_VARIANTS = ("matmuls", "adam")  # parts of a step timed alone, in both backends: not training steps
ALL_VARIANTS = JAX_VARIANTS + TORCH_VARIANTS + FLOOR_VARIANTS


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


# ----------------------------------------------------------------------------- step throughput
def ratios(rows: list[dict]) -> list[dict]:
    """Per batch size: best JAX fused over torch eager and over the best torch variant, from this run's medians."""
    out = []
    for batch in sorted({r["batch_size"] for r in rows}):
        both = [r for r in rows if r["batch_size"] == batch and r["steps_per_s"]]
        ok = [r for r in both if not r["variant"].endswith("+bf16")]
        low = [r for r in both if r["variant"].endswith("+bf16")]
        fused = [r for r in ok if r["backend"] == "jax" and r["variant"].startswith("fused")]
        torch_rows = [r for r in ok if r["backend"] == "torch" and r["variant"] in TORCH_VARIANTS]
        eager = [r for r in torch_rows if r["variant"] == "eager"]
        step = [r for r in ok if r["backend"] == "jax" and r["variant"] == "step"]
        entry = {"batch_size": batch}
        floors = {f"{r['backend']} {r['variant']}": r["step_ms_median"] for r in ok if r["variant"] in FLOOR_VARIANTS}
        if floors:
            entry["floors_ms"] = floors
        if fused:
            bf = max(fused, key=lambda r: r["steps_per_s"])
            entry["jax_fused_best"] = f"{bf['variant']} (K={bf['steps_per_call']})"
            if eager:
                entry["jax_fused_over_torch_eager"] = bf["steps_per_s"] / eager[0]["steps_per_s"]
                # The same from CPU time a step (all threads), which a busy host moves less than wall time.
                if bf.get("cpu_ms_median") and eager[0].get("cpu_ms_median"):
                    entry["jax_fused_over_torch_eager_cpu"] = eager[0]["cpu_ms_median"] / bf["cpu_ms_median"]
            if torch_rows:
                bt = max(torch_rows, key=lambda r: r["steps_per_s"])
                entry["torch_best"] = bt["variant"]
                entry["jax_fused_over_torch_best"] = bf["steps_per_s"] / bt["steps_per_s"]
        if step and eager:
            entry["jax_step_over_torch_eager"] = step[0]["steps_per_s"] / eager[0]["steps_per_s"]
        fused16 = [r for r in low if r["backend"] == "jax"]
        eager16 = [r for r in low if r["backend"] == "torch"]
        if fused16 and fused:
            entry["jax_fused_bf16_over_float32"] = (max(r["steps_per_s"] for r in fused16)
                                                    / max(r["steps_per_s"] for r in fused))
        if eager16 and eager:
            entry["torch_eager_bf16_over_float32"] = eager16[0]["steps_per_s"] / eager[0]["steps_per_s"]
        if fused16 and eager16:
            entry["jax_fused_bf16_over_torch_eager_bf16"] = (max(r["steps_per_s"] for r in fused16)
                                                             / eager16[0]["steps_per_s"])
        out.append(entry)
    return out


def add_rates(rows: list[dict], peak_gflops: float) -> None:
    """GFLOP/s and fraction of the peak of every timed row but Adam's (it has no matmul FLOPs to count)."""
    for row in rows:
        if row["steps_per_s"] and row["variant"] != "adam":
            row["gflops_per_s"] = row["flops_per_step"] * row["steps_per_s"] / 1e9
            row["frac_of_peak"] = row["gflops_per_s"] / peak_gflops


def machine_lines(h: dict) -> list[str]:
    """The machine line of a header (benchmarks.machine.machine_header), load averages included."""
    m = h["machine"]
    return [f"machine: {m['cpu_model']}, {m['cpus_usable']} of {m['cpu_count']} cores usable; load average "
            f"{m['load_avg_start']} at start" + (f", {m['load_avg_end']} at end" if "load_avg_end" in m else "")]


def header_lines(h: dict) -> list[str]:
    d = h["device"]
    lines = machine_lines(h) + [
        f"device: jax {d['jax']}; torch {d['torch']} ({d['torch_threads']} threads); precision {h['precision']}",
        "versions: " + ", ".join(f"{k} {val}" for k, val in h["versions"].items())]
    if "peak" in h:
        p = h["peak"]
        lines.append(f"peak: {p['gflops']:.1f} GFLOP/s ({p['method']}; start {p['start']}, end {p['end']})")
    return lines


def flops_lines(f: dict) -> list[str]:
    """The FLOPs section (benchmarks.flops.flops_section): the breakdown at 64, then XLA's counts."""
    lines = ["analytic FLOPs of one step at batch 64 (" + f["note"] + "):",
             flops_lib.format_breakdown(f["breakdown_batch_64"])]
    for b, x in f.get("xla", {}).items():
        analytic = f["analytic_per_step"].get(b) or f["breakdown_batch_64"]["total"]
        lines += [f" batch {b}: analytic {analytic / 1e9:.6f} GFLOP", flops_lib.format_xla(x, analytic)]
    return lines


def row_line(row: dict) -> str:
    """One row as the sweep prints it while running."""
    if not row["steps_per_s"]:
        return f"FAILED {row['error']}"
    return f"{row['steps_per_s']:12.2f} steps/s, median step {row['step_ms_median']:.3f} ms"


def table_lines(result: dict) -> list[str]:
    """The results as fixed-width text (also the body of the Markdown file)."""
    cols = ("backend", "variant", "B", "K", "steps/s", "images/s", "step ms median [p25, p75]", "min..max ms",
            "CPU ms", "first call s", "GFLOP/s", "% peak")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in result["rows"]:
        if not r["steps_per_s"]:
            lines.append(" | ".join([r["backend"], r["variant"], str(r["batch_size"]), "", "FAILED",
                                     (r["error"] or "")[:80], "", "", "", "", "", ""]))
            continue
        lines.append(" | ".join([
            r["backend"], r["variant"], str(r["batch_size"]), str(r["steps_per_call"]),
            f"{r['steps_per_s']:.4g}", f"{r['images_per_s']:.4g}",
            f"{r['step_ms_median']:.4g} [{r['step_ms_p25']:.4g}, {r['step_ms_p75']:.4g}]",
            f"{r['step_ms_min']:.4g}..{r['step_ms_max']:.4g}", _num(r.get("cpu_ms_median")), f"{r['first_call_s']:.3g}",
            _num(r["gflops_per_s"]), _num(r["frac_of_peak"] and 100 * r["frac_of_peak"], 3)]))
    lines += ["", "ratios of steps/s (same run) | " + " | ".join(("B", "best jax fused", "/ torch eager",
                                                                   "best torch", "/ best torch", "jax step / eager",
                                                                   "/ torch eager, CPU time")),
              " | ".join("---" for _ in range(8))]
    for q in result["ratios"]:
        lines.append(" | ".join(["", str(q["batch_size"]), q.get("jax_fused_best", ""),
                                 _fmt(q.get("jax_fused_over_torch_eager")), q.get("torch_best", ""),
                                 _fmt(q.get("jax_fused_over_torch_best")), _fmt(q.get("jax_step_over_torch_eager")),
                                 _fmt(q.get("jax_fused_over_torch_eager_cpu"))]))
    if any("floors_ms" in q for q in result["ratios"]):
        names = [f"{b} {v}" for v in FLOOR_VARIANTS for b in ("jax", "torch")]
        lines += ["", "floors, ms a step (same run; parts of a step timed alone) | B | " + " | ".join(names),
                  " | ".join("---" for _ in range(len(names) + 2))]
        for q in result["ratios"]:
            f = q.get("floors_ms", {})
            lines.append(" | ".join(["", str(q["batch_size"])] + [f"{f[n]:.4g}" if n in f else "" for n in names]))
    if any("jax_fused_bf16_over_float32" in q or "torch_eager_bf16_over_float32" in q for q in result["ratios"]):
        lines += ["", "bf16 ratios (same run) | B | jax fused bf16 / float32 | torch eager bf16 / float32 | "
                      "jax fused bf16 / torch eager bf16", " | ".join("---" for _ in range(5))]
        for q in result["ratios"]:
            lines.append(" | ".join(["", str(q["batch_size"]), _fmt(q.get("jax_fused_bf16_over_float32")),
                                     _fmt(q.get("torch_eager_bf16_over_float32")),
                                     _fmt(q.get("jax_fused_bf16_over_torch_eager_bf16"))]))
    return lines


def _num(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}g}"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.3g}x"


def markdown(result: dict) -> str:
    h, f = result["header"], result["flops"]
    out = [f"## Step throughput ({h['date']})", ""] + [f"- {line}" for line in header_lines(h)] + [
           f"- settings: {h['settings']}", f"- data: {h['dataset']}", f"- total runtime: {h['total_s']} s",
           f"- FLOPs: {f['note']}; {f['breakdown_batch_64']['total'] / 1e9:.4f} GFLOP per step at batch 64", ""]
    body = table_lines(result)
    split = body.index("")
    out += ["| " + line + " |" for line in body[:split]]
    for line in body[split:]:  # the ratio tables: their first cell is a title, written above them
        if not line:
            out.append("")
        elif line.split(" | ", 1)[0] not in ("", "---"):
            title, rest = line.split(" | ", 1)
            out += [f"{title}:", "", "| " + rest + " |"]
        else:
            out.append("| " + line.split(" | ", 1)[1] + " |")
    return "\n".join(out) + "\n"


def plot(result: dict, path: str) -> None:
    """steps/s against batch size, log-log, one line per variant, as a PNG at `path`."""
    fig = Figure(figsize=(8, 5.5))  # no pyplot: no GUI backend, no global figure state
    ax = fig.subplots()
    labels = list(dict.fromkeys(f"{r['backend']} {r['variant']}" for r in result["rows"]))
    for label in labels:
        pts = sorted((r["batch_size"], r["steps_per_s"]) for r in result["rows"]
                     if f"{r['backend']} {r['variant']}" == label and r["steps_per_s"])
        if pts:
            floor = label.split(" ")[1] in FLOOR_VARIANTS  # parts of a step, dotted; torch dashed
            style = ":" if floor else "-" if label.startswith("jax") else "--"
            ax.plot(*zip(*pts, strict=True), marker="." if floor else "o", linestyle=style,
                    label=label + (" (floor)" if floor else ""))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r["batch_size"] for r in result["rows"]})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel("training steps / s (D + G update)")
    h = result["header"]
    ax.set_title(f"{h['device']['jax']} | {h['machine']['cpu_model'][:48]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- data-parallel scaling
def add_speedups(rows: list[dict]) -> None:
    """speed_vs_1_device: each fused row against the 1-device fused row of its batch, from this run."""
    for row in rows:
        base = [r for r in rows if r["batch_size"] == row["batch_size"] and r["devices"] == 1 and r["steps_per_s"]]
        if base and row["steps_per_s"] and row["variant"] != "allreduce":
            row["speed_vs_1_device"] = row["steps_per_s"] / base[0]["steps_per_s"]


def scaling_header_lines(h: dict) -> list[str]:
    return machine_lines(h) + [
        f"device: jax {h['device']['jax']}" + (" (simulated CPU devices sharing these cores)"
                                               if h["settings"]["simulated_cpu_devices"] else ""),
        "versions: " + ", ".join(f"{k} {val}" for k, val in h["versions"].items()),
        f"settings: {h['settings']}"]


def scaling_table(result: dict) -> list[str]:
    cols = ("B", "devices", "variant", "step ms median [p25, p75]", "steps/s", "vs 1 device")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for r in result["rows"]:
        if not r["steps_per_s"]:
            lines.append(" | ".join([str(r["batch_size"]), str(r["devices"]), r["variant"], "FAILED", "", ""]))
            continue
        vs = r.get("speed_vs_1_device")
        lines.append(" | ".join([str(r["batch_size"]), str(r["devices"]), r["variant"],
                                 f"{r['step_ms_median']:.4g} [{r['step_ms_p25']:.4g}, {r['step_ms_p75']:.4g}]",
                                 f"{r['steps_per_s']:.4g}", "" if vs is None else f"{vs:.2f}x"]))
    return lines


def scaling_markdown(result: dict) -> str:
    h = result["header"]
    return (f"## Data-parallel scaling ({h['date']})\n\n" + "\n".join(f"- {line}" for line in scaling_header_lines(h))
            + "\n\n" + "\n".join("| " + line + " |" for line in scaling_table(result)) + "\n")
