//! `repvgg bench --profile`: the per-layer tables, one per form and batch.

use repvgg_model::Profile;
use repvgg_model::cpu::OpTime;
use repvgg_model::gpu::LayerTiming;

/// Prints `profile` of `arch`'s `form` at `batch`, `h x w` (on stderr when stdout carries JSON).
pub(crate) fn print(
    profile: &Profile,
    arch: &str,
    form: &str,
    batch: usize,
    (h, w): (usize, usize),
    to_stderr: bool,
) {
    let out = match profile {
        Profile::Cpu(runs) => cpu_table(arch, form, batch, runs),
        Profile::Gpu(layers) => gpu_table(form, batch, (h, w), layers),
        _ => String::new(),
    };
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}

/// Per-op median wall time over the runs, GFLOP/s and share.
fn cpu_table(arch: &str, form: &str, batch: usize, runs: &[Vec<OpTime>]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let med: Vec<f64> = (0..first.len())
        .map(|i| {
            let mut v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i).map(|t| t.seconds))
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let total: f64 = med.iter().sum();
    let mut out = format!(
        "\n{arch} {form} batch {batch}: per-layer profile (median of {} runs), {:.2} ms in all\n",
        runs.len(),
        total * 1e3
    );
    out += &format!(
        "{:>3} {:<48} {:>9} {:>9} {:>7}\n",
        "#", "op", "ms", "GFLOP/s", "share"
    );
    for (i, (t, s)) in first.iter().zip(&med).enumerate() {
        let gf = if *s > 0.0 && t.flops > 0 {
            t.flops as f64 / s / 1e9
        } else {
            0.0
        };
        out += &format!(
            "{:>3} {:<48} {:>9.3} {:>9.1} {:>6.1}%\n",
            i,
            t.op,
            s * 1e3,
            gf,
            100.0 * s / total.max(1e-12)
        );
    }
    out
}

/// Per-layer GPU time, GFLOP/s, share of the run and kernel.
fn gpu_table(form: &str, batch: usize, (h, w): (usize, usize), layers: &[LayerTiming]) -> String {
    let total: f64 = layers.iter().map(|l| l.time.as_secs_f64()).sum();
    let mut out = format!(
        "\n{form} form, batch {batch}, {h}x{w}: {:.2} ms in {} layers\n",
        total * 1e3,
        layers.len()
    );
    // The kernel column as wide as its longest name ("conv gemm split-K x16").
    let kw = layers
        .iter()
        .map(|l| l.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    // The conv's candidate and where it came from: "f4+subgroup12 (cache)".
    let choice = |l: &LayerTiming| l.choice.map_or("-".to_string(), |c| c.to_string());
    let cw = layers
        .iter()
        .map(|l| choice(l).len())
        .max()
        .unwrap_or(0)
        .max(6);
    out += &format!(
        "{:>5} {:<kw$} {:<cw$} {:<22} {:>10} {:>9} {:>7}\n",
        "layer", "kernel", "choice", "output", "time_ms", "GFLOP/s", "share"
    );
    for l in layers {
        let t = l.time.as_secs_f64();
        let gflops = if t > 0.0 {
            2.0 * l.macs as f64 / t / 1e9
        } else {
            0.0
        };
        out += &format!(
            "{:>5} {:<kw$} {:<cw$} {:<22} {:>10.3} {:>9.1} {:>6.1}%\n",
            l.index,
            l.kernel,
            choice(l),
            format!("{:?}", l.output),
            t * 1e3,
            gflops,
            if total > 0.0 { 100.0 * t / total } else { 0.0 }
        );
    }
    out
}
