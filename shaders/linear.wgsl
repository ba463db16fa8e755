// Fully connected layer: y[n, o] = act(sum_i x[n, i] * w[o, i] + b[o]), w in PyTorch layout
// [out][in]. act: 0 none, 1 ReLU, 2 sigmoid (the SE block's two 1x1 convs are this).

// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;

struct Params {
    batch: u32,
    in_f: u32,
    out_f: u32,
    flags: u32, // 2: bias
    act: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_BIAS: u32 = 2u;
const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> wt: array<st>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<st>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.batch * p.out_f {
        return;
    }
    let n = i / p.out_f;
    let o = i % p.out_f;
    var acc = 0.0;
    for (var k = 0u; k < p.in_f; k++) {
        acc = fma(f32(x[n * p.in_f + k]), f32(wt[o * p.in_f + k]), acc);
    }
    if (p.flags & FLAG_BIAS) != 0u {
        acc += bias[o];
    }
    if p.act == 1u {
        acc = max(acc, 0.0);
    } else if p.act == 2u {
        acc = 1.0 / (1.0 + exp(-acc));
    }
    y[i] = st(acc);
}
