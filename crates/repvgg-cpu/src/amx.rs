//! The crate's `unsafe` module for Intel AMX: convolutions on the tiles, `tdpbusd` (u8 x s8 ->
//! s32, the int8 convs) and `tdpbf16ps` (bf16 x bf16 -> f32, the bf16 convs), written as inline
//! assembly because the AMX intrinsics are not stable Rust.
//!
//! An implicit GEMM: the rows of a tile are consecutive output pixels of one output row, read
//! straight from an input stored with its padding (`[n][h + 2p][w + 2p][c]`, the border holding
//! the zero point), so that one tap's channels of those pixels are rows `stride x c` values
//! apart — one `tileloadd`, no gathered copy. Everything here counts bytes: both instructions
//! read their A tile as rows of at most 64 bytes and their B tile as rows of 16 columns of four
//! bytes (four u8/s8 values or two bf16 values of consecutive sum steps), so one driver serves
//! both element types. The sum runs over taps, then chunks of at most 64 bytes; the weights are
//! packed panels (`[k / 4 bytes][w][4 bytes]`, 16 columns a tile). Two pixel groups (A tiles)
//! times two 16-column halves of a panel (B tiles) fill four accumulator tiles; the sums are
//! stored and finished with AVX-512 ([`Epilogue`]).
//!
//! Why the `unsafe` is sound:
//! * The functions compiled for AVX-512 are entered only after [`available`] saw AVX-512 F/BW
//!   (and VNNI for int8) and the AMX tile feature of the operation on this CPU, and Linux
//!   granted this process the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); without that
//!   grant the tile instructions fault.
//! * Every tile load and store touches `rows` rows of `colsb` bytes, `stride` apart, from a
//!   pointer into a slice: [`Tiles`] asserts that the last byte is inside the slice before each
//!   such instruction (a few integer compares per 16 x 16 x 64-byte product).
//! * The tile configuration is loaded by [`Tiles::new`] on the calling thread and released when
//!   the value drops, and nothing in between runs other code on that thread (no rayon calls
//!   inside), so the tiles hold what this module put there.
//!
//! The tests (`int8::conv`, `bf16`) run these paths against their oracles whenever the CPU has
//! them.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use crate::int8::{NR, Requant, panel_width, panels};

/// The largest sum chunk of one tile product, in bytes: a tile row holds 64 bytes.
pub(crate) const MAX_KC: usize = 64;
/// The most rows (output pixels) of a tile.
pub(crate) const MAX_ROWS: usize = 16;

/// The tile product a conv runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `tdpbusd`: u8 activations, s8 weights, s32 sums.
    U8I8,
    /// `tdpbf16ps`: bf16 activations and weights, f32 sums.
    Bf16,
}

/// Whether this CPU runs `op` on the tiles and this process may use them (asked of the OS once).
pub(crate) fn available(op: Op) -> bool {
    static AVAILABLE: OnceLock<(bool, bool)> = OnceLock::new();
    let (int8, bf16) = *AVAILABLE.get_or_init(detect);
    match op {
        Op::U8I8 => int8,
        Op::Bf16 => bf16,
    }
}

/// (int8, bf16): the tile features with the AVX-512 features each epilogue needs, and the OS's
/// grant of the tile state.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> (bool, bool) {
    use core::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // CPUID is an instruction of every x86_64 CPU.
    let (max, _) = __get_cpuid_max(0);
    if max < 7 {
        return (false, false);
    }
    let leaf = __cpuid_count(7, 0);
    let bit = |b: u32| leaf.edx >> b & 1 == 1;
    let (bf16, tile, int8) = (bit(22), bit(24), bit(25));
    let int8 = tile && int8 && crate::int8::has_vnni();
    let bf16 = tile
        && bf16
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw");
    if !(int8 || bf16) {
        return (false, false);
    }
    /// `arch_prctl` request: permission for an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The extended state component of the tile data.
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` takes two integers and
    // touches no memory of ours; it returns 0 when the permission is granted, -1 otherwise
    // (old kernels, a CPU without AMX).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    if rc == 0 {
        (int8, bf16)
    } else {
        (false, false)
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> (bool, bool) {
    (false, false)
}

/// The CPU features `op` needs that this CPU lacks, by their `/proc/cpuinfo` names (empty when
/// it has them all: then only the OS's grant of the tile state can be missing).
pub(crate) fn missing(op: Op) -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{__cpuid_count, __get_cpuid_max};
        let (max, _) = __get_cpuid_max(0);
        let edx = if max >= 7 { __cpuid_count(7, 0).edx } else { 0 };
        let amx = match op {
            Op::U8I8 => ("amx_int8", 25),
            Op::Bf16 => ("amx_bf16", 22),
        };
        let mut lacks: Vec<&'static str> = [("amx_tile", 24), amx]
            .into_iter()
            .filter(|&(_, bit)| edx >> bit & 1 == 0)
            .map(|(name, _)| name)
            .collect();
        if !std::arch::is_x86_feature_detected!("avx512f") {
            lacks.push("avx512f");
        }
        if !std::arch::is_x86_feature_detected!("avx512bw") {
            lacks.push("avx512bw");
        }
        if op == Op::U8I8 && !std::arch::is_x86_feature_detected!("avx512vnni") {
            lacks.push("avx512_vnni");
        }
        lacks
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = op;
        vec!["an x86-64 CPU"]
    }
}

/// How the sums of a tile become output bytes (per packed column: [`crate::int8::padded_n`]
/// values).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// s32 sums requantized to u8 ([`crate::int8::requantize`]).
    U8(Requant<'a>),
    /// f32 sums plus `bias`, ReLU, rounded to bf16 (to nearest, ties to even): two bytes a value.
    Bf16 { bias: &'a [f32] },
}

impl<'a> Epilogue<'a> {
    /// The operation whose sums this finishes.
    pub(crate) fn op(&self) -> Op {
        match self {
            Self::U8(_) => Op::U8I8,
            Self::Bf16 { .. } => Op::Bf16,
        }
    }

    /// Bytes of one output value.
    fn elem(&self) -> usize {
        match self {
            Self::U8(_) => 1,
            Self::Bf16 { .. } => 2,
        }
    }

    /// The values of packed columns `cols`.
    pub(crate) fn columns(self, cols: std::ops::Range<usize>) -> Self {
        match self {
            Self::U8(rq) => Self::U8(Requant {
                comp: &rq.comp[cols.clone()],
                mult: &rq.mult[cols.clone()],
                add: &rq.add[cols],
            }),
            Self::Bf16 { bias } => Self::Bf16 { bias: &bias[cols] },
        }
    }

    /// Values per packed column slice (all slices have the same length).
    fn len(&self) -> usize {
        match self {
            Self::U8(rq) => rq.comp.len().min(rq.mult.len()).min(rq.add.len()),
            Self::Bf16 { bias } => bias.len(),
        }
    }
}

/// One conv group's pixels and weights for [`conv`].
#[derive(Debug)]
pub(crate) struct Job<'a> {
    /// The padded input (with the slack the last group's rows read past the end), as bytes.
    pub x: &'a [u8],
    /// Byte offset of each tap from a pixel's first tap.
    pub taps: &'a [usize],
    /// Bytes between the inputs of two consecutive output pixels (stride x channels x value).
    pub stride: usize,
    /// Bytes per chunk: a multiple of 4, at most [`MAX_KC`].
    pub kc: usize,
    /// Chunks per tap.
    pub chunks: usize,
    /// Tile rows: output pixels per group, at most [`MAX_ROWS`].
    pub rows: usize,
    /// The group's packed weights as bytes: [`panels`] of `[taps x chunks x kc / 4][w][4]`.
    pub b: &'a [u8],
    /// Output channels of the group.
    pub n: usize,
    /// How the group's sums are finished (its columns' values).
    pub epi: Epilogue<'a>,
}

/// Output pixels `len` (at most `rows`) of one tile: its rows start at input byte `x` (first
/// tap, first channel of the group), `stride` apart, and row `r` is stored from output byte
/// `y[r]` on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pixels {
    pub x: usize,
    pub y: [usize; MAX_ROWS],
    pub len: usize,
}

/// Runs `job` on `groups` (in pairs) into `y`; `false` (nothing done) on a CPU without the
/// tiles of its operation.
pub(crate) fn conv(job: &Job<'_>, groups: &[Pixels], y: &mut [u8]) -> bool {
    assert!(
        job.kc.is_multiple_of(4) && job.kc > 0 && job.kc <= MAX_KC,
        "chunk of {} bytes",
        job.kc
    );
    assert!(
        job.epi.len() >= crate::int8::padded_n(job.n),
        "epilogue values for {} columns",
        job.n
    );
    assert!(
        job.rows > 0 && job.rows <= MAX_ROWS,
        "{} tile rows",
        job.rows
    );
    let kp = job.taps.len() * job.chunks * job.kc;
    assert!(
        job.b.len() >= kp * crate::int8::padded_n(job.n),
        "packed weights too short"
    );
    #[cfg(target_arch = "x86_64")]
    if available(job.epi.op()) {
        match job.epi.op() {
            // SAFETY: `x86::conv` enables avx512f and avx512bw, which `available` checked
            // (through `has_vnni`) together with AMX-TILE, AMX-INT8 and the OS grant.
            Op::U8I8 => unsafe { x86::conv::<false>(job, groups, y, kp) },
            // SAFETY: `x86::conv` enables avx512f and avx512bw, which `available` checked
            // together with AMX-TILE, AMX-BF16 and the OS grant.
            Op::Bf16 => unsafe { x86::conv::<true>(job, groups, y, kp) },
        }
        return true;
    }
    let _ = (groups, y);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::asm;
    use core::arch::x86_64::*;

    use super::{Epilogue, Job, MAX_ROWS, NR, Pixels, panel_width, panels};

    /// The 64-byte operand of `ldtilecfg`: palette 1, bytes per row and rows of each tile.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    /// Tiles 0-3: accumulators (A tile a, B tile b in tile 2a + b); 4-5: the pixel groups;
    /// 6-7: the weight halves. Released on drop.
    struct Tiles {
        rows: usize,
        kc: usize,
    }

    macro_rules! tile_load {
        ($t:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
                p = in(reg) $ptr, s = in(reg) $stride, options(nostack, readonly))
        };
    }
    macro_rules! tile_store {
        ($t:literal, $ptr:expr, $stride:expr) => {
            asm!(concat!("tilestored [{p} + {s}*1], tmm", $t),
                p = in(reg) $ptr, s = in(reg) $stride, options(nostack))
        };
    }
    macro_rules! dp {
        ($bf16:expr, $c:literal, $a:literal, $b:literal) => {
            if $bf16 {
                asm!(
                    concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b),
                    options(nostack, nomem)
                )
            } else {
                asm!(
                    concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b),
                    options(nostack, nomem)
                )
            }
        };
    }

    impl Tiles {
        fn new(rows: usize, kc: usize) -> Self {
            let mut cfg = Config([0; 64]);
            cfg.0[0] = 1;
            let mut set = |t: usize, rows: usize, colsb: usize| {
                cfg.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&(colsb as u16).to_le_bytes());
                cfg.0[48 + t] = rows as u8;
            };
            for t in 0..4 {
                set(t, rows, 64);
            }
            set(4, rows, kc);
            set(5, rows, kc);
            set(6, kc / 4, 64);
            set(7, kc / 4, 64);
            // SAFETY: a valid palette-1 configuration (rows <= 16, bytes per row <= 64, as
            // `conv` asserted), read from a live 64-byte value; AMX is available (the caller's
            // precondition).
            unsafe { asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
            Self { rows, kc }
        }

        /// Pixel group `t` (0 or 1): `rows` rows of `kc` bytes from `x[at..]`, `stride` apart.
        #[inline(always)]
        fn load_a(&self, t: usize, x: &[u8], at: usize, stride: usize) {
            assert!(
                at + (self.rows - 1) * stride + self.kc <= x.len(),
                "tile read past the input"
            );
            let p = x[at..].as_ptr();
            // SAFETY: the assert above keeps every byte read inside `x`.
            unsafe {
                if t == 0 {
                    tile_load!(4, p, stride);
                } else {
                    tile_load!(5, p, stride);
                }
            }
        }

        /// Weight half `t` (0 or 1): `kc / 4` rows of 64 bytes from `b[at..]`, `stride` apart.
        #[inline(always)]
        fn load_b(&self, t: usize, b: &[u8], at: usize, stride: usize) {
            assert!(
                at + (self.kc / 4 - 1) * stride + 64 <= b.len(),
                "tile read past the weights"
            );
            let p = b[at..].as_ptr();
            // SAFETY: the assert above keeps every byte read inside `b`.
            unsafe {
                if t == 0 {
                    tile_load!(6, p, stride);
                } else {
                    tile_load!(7, p, stride);
                }
            }
        }

        /// Zeroes the accumulators.
        #[inline(always)]
        fn zero(&self) {
            // SAFETY: register-only instructions on configured tiles.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
        }

        /// Accumulates one product into accumulator `t`: group `t / 2` times half `t % 2`
        /// (`tdpbf16ps` when `BF16`, else `tdpbusd`).
        #[inline(always)]
        fn product<const BF16: bool>(&self, t: usize) {
            // SAFETY: register-only instructions on configured tiles, whose shapes match
            // (rows x kc bytes) * (kc / 4 x 64 bytes) -> rows x 64 bytes; the caller checked
            // the CPU's tile feature of the instruction.
            unsafe {
                match t {
                    0 => dp!(BF16, 0, 4, 6),
                    1 => dp!(BF16, 1, 4, 7),
                    2 => dp!(BF16, 2, 5, 6),
                    _ => dp!(BF16, 3, 5, 7),
                }
            }
        }

        /// Stores accumulator `t` into `out` (rows of 16 sums).
        #[inline(always)]
        fn store(&self, t: usize, out: &mut [[i32; 16]; MAX_ROWS]) {
            let p = out.as_mut_ptr();
            // SAFETY: `rows` (at most 16) rows of 64 bytes, 64 apart: inside `out`.
            unsafe {
                match t {
                    0 => tile_store!(0, p, 64usize),
                    1 => tile_store!(1, p, 64usize),
                    2 => tile_store!(2, p, 64usize),
                    _ => tile_store!(3, p, 64usize),
                }
            }
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: releases this thread's tile state; no operands.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// The tile products of `job` (`tdpbf16ps` when `BF16`), finished by its epilogue.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn conv<const BF16: bool>(
        job: &Job<'_>,
        groups: &[Pixels],
        y: &mut [u8],
        kp: usize,
    ) {
        let tiles = Tiles::new(job.rows, job.kc);
        let b = job.b;
        let mut sums = [[[0i32; 16]; MAX_ROWS]; 4];
        // A panel's weights stay in the cache while every pair of pixel groups reads them.
        let mut col0 = 0;
        for p in 0..panels(job.n) {
            let w = panel_width(job.n, p);
            let cols = w.min(job.n - p * NR);
            let nb = cols.div_ceil(16);
            let panel = &b[col0 * kp..(col0 + w) * kp];
            for pair in groups.chunks(2) {
                let na = pair.len();
                tiles.zero();
                let mut k4 = 0;
                for &tap in job.taps {
                    for c in 0..job.chunks {
                        let a_at = |i: usize| pair[i].x + tap + c * job.kc;
                        let b_at = |h: usize| k4 * w * 4 + h * 64;
                        if na == 2 && nb == 2 {
                            // Tiles are not renamed: a load waits for the products reading
                            // the tile before. Each load here follows a product that does not
                            // read what it replaces, so loads overlap the products.
                            tiles.load_b(0, panel, b_at(0), w * 4);
                            tiles.load_a(0, job.x, a_at(0), job.stride);
                            tiles.product::<BF16>(0);
                            tiles.load_b(1, panel, b_at(1), w * 4);
                            tiles.product::<BF16>(1);
                            tiles.load_a(1, job.x, a_at(1), job.stride);
                            tiles.product::<BF16>(2);
                            tiles.product::<BF16>(3);
                        } else {
                            for i in 0..na {
                                tiles.load_a(i, job.x, a_at(i), job.stride);
                            }
                            for h in 0..nb {
                                tiles.load_b(h, panel, b_at(h), w * 4);
                            }
                            for i in 0..na {
                                for h in 0..nb {
                                    tiles.product::<BF16>(2 * i + h);
                                }
                            }
                        }
                        k4 += job.kc / 4;
                    }
                }
                for i in 0..na {
                    for h in 0..nb {
                        tiles.store(2 * i + h, &mut sums[2 * i + h]);
                    }
                }
                for (i, g) in pair.iter().enumerate() {
                    for h in 0..nb {
                        let c0 = h * 16;
                        let n = (cols - c0).min(16);
                        let rows = sums[2 * i + h].iter().zip(&g.y).take(g.len);
                        let out = |r: &usize| r + (p * NR + c0) * job.epi.elem();
                        match job.epi {
                            Epilogue::U8(rq) => {
                                let at = col0 + c0;
                                let v = |s: &[f32]| -> __m512 {
                                    bytemuck::pod_read_unaligned(bytemuck::cast_slice(
                                        &s[at..at + 16],
                                    ))
                                };
                                let comp: __m512i = bytemuck::pod_read_unaligned(
                                    bytemuck::cast_slice(&rq.comp[at..at + 16]),
                                );
                                let (mult, add) = (v(rq.mult), v(rq.add));
                                for (row, r) in rows {
                                    let acc: __m512i = bytemuck::cast(*row);
                                    let z = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, comp));
                                    let z = _mm512_fmadd_ps(z, mult, add);
                                    let z = _mm512_min_ps(
                                        _mm512_max_ps(z, _mm512_setzero_ps()),
                                        _mm512_set1_ps(255.0),
                                    );
                                    let q: [u8; 16] =
                                        bytemuck::cast(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(z)));
                                    let o = out(r);
                                    if n == 16 {
                                        y[o..o + 16].copy_from_slice(&q);
                                    } else {
                                        y[o..o + n].copy_from_slice(&q[..n]);
                                    }
                                }
                            }
                            Epilogue::Bf16 { bias } => {
                                let at = col0 + c0;
                                let bias: __m512 = bytemuck::pod_read_unaligned(
                                    bytemuck::cast_slice(&bias[at..at + 16]),
                                );
                                for (row, r) in rows {
                                    let acc: __m512 = bytemuck::cast(*row);
                                    let z = _mm512_max_ps(
                                        _mm512_add_ps(acc, bias),
                                        _mm512_setzero_ps(),
                                    );
                                    let q: [u8; 32] = bytemuck::cast(bf16_round(z));
                                    let o = out(r);
                                    if n == 16 {
                                        y[o..o + 32].copy_from_slice(&q);
                                    } else {
                                        y[o..o + 2 * n].copy_from_slice(&q[..2 * n]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            col0 += w;
        }
        drop(tiles);
    }

    /// `z`'s 16 values (finite or infinite, not NaN) rounded to bf16, to nearest with ties to
    /// even: the scalar [`crate::bf16::to_bf16`]'s integer formula.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn bf16_round(z: __m512) -> [u16; 16] {
        let bits = _mm512_castps_si512(z);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let up = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
        bytemuck::cast(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(up)))
    }
}
