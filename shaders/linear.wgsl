// Fully connected layer: y[n, o] = act(sum_i x[n, i] * w[o, i] + b[o]). act: 0 none, 1 ReLU,
// 2 sigmoid (the SE block's two 1x1 convs are this).
//
// The weight is uploaded transposed and padded, wt[i][o4] = w[4 o4 .. 4 o4 + 4, i] (zeros past
// out_f), so each invocation computes four outputs of one image with one vec4 weight load and
// one activation load per input: on GPUs neighbouring invocations read neighbouring weights
// (coalesced), and on CPU adapters (lavapipe), where every buffer load is a loop over the SIMD
// lanes, there are a quarter as many loads as with one output per invocation.

struct Params {
    batch: u32,
    in_f: u32,
    out_f: u32,
    flags: u32, // 2: bias
    act: u32,
    out4: u32, // ceil(out_f / 4): vec4 columns per weight row
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read> wt: array<st4>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<st>;

fn finish(v: f32, n: u32, o: u32) {
    if o >= p.out_f {
        return;
    }
    var a = v;
    if (p.flags & FLAG_BIAS) != 0u {
        a += bias[o];
    }
    if p.act == 1u {
        a = max(a, 0.0);
    } else if p.act == 2u {
        a = 1.0 / (1.0 + exp(-a));
    }
    y[n * p.out_f + o] = st(a);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.batch * p.out4 {
        return;
    }
    let n = i / p.out4;
    let o4 = i % p.out4;
    let xb = n * p.in_f;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < p.in_f; k++) {
        acc = fma(vec4<f32>(f32(x[xb + k])), vec4<f32>(wt[k * p.out4 + o4]), acc);
    }
    let o = o4 * 4u;
    finish(acc.x, n, o);
    finish(acc.y, n, o + 1u);
    finish(acc.z, n, o + 2u);
    finish(acc.w, n, o + 3u);
}
