//! The GEMM path of a conv: weights packed as a `[(ky, kx, ci) x out]` matrix, and per chunk of
//! output pixels an im2col block gathered from the NHWC input (1x1 stride-1 convs multiply the
//! input directly), multiplied with the epilogue fused into the store.

use ndarray::ArrayView4;
use pulp::{Arch, Simd, WithSimd};
use repvgg_math::ConvSpec;

use crate::aligned::AlignedVec;
use crate::conv::{Geometry, PreparedConv};
use crate::gemm::{self, ColEpilogue};

impl PreparedConv {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_chunk(
        &self,
        w: &[f32],
        direct: bool,
        x: &[f32],
        g: &Geometry,
        p0: usize,
        p1: usize,
        region: &mut [f32],
        slot: &mut [f32],
        inner_par: bool,
        arch: Arch,
    ) {
        let s = &self.spec;
        let (cin, cout, groups) = (s.in_channels, s.out_channels, s.groups);
        let (cin_g, cout_g) = (cin / groups, cout / groups);
        let kg = s.kernel_size * s.kernel_size * cin_g;
        let rows = p1 - p0;
        let col = &mut slot[..if direct { 0 } else { rows * kg }];
        let panels = gemm::packed_len(kg, cout_g);
        for gi in 0..groups {
            let (a, a_rs): (&[f32], usize) = if direct {
                (&x[p0 * cin + gi * cin_g..], cin)
            } else {
                arch.dispatch(Im2col {
                    x,
                    g,
                    spec: s,
                    group: gi,
                    p0,
                    col: &mut *col,
                });
                (&*col, kg)
            };
            let cols = gi * cout_g..(gi + 1) * cout_g;
            let epi = ColEpilogue {
                scale: &self.scale[cols.clone()],
                shift: &self.shift[cols],
                accumulate: self.accumulate,
                relu: self.relu,
            };
            gemm::gemm(
                rows,
                kg,
                cout_g,
                a,
                a_rs,
                &w[gi * panels..(gi + 1) * panels],
                &mut region[gi * cout_g..],
                cout,
                Some(epi),
                inner_par,
            );
        }
    }
}

pub(crate) fn pack_gemm(weight: &ArrayView4<'_, f32>, s: &ConvSpec) -> AlignedVec {
    let (cout_g, cin_g, k) = (
        s.out_channels / s.groups,
        s.in_channels / s.groups,
        s.kernel_size,
    );
    let kg = k * k * cin_g;
    let per_group = gemm::packed_len(kg, cout_g);
    let mut w = AlignedVec::filled(s.groups * per_group, 0.0);
    for (g, wg) in w.chunks_exact_mut(per_group).enumerate() {
        gemm::pack_into(wg, kg, cout_g, |row, co| {
            let (tap, ci) = (row / cin_g, row % cin_g);
            weight[[g * cout_g + co, ci, tap / k, tap % k]]
        });
    }
    w
}

/// Gathers the im2col rows of output pixels `p0..p0 + rows` for one group:
/// `col[p][(ky * k + kx) * cin_g + ci]`, zeros where the tap falls in the padding.
struct Im2col<'a> {
    x: &'a [f32],
    g: &'a Geometry,
    spec: &'a ConvSpec,
    group: usize,
    p0: usize,
    col: &'a mut [f32],
}

impl WithSimd for Im2col<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            x,
            g,
            spec,
            group,
            p0,
            col,
        } = self;
        let (k, s, pad) = (spec.kernel_size, spec.stride, spec.padding);
        let cin = spec.in_channels;
        let cin_g = cin / spec.groups;
        let kg = k * k * cin_g;
        let c0 = group * cin_g;
        for (i, dst) in col.chunks_exact_mut(kg).enumerate() {
            let p = p0 + i;
            let (n, rem) = (p / (g.oh * g.ow), p % (g.oh * g.ow));
            let (oy, ox) = (rem / g.ow, rem % g.ow);
            // Taps kx = 0..k of one kernel row read consecutive input pixels: when the group
            // is the whole input (groups = 1) and the row lies inside the image, they are one
            // contiguous run of k * cin values.
            let ix0 = (ox * s).wrapping_sub(pad);
            let row_inside = ox * s >= pad && ix0 + k <= g.w;
            for ky in 0..k {
                let iy = (oy * s + ky).wrapping_sub(pad);
                let drow = &mut dst[ky * k * cin_g..(ky + 1) * k * cin_g];
                if iy >= g.h {
                    drow.fill(0.0);
                    continue;
                }
                if row_inside && cin_g == cin {
                    let src = ((n * g.h + iy) * g.w + ix0) * cin;
                    copy_run(drow, &x[src..src + k * cin]);
                    continue;
                }
                for (kx, d) in drow.chunks_exact_mut(cin_g).enumerate() {
                    let ix = (ox * s + kx).wrapping_sub(pad);
                    if ix < g.w {
                        let src = ((n * g.h + iy) * g.w + ix) * cin + c0;
                        copy_run(d, &x[src..src + cin_g]);
                    } else {
                        d.fill(0.0);
                    }
                }
            }
        }
    }
}

/// Copies one pixel's channel run; short runs (the stem's 3 channels) without a `memcpy` call.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    if let (Ok(d), Ok(s)) = (
        <&mut [f32; 27]>::try_from(&mut *dst),
        <&[f32; 27]>::try_from(src),
    ) {
        // Fixed-size moves for the stem's runs (3 taps x 3 channels, or a whole 3x3x3 patch).
        *d = *s;
    } else if let (Ok(d), Ok(s)) = (
        <&mut [f32; 9]>::try_from(&mut *dst),
        <&[f32; 9]>::try_from(src),
    ) {
        *d = *s;
    } else if dst.len() <= 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}
