// The prelude of every shader in shaders/ (`Shader::source_for` prepends it): storage element
// types and the epilogue flags.
//
// Storage element type: f32 here; the f16 build (Precision::F16) makes it f16 and prepends
// `enable f16;`. Loads convert to f32 (`f32(..)`), stores round (`st(..)`); arithmetic is f32.
alias st = f32;
alias st4 = vec4<f32>;

// Bits of `p.flags`: the same as `kernels::FLAG_*` on the host.
const FLAG_SCALE: u32 = 1u;
const FLAG_BIAS: u32 = 2u;
const FLAG_RESIDUAL: u32 = 4u;
const FLAG_RELU: u32 = 8u;
