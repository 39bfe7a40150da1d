"""What ``clidep bench`` writes: the one field list of a row, its title, and the printers
(Markdown, CSV, JSON, JSONL through the report writer) and plots. Projected figures say so in
their headers and the title."""

from __future__ import annotations

from pathlib import Path

from clidep.bench import writer as report_writer

#: The provenance every CSV row carries (the Markdown title says it once).
PROVENANCE = ("device", "projected", "emulated", "git_sha", "onnxruntime", "llama_cpp", "reps", "time")


def fields(report: dict) -> list[report_writer.Column]:
    """The one field list of a bench record; projected figures say so in their headers."""
    F = report_writer.Column
    p = "projected " if report["projected"] else ""
    lens = sorted({k for r in report["models"] for k in r.get("prefill_ms", {})}, key=int)
    depths = sorted({k for r in report["models"] for k in r.get("decode_ms_at", {})}, key=int)
    gen = next((r["gen"] for r in report["models"] if r.get("gen")), "")
    tps = [
        *[(f"pp_tps.{n}", f"{p}pp{n} t/s") for n in lens],
        *[(f"tg_tps.{d}", f"{p}tg{gen} @d{d} t/s") for d in depths],
    ]
    return [
        F("name", "model"),
        F("precision", "precision"),
        F("kv_cache", "KV cache"),
        F("runtime", "runtime"),
        F("threads", "threads"),
        F("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.1f}"),
        F("load_s", "load s", ".2f"),
        *[F(f"{k}.mean", header, text=_mean_sd(k)) for k, header in tps],
        *[F(f"{k}.sd", "", table=False) for k, _ in tps],  # the Markdown cell above holds both
        *[F(f"prefill_ms.{n}", "", table=False) for n in lens],
        F("ttft_ms", f"{p}first token ms", ".1f"),
        F("tokens_per_s", "", table=False),
        F("decode_ms_p50", f"{p}decode p50 ms", ".2f"),
        F("decode_ms_p90", f"{p}decode p90 ms", ".2f"),
        *[F(f"decode_ms_at.{n}", f"{p}decode @{n} ms", ".2f") for n in (depths if len(depths) > 1 else [])],
        F("peak_rss_mb", "peak RSS MB", ".0f"),
        F("fits", "fits"),
        F("ppl", "ppl", ".2f"),
        F("roofline_fraction", "roofline", ".0%"),
        F("vs_baseline.decode_speedup", "vs baseline: speed / size / ppl", text=_vs_text),
        *(  # --ppl --baseline: the answers against the baseline's fp32 file (bench/agreement.py)
            [F("vs_baseline.kld_mean", "KLD vs baseline", ".2g"), F("vs_baseline.top1", "top-1 vs baseline", ".1%")]
            if any("kld_mean" in (r.get("vs_baseline") or {}) for r in report["models"])
            else []
        ),
    ]


def _mean_sd(key: str):
    def cell(r: dict) -> str:
        v = report_writer.value(r, key)
        return f"{v['mean']:.1f} ± {v['sd']:.1f}" if v else "-"

    return cell


def _vs_text(r: dict) -> str:
    vs = r.get("vs_baseline")
    if not vs:
        return "-"
    return f"{vs['decode_speedup']:.2f}x / {vs['size_ratio']:.2f} / " + (
        f"{vs['ppl_ratio']:.2f}" if vs["ppl_ratio"] else "-"
    )


def _title(report: dict) -> str:
    prov = report["provenance"]
    where = (
        f"projected for {report['device']} from measurements on {prov['host']}"
        if report["projected"]
        else f"measured on {report['device']} ({prov['remote'] or prov['host']})"
    )
    if prov.get("emulated"):
        where = (
            f"run on {report['device']} ({prov['remote'] or prov['host']}) under emulation ({prov['emulated']}): "
            "the timings are not speed figures"
        )
    llama = f", llama.cpp {prov['llama_cpp']}" if prov.get("llama_cpp") else ""
    return (
        f"**{where}**, {prov['threads']} threads, ONNX Runtime {prov['onnxruntime']}{llama}, git {prov['git_sha']}, "
        f"{prov['time']}"
    )


def markdown(report: dict) -> str:
    """The report as a Markdown table; projected figures are labelled in the title and the columns."""
    return report_writer.markdown(fields(report), report["models"], _title(report))


def write_report(report: dict, out: str | Path) -> list[Path]:
    """bench.json, bench.md, bench.csv, bench.jsonl and two PNG plots in OUT, each written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clidep.files import atomic_write

    out = Path(out)
    paths = report_writer.write(
        out,
        "bench",
        fields(report),
        report["models"],
        report,
        _title(report),
        csv_extra=("error", *[f"provenance.{k}" for k in PROVENANCE]),
    )
    ok = [r for r in report["models"] if "error" not in r]
    p = "projected " if report["projected"] else ""
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in ok:
        if r.get("ppl"):
            ax.scatter(r["decode_ms_p50"], r["ppl"])
            ax.annotate(f"{r['name']} {r['precision']}", (r["decode_ms_p50"], r["ppl"]), fontsize=7)
    ax.set_xlabel(f"{p}decode ms/token (p50)")
    ax.set_ylabel("perplexity")
    ax.set_title(f"{report['device']}: speed against quality")
    fig.tight_layout()
    paths.append(atomic_write(out / "decode_vs_ppl.png", lambda t: fig.savefig(t, format="png", dpi=110)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in ok:
        ns = sorted(r["prefill_ms"], key=int)
        ax.plot(
            [int(n) for n in ns], [r["prefill_ms"][n] for n in ns], marker="o", label=f"{r['name']} {r['precision']}"
        )
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel(f"{p}prefill ms")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(atomic_write(out / "prefill.png", lambda t: fig.savefig(t, format="png", dpi=110)))
    plt.close(fig)
    return paths
