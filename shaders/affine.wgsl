// Per-channel affine map on NCHW: y = x * scale[c] + shift[c], then + residual, then ReLU.
// This is a batch norm on a branch of its own (RepVGG's identity branch) or an unfused BN.

// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;

struct Params {
    total: u32, // n * c * hw
    c: u32,
    hw: u32,
    flags: u32,
}

const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> shift: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<st>;
@group(0) @binding(5) var<storage, read_write> y: array<st>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    let c = (i / p.hw) % p.c;
    var v = fma(f32(x[i]), scale[c], shift[c]);
    if (p.flags & FLAG_RESIDUAL) != 0u {
        v += f32(residual[i]);
    }
    if (p.flags & FLAG_RELU) != 0u {
        v = max(v, 0.0);
    }
    y[i] = st(v);
}
