// Per-channel affine map on NCHW: y = x * scale[c] + shift[c], then + residual, then ReLU: the
// epilogue (common/epilogue.wgsl) on its own, the shift bound as its bias. This is a batch norm
// on a branch of its own (RepVGG's identity branch) or an unfused BN.

struct Params {
    total: u32, // n * c * hw
    c: u32,
    hw: u32,
    flags: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>; // the shift
@group(0) @binding(4) var<storage, read> residual: array<st>;
@group(0) @binding(5) var<storage, read_write> y: array<st>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    let sb = ep_scale_bias((i / p.hw) % p.c);
    y[i] = st(ep_finish(fma(f32(x[i]), sb.x, sb.y), i));
}
