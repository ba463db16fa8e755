// Global average pool: [N, C, H, W] -> [N, C].
//
// Two ways, chosen per shape by the host (`per_row`):
// * rows of at most a workgroup's width (late layers: 7x7 = 49 values): one invocation per
//   (n, c) row sums it alone, no workgroup memory and no barriers;
// * longer rows: one workgroup per row, a strided sum per invocation, then a tree reduction in
//   workgroup memory.

struct Params {
    rows: u32, // n * c
    hw: u32,
    per_row: u32, // 1: one invocation per row; 0: one workgroup per row
    _pad0: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<st>;
@group(0) @binding(2) var<storage, read_write> y: array<st>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let group = wid.x + wid.y * nwg.x;
    if p.per_row != 0u {
        let row = group * WG + lid;
        if row < p.rows {
            var s = 0.0;
            for (var i = 0u; i < p.hw; i++) {
                s += f32(x[row * p.hw + i]);
            }
            y[row] = st(s / f32(p.hw));
        }
        return;
    }
    let row = group;
    if row >= p.rows {
        return; // whole workgroup: uniform
    }
    var s = 0.0;
    for (var i = lid; i < p.hw; i += WG) {
        s += f32(x[row * p.hw + i]);
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        y[row] = st(partial[0] / f32(p.hw));
    }
}
