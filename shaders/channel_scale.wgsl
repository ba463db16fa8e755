// Per-image channel scaling: y[n, c, h, w] = x[n, c, h, w] * s[n, c], then optional ReLU.
// In squeeze-and-excitation `s` is the excitation (sigmoid output of the block's second FC).

struct Params {
    total: u32, // n * c * hw
    hw: u32,
    flags: u32, // 8: ReLU
    _pad0: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> s: array<st>;
@group(0) @binding(3) var<storage, read_write> y: array<st>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    var v = f32(x[i]) * f32(s[i / p.hw]);
    if (p.flags & FLAG_RELU) != 0u {
        v = max(v, 0.0);
    }
    y[i] = st(v);
}
