// The second pass of a split-K convolution (`conv_gemm.wgsl` with FLAG_PARTIAL): adds the
// slices' raw sums in slice order, then applies the conv's epilogue (scale, bias, residual,
// ReLU) and stores the output. One invocation per output element of the NCHW output.

// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;

struct Params {
    total: u32, // n * cout * oh * ow
    cout: u32,
    ohw: u32,
    splits: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FLAG_SCALE: u32 = 1u;
const FLAG_BIAS: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>; // [splits][total]
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<st>;
@group(0) @binding(5) var<storage, read_write> y: array<st>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.total {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        v += partial[s * p.total + i];
    }
    let oc = (i / p.ohw) % p.cout;
    if (p.flags & FLAG_SCALE) != 0u {
        v *= scale[oc];
    }
    if (p.flags & FLAG_BIAS) != 0u {
        v += bias[oc];
    }
    if (p.flags & FLAG_RESIDUAL) != 0u {
        v += f32(residual[i]);
    }
    if (p.flags & FLAG_RELU) != 0u {
        v = max(v, 0.0);
    }
    y[i] = st(v);
}
