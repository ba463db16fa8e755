//! The crate's second `unsafe` module: the int8 convolution on Intel AMX tiles (`tdpbusd`),
//! written as inline assembly because the AMX intrinsics are not stable Rust.
//!
//! An implicit GEMM: the rows of a tile are consecutive output pixels of one output row, read
//! straight from an input stored with its padding (`[n][h + 2p][w + 2p][c]`, the border holding
//! the zero point), so that one tap's channels of those pixels are rows `stride x c` bytes
//! apart — one `tileloadd`, no gathered copy. The sum runs over taps, then chunks of at most 64
//! channels; the weights are the GEMM's packed panels (`[k / 4][w][4]`, the layout `tdpbusd`
//! reads as its second operand, 16 columns a tile). Two pixel groups (A tiles) times two
//! 16-column halves of a panel (B tiles) fill four accumulator tiles; the sums are stored and
//! requantized with AVX-512 exactly as the other kernels do.
//!
//! Why the `unsafe` is sound:
//! * The functions compiled for AVX-512 are entered only after [`available`] saw AVX-512 F/BW
//!   and the AMX tile and int8 features on this CPU, and Linux granted this process the tile
//!   state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); without that grant the tile instructions fault.
//! * Every tile load and store touches `rows` rows of `colsb` bytes, `stride` apart, from a
//!   pointer into a slice: [`Tiles`] asserts that the last byte is inside the slice before each
//!   such instruction (a few integer compares per 16 x 16 x 64 product).
//! * The tile configuration is loaded by [`Tiles::new`] on the calling thread and released when
//!   the value drops, and nothing in between runs other code on that thread (no rayon calls
//!   inside), so the tiles hold what this module put there.
//!
//! The tests (`int8::conv`) run this path against the integer oracle whenever the CPU has it.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use crate::int8::gemm::{NR, Requant, panel_width, panels};

/// The largest sum chunk of one tile product: a tile row holds 64 bytes.
pub(crate) const MAX_KC: usize = 64;
/// The most rows (output pixels) of a tile.
pub(crate) const MAX_ROWS: usize = 16;

/// Whether this CPU runs the AMX path and this process may use the tiles (asked of the OS once).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use core::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // CPUID is an instruction of every x86_64 CPU.
    let (max, _) = __get_cpuid_max(0);
    if max < 7 {
        return false;
    }
    let leaf = __cpuid_count(7, 0);
    let (tile, int8) = (leaf.edx >> 24 & 1 == 1, leaf.edx >> 25 & 1 == 1);
    if !(tile && int8 && super::simd::has_vnni()) {
        return false;
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
    rc == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// One conv group's pixels and weights for [`conv`].
#[derive(Debug)]
pub(crate) struct Job<'a> {
    /// The padded input (with the slack the last group's rows read past the end).
    pub x: &'a [u8],
    /// Byte offset of each tap from a pixel's first tap.
    pub taps: &'a [usize],
    /// Bytes between the inputs of two consecutive output pixels (stride x channels).
    pub stride: usize,
    /// Channels per chunk: a multiple of 4, at most [`MAX_KC`].
    pub kc: usize,
    /// Chunks per tap.
    pub chunks: usize,
    /// Tile rows: output pixels per group, at most [`MAX_ROWS`].
    pub rows: usize,
    /// The group's packed weights: [`panels`] of `[taps x chunks x kc / 4][w][4]`.
    pub b: &'a [i8],
    /// Output channels of the group.
    pub n: usize,
    /// The group's requantization ([`crate::int8::padded_n`] values each).
    pub rq: Requant<'a>,
}

/// Output pixels `len` (at most `rows`) of one tile: its rows start at input byte `x` (first
/// tap, first channel of the group), `stride` apart, and row `r` is stored at output byte
/// `y[r]` on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pixels {
    pub x: usize,
    pub y: [usize; MAX_ROWS],
    pub len: usize,
}

/// Runs `job` on `groups` (in pairs) into `y`; `false` (nothing done) without AMX.
pub(crate) fn conv(job: &Job<'_>, groups: &[Pixels], y: &mut [u8]) -> bool {
    assert!(
        job.kc.is_multiple_of(4) && job.kc > 0 && job.kc <= MAX_KC,
        "chunk of {} bytes",
        job.kc
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
    if available() {
        // SAFETY: `x86::conv` enables avx512f and avx512bw, which `available` checked (through
        // `has_vnni`) together with the AMX features and the OS grant it uses.
        unsafe { x86::conv(job, groups, y, kp) };
        return true;
    }
    let _ = (groups, y);
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::asm;
    use core::arch::x86_64::*;

    use super::{Job, MAX_ROWS, NR, Pixels, panel_width, panels};

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
        ($c:literal, $a:literal, $b:literal) => {
            asm!(
                concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b),
                options(nostack, nomem)
            )
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

        /// Accumulates one product into accumulator `t`: group `t / 2` times half `t % 2`.
        #[inline(always)]
        fn product(&self, t: usize) {
            // SAFETY: register-only instructions on configured tiles, whose shapes match
            // (rows x kc) * (kc / 4 x 64) -> rows x 64.
            unsafe {
                match t {
                    0 => dp!(0, 4, 6),
                    1 => dp!(1, 4, 7),
                    2 => dp!(2, 5, 6),
                    _ => dp!(3, 5, 7),
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

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn conv(job: &Job<'_>, groups: &[Pixels], y: &mut [u8], kp: usize) {
        let tiles = Tiles::new(job.rows, job.kc);
        let b: &[u8] = bytemuck::cast_slice(job.b);
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
                            tiles.product(0);
                            tiles.load_b(1, panel, b_at(1), w * 4);
                            tiles.product(1);
                            tiles.load_a(1, job.x, a_at(1), job.stride);
                            tiles.product(2);
                            tiles.product(3);
                        } else {
                            for i in 0..na {
                                tiles.load_a(i, job.x, a_at(i), job.stride);
                            }
                            for h in 0..nb {
                                tiles.load_b(h, panel, b_at(h), w * 4);
                            }
                            for i in 0..na {
                                for h in 0..nb {
                                    tiles.product(2 * i + h);
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
                        let at = col0 + c0;
                        let comp: __m512i = bytemuck::pod_read_unaligned(bytemuck::cast_slice(
                            &job.rq.comp[at..at + 16],
                        ));
                        let mult: __m512 = bytemuck::pod_read_unaligned(bytemuck::cast_slice(
                            &job.rq.mult[at..at + 16],
                        ));
                        let add: __m512 = bytemuck::pod_read_unaligned(bytemuck::cast_slice(
                            &job.rq.add[at..at + 16],
                        ));
                        for (r, row) in sums[2 * i + h].iter().enumerate().take(g.len) {
                            let acc: __m512i = bytemuck::cast(*row);
                            let z = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, comp));
                            let z = _mm512_fmadd_ps(z, mult, add);
                            let z = _mm512_min_ps(
                                _mm512_max_ps(z, _mm512_setzero_ps()),
                                _mm512_set1_ps(255.0),
                            );
                            let q: [u8; 16] =
                                bytemuck::cast(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(z)));
                            let o = g.y[r] + p * NR + c0;
                            if n == 16 {
                                y[o..o + 16].copy_from_slice(&q);
                            } else {
                                y[o..o + n].copy_from_slice(&q[..n]);
                            }
                        }
                    }
                }
            }
            col0 += w;
        }
        drop(tiles);
    }
}
