//! GFLOP/s of every conv kernel on RepVGG-A0's distinct 3x3 conv shapes.
//!
//! `cargo run --release -p repvgg-gpu --example conv_gflops [-- batch iters]`; `ONLY=gemm`
//! times one kernel, `SHAPES=2,4` some shapes. GFLOP/s count the direct convolution's
//! multiply-adds for every kernel (Winograd's are effective figures).

use ndarray::Array4;
use repvgg_gpu::{ConvKernel, Epilogue, GpuContext, NetworkBuilder};
use repvgg_math::ConvSpec;

/// (in, out, stride, input size) of every distinct 3x3 conv of RepVGG-A0 at 224x224.
const A0: [(usize, usize, usize, usize); 8] = [
    (3, 48, 2, 224),
    (48, 48, 2, 112),
    (48, 48, 1, 56),
    (48, 96, 2, 56),
    (96, 96, 1, 28),
    (96, 192, 2, 28),
    (192, 192, 1, 14),
    (192, 1280, 2, 14),
];

/// User + system CPU time of this process (all threads, lavapipe's included), seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(1);
    let iters = args.get(1).copied().unwrap_or(5);
    let only = std::env::var("ONLY").ok();
    let ctx = GpuContext::new()?;
    println!("{}", ctx.info().name);
    let shapes: Option<Vec<usize>> = std::env::var("SHAPES")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect());
    for (si, (cin, cout, stride, size)) in A0.into_iter().enumerate() {
        if shapes.as_ref().is_some_and(|s| !s.contains(&si)) {
            continue;
        }
        let spec = ConvSpec::conv3x3(cin, cout, stride, 1)?;
        let mut line = format!("{cin:>4}->{cout:<4} s{stride} @{size:<3}");
        for kernel in ConvKernel::ALL {
            if only
                .as_deref()
                .is_some_and(|o| !format!("{kernel:?}").eq_ignore_ascii_case(o))
            {
                continue;
            }
            let mut b = NetworkBuilder::new(&ctx).kernel(kernel);
            let x = b.input(cin);
            let w = Array4::from_shape_fn(spec.weight_shape(), |(o, i, y, x)| {
                ((o * 31 + i * 7 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
            });
            let y = b.conv(x, w.view(), spec, Epilogue::bias(vec![0.1; cout]).relu())?;
            b.output("y", y);
            let net = match b.build() {
                Ok(net) => net,
                Err(e) => {
                    line += &format!("  {kernel:?}: {e}");
                    continue;
                }
            };
            // Direct-convolution FLOPs for every kernel (Winograd's are effective GFLOP/s).
            let flops = 2.0 * spec.macs(size, size)? as f64 * batch as f64;
            net.bench(batch, size, size, 1, 0)?;
            let cpu0 = cpu_seconds();
            let mut times = net.bench(batch, size, size, 0, iters)?;
            let cpu = (cpu_seconds() - cpu0) / iters as f64;
            times.sort();
            let median = times[times.len() / 2].as_secs_f64();
            line += &format!(
                "  {kernel:?}: {:7.2} ms {:6.2} GFLOP/s ({:5.2} GFLOP per CPU-s)",
                median * 1e3,
                flops / median / 1e9,
                flops / cpu / 1e9
            );
        }
        println!("{line}");
    }
    Ok(())
}
