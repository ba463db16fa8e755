// The fused epilogue, prepended after the prelude to every kernel that ends a convolution (and
// to the per-channel affine map):
//
//   y[i] = relu?(acc * scale[oc] + bias[oc] + residual[i])
//
// each term only where its flag is set in `p.flags`. The shader declares `p` (a `Params` with
// `flags`), `scale` and `bias` (array<f32>, one value per output channel) and `residual`
// (array<st>, shaped like the output); the host binds a placeholder where a flag is unset.

// (scale, bias) of output channel oc: (1, 0) where not flagged.
fn ep_scale_bias(oc: u32) -> vec2<f32> {
    var sb = vec2<f32>(1.0, 0.0);
    if (p.flags & FLAG_SCALE) != 0u {
        sb.x = scale[oc];
    }
    if (p.flags & FLAG_BIAS) != 0u {
        sb.y = bias[oc];
    }
    return sb;
}

// v (scaled and biased) plus the residual at output index i, then ReLU, each where flagged.
fn ep_finish(v: f32, i: u32) -> f32 {
    var r = v;
    if (p.flags & FLAG_RESIDUAL) != 0u {
        r += f32(residual[i]);
    }
    if (p.flags & FLAG_RELU) != 0u {
        r = max(r, 0.0);
    }
    return r;
}

// ReLU where flagged, on 4 values at once (stores that add no residual).
fn ep_relu4(v: vec4<f32>) -> vec4<f32> {
    if (p.flags & FLAG_RELU) != 0u {
        return max(v, vec4<f32>(0.0));
    }
    return v;
}
