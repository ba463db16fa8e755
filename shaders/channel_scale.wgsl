// Per-image channel scaling: y[n, c, h, w] = x[n, c, h, w] * s[n, c], then optional ReLU.
// In squeeze-and-excitation `s` is the excitation (sigmoid output of the block's second FC).

struct Params {
    total: u32, // n * c * hw
    hw: u32,
    flags: u32, // 8: ReLU
    _pad0: u32,
}

const FLAG_RELU: u32 = 8u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    var v = x[i] * s[i / p.hw];
    if (p.flags & FLAG_RELU) != 0u {
        v = max(v, 0.0);
    }
    y[i] = v;
}
