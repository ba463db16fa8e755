// Direct convolution, one output element per invocation: the baseline for conv_tiled.wgsl.
// The weight keeps its PyTorch layout [cout][cin / groups][ks][ks]. Same fused epilogue.

struct Params {
    n: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad: u32,
    cin_g: u32,
    cout_g: u32,
    ks: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    let ohw = p.oh * p.ow;
    if i >= p.n * p.cout * ohw {
        return;
    }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let oc = (i / ohw) % p.cout;
    let img = i / (ohw * p.cout);
    let g = oc / p.cout_g;
    var acc = 0.0;
    for (var ci = 0u; ci < p.cin_g; ci++) {
        let plane = (img * p.cin + g * p.cin_g + ci) * p.h * p.w;
        let wrow = (oc * p.cin_g + ci) * p.ks * p.ks;
        for (var ky = 0u; ky < p.ks; ky++) {
            let iy = i32(oy * p.stride + ky) - i32(p.pad);
            if iy < 0 || iy >= i32(p.h) {
                continue;
            }
            for (var kx = 0u; kx < p.ks; kx++) {
                let ix = i32(ox * p.stride + kx) - i32(p.pad);
                if ix < 0 || ix >= i32(p.w) {
                    continue;
                }
                acc = fma(x[plane + u32(iy) * p.w + u32(ix)], wt[wrow + ky * p.ks + kx], acc);
            }
        }
    }
    let sb = ep_scale_bias(oc);
    y[i] = ep_finish(fma(acc, sb.x, sb.y), i);
}
