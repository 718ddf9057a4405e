//! The CPU fast path for decode-sized products: `y = x·W (+ b)` for at most [`MAX_ROWS`] rows of
//! `x`, read straight from the weights' storage on the flex backend.
//!
//! Decoding multiplies one row per sequence by every weight matrix, so a decode step is a stream
//! over all the weights (2 GB for the 0.5B model in f32) and its speed is the speed of that
//! stream. burn's generic matmul runs a one-row product on one thread and, for bf16, widens the
//! whole weight matrix to f32 on every call (3× slower than f32, measured). Here every weight is
//! read once, in its own width (f32, f16 or bf16), widened in registers and accumulated in f32, on
//! all of rayon's threads.
//!
//! This is the one module of the workspace with `unsafe` code: the AVX2/FMA/F16C kernels
//! ([`simd`]). Everything else here is safe. The portable kernels in this file are the slow twin
//! the SIMD kernels are tested against, and `project`'s tests compare the whole path with burn's
//! generic one. CUDA and wgpu never come here: [`matmul_rows`] declines any tensor that is not a
//! plain flex tensor (autodiff-tracked tensors included), and callers then take burn's path.
//!
//! The weights are read from the live parameter handles on every call, so an optimiser step is
//! seen by the next decode step without any cache to invalidate.

use burn::tensor::Tensor;
use half::{bf16, f16};

/// Inputs with more rows than this (`batch × seq`: prefill, training) take burn's matmul, whose
/// packed GEMM is faster once rows are many.
pub const MAX_ROWS: usize = 8;

/// A weight matrix borrowed from a tensor's storage, in its stored width.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats.
    F16(&'a [f16]),
    /// bfloat16.
    Bf16(&'a [bf16]),
}

/// How the logical `[k, n]` matrix `W` of `y = x·W` sits in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Row-major `[k, n]`: burn's `[in, out]` Linear weight. Computed as `y += x[i]·W[i, :]`.
    KN,
    /// Row-major `[n, k]` (`W` transposed): the tied head's embedding `[vocab, hidden]`.
    /// Computed as `y[j] = W[j, :]·x`.
    NK,
}

/// A weight element the kernels can widen to f32.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    /// The value as f32 (exact for all three types).
    fn widen(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: widening is a shift, exact.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

/// Which kernels run: the SIMD ones when the CPU has them (checked once), else the portable
/// ones. Tests pick one explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Plain Rust loops: any CPU, and the twin the SIMD kernels are tested against.
    Portable,
    /// AVX2 + FMA + F16C (x86-64).
    Simd,
}

impl Kernels {
    /// The fastest kernels this CPU runs.
    pub fn detect() -> Self {
        if simd::available() {
            Self::Simd
        } else {
            Self::Portable
        }
    }
}

/// Row-major `[k, n]` weights at most this wide are split between threads by rows (each thread
/// streams one contiguous block of whole rows and the partial products are summed); wider ones
/// (the untied head) by columns.
const ROW_SPLIT_MAX_N: usize = 16_384;

impl Weights<'_> {
    /// Entries stored.
    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) => w.len(),
            Weights::Bf16(w) => w.len(),
        }
    }

    /// The entries in `range` (of the storage order).
    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Weights::F32(w) => Weights::F32(&w[range]),
            Weights::F16(w) => Weights::F16(&w[range]),
            Weights::Bf16(w) => Weights::Bf16(&w[range]),
        }
    }
}

/// `y = x·W` with `x: [rows, k]` (f32, row-major) and `W` a logical `[k, n]` matrix laid out as
/// `layout` says; returns `[rows, n]` in f32. The work is split between rayon's threads so that
/// each streams one contiguous stretch of `W`: blocks of whole rows for row-major `[k, n]`
/// weights up to [`ROW_SPLIT_MAX_N`] wide (partial products summed), column ranges otherwise.
///
/// # Panics
/// When `rows` is 0 or above [`MAX_ROWS`], or the slices' lengths disagree with the shapes
/// (callers check both; a violated length would otherwise be an out-of-bounds read).
pub fn matmul_rows(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    layout: Layout,
    [k, n]: [usize; 2],
) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "rows {rows} not in 1..={MAX_ROWS}"
    );
    assert_eq!(x.len(), rows * k, "x is not [rows, k]");
    assert_eq!(weights.len(), k * n, "weights are not [k, n]");
    let threads = rayon::current_num_threads().max(1);
    let part = |x: &[f32], weights: Weights<'_>, k: usize, cols| match weights {
        Weights::F32(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
        Weights::F16(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
        Weights::Bf16(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
    };
    if layout == Layout::KN && n <= ROW_SPLIT_MAX_N && threads > 1 && k >= 8 * threads {
        // One block of whole rows per thread, a multiple of 4 rows (the kernel's streams).
        let block = k.div_ceil(threads).next_multiple_of(4);
        let blocks: Vec<(usize, usize)> = (0..k)
            .step_by(block)
            .map(|start| (start, (start + block).min(k)))
            .collect();
        let parts: Vec<Vec<f32>> = blocks
            .par_iter()
            .map(|&(k0, k1)| {
                let xb: Vec<f32> = (0..rows)
                    .flat_map(|r| x[r * k + k0..r * k + k1].iter().copied())
                    .collect();
                part(&xb, weights.slice(k0 * n..k1 * n), k1 - k0, 0..n)
            })
            .collect();
        let mut parts = parts.into_iter();
        let mut y = parts.next().unwrap_or_else(|| vec![0.0; rows * n]);
        for p in parts {
            y.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
        return y;
    }
    // One column range per thread, a multiple of 16 wide (a SIMD tile) except the last.
    let width = n.div_ceil(threads).next_multiple_of(16).max(16);
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(width)
        .map(|start| (start, (start + width).min(n)))
        .collect();
    let parts: Vec<Vec<f32>> = ranges
        .par_iter()
        .map(|&(c0, c1)| part(x, weights, k, c0..c1))
        .collect();
    let mut y = vec![0.0f32; rows * n];
    for (&(c0, c1), part) in ranges.iter().zip(&parts) {
        let width = c1 - c0;
        for r in 0..rows {
            y[r * n + c0..r * n + c1].copy_from_slice(&part[r * width..(r + 1) * width]);
        }
    }
    y
}

/// Columns `cols` of `x·W`, as `[rows, cols.len()]`.
fn columns<E: Elem>(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    w: &[E],
    layout: Layout,
    [k, n]: [usize; 2],
    cols: std::ops::Range<usize>,
) -> Vec<f32> {
    let width = cols.len();
    let mut out = vec![0.0f32; rows * width];
    match layout {
        Layout::KN => {
            // Column tiles whose accumulators (rows × tile f32) stay in L1 while the k rows of
            // the tile stream past.
            let tile = (8192 / rows).next_multiple_of(16);
            let mut acc = vec![0.0f32; rows * tile];
            let mut start = cols.start;
            while start < cols.end {
                let t = tile.min(cols.end - start);
                let acc = &mut acc[..rows * t];
                acc.fill(0.0);
                match kernels {
                    Kernels::Simd => simd::kn_tile(x, rows, k, w, n, start, t, acc),
                    Kernels::Portable => kn_tile(x, rows, k, w, n, start, t, acc),
                }
                let at = start - cols.start;
                for r in 0..rows {
                    out[r * width + at..r * width + at + t]
                        .copy_from_slice(&acc[r * t..(r + 1) * t]);
                }
                start += t;
            }
        }
        Layout::NK => match kernels {
            Kernels::Simd => simd::nk_rows(x, rows, k, w, cols, &mut out),
            Kernels::Portable => nk_rows(x, rows, k, w, cols, &mut out),
        },
    }
    out
}

/// Portable `acc[r, j] += Σ_i x[r, i]·W[i, c0 + j]` for `j < t`, `W` row-major `[k, n]`.
#[allow(clippy::too_many_arguments)]
fn kn_tile<E: Elem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[E],
    n: usize,
    c0: usize,
    t: usize,
    acc: &mut [f32],
) {
    for i in 0..k {
        let wrow = &w[i * n + c0..i * n + c0 + t];
        for r in 0..rows {
            let xi = x[r * k + i];
            for (a, &wv) in acc[r * t..(r + 1) * t].iter_mut().zip(wrow) {
                *a = wv.widen().mul_add(xi, *a);
            }
        }
    }
}

/// Portable `out[r, j - cols.start] = W[j, :]·x[r, :]` for `j` in `cols`, `W` row-major
/// `[n, k]`.
fn nk_rows<E: Elem>(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[E],
    cols: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let width = cols.len();
    for (at, j) in cols.enumerate() {
        let wrow = &w[j * k..(j + 1) * k];
        for r in 0..rows {
            let xr = &x[r * k..(r + 1) * k];
            out[r * width + at] = wrow
                .iter()
                .zip(xr)
                .fold(0.0f32, |s, (&wv, &xv)| wv.widen().mul_add(xv, s));
        }
    }
}

/// `linear(x)` for a decode-sized `x: [batch, seq, k]` on the flex backend, `weight: [k, n]`
/// (burn's layout) or, with `layout = NK`, `[n, k]` (a tied embedding); `None` when the fast
/// path does not apply (another backend, autodiff, f64, too many rows, a strided weight), in
/// which case the caller runs burn's op. The result has `x`'s dtype.
pub(crate) fn project(
    x: &Tensor<3>,
    weight: &Tensor<2>,
    layout: Layout,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<3>> {
    flex::project(Kernels::detect(), x, weight, layout, bias)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::{DType, Tensor, TensorData};
    use burn_flex::{Flex, FlexTensor};
    use half::{bf16, f16};

    use super::{Kernels, Layout, MAX_ROWS, Weights, matmul_rows};

    /// The flex primitive behind `t`, or `None` on another backend or under autodiff.
    fn primitive<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
        if t.is_autodiff() {
            return None;
        }
        t.clone().try_into_primitive::<Flex>().ok()
    }

    /// The contiguous storage of a flex tensor, in its stored width.
    fn storage(t: &FlexTensor) -> Option<Weights<'_>> {
        let (start, end) = t.layout().contiguous_offsets()?;
        Some(match t.dtype() {
            DType::F32 => Weights::F32(&t.storage::<f32>()[start..end]),
            DType::F16 => Weights::F16(&t.storage::<f16>()[start..end]),
            DType::BF16 => Weights::Bf16(&t.storage::<bf16>()[start..end]),
            _ => return None,
        })
    }

    pub(super) fn project(
        kernels: Kernels,
        x: &Tensor<3>,
        weight: &Tensor<2>,
        layout: Layout,
        bias: Option<&Tensor<1>>,
    ) -> Option<Tensor<3>> {
        let [batch, seq, k] = x.dims();
        let rows = batch * seq;
        if rows == 0 || rows > MAX_ROWS {
            return None;
        }
        let w = primitive(weight)?;
        let n = match (layout, w.layout().shape().as_slice()) {
            (Layout::KN, &[wk, n]) if wk == k => n,
            (Layout::NK, &[n, wk]) if wk == k => n,
            _ => return None,
        };
        let weights = storage(&w)?;
        let dtype = x.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return None;
        }
        let xp = primitive(x)?;
        let host = xp.into_data().convert::<f32>().try_into_vec::<f32>().ok()?;
        let mut y = matmul_rows(kernels, &host, rows, weights, layout, [k, n]);
        if let Some(bias) = bias {
            let b = primitive(bias)?;
            let b = b.into_data().convert::<f32>().try_into_vec::<f32>().ok()?;
            if b.len() != n {
                return None;
            }
            for row in y.chunks_exact_mut(n) {
                row.iter_mut().zip(&b).for_each(|(v, b)| *v += b);
            }
        }
        let device = x.device();
        Some(Tensor::from_data(
            TensorData::new(y, [batch, seq, n]),
            (&device, dtype),
        ))
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::tensor::Tensor;

    use super::{Kernels, Layout};

    /// Without the flex backend there is no CPU tensor to read: always burn's path.
    pub(super) fn project(
        _: Kernels,
        _: &Tensor<3>,
        _: &Tensor<2>,
        _: Layout,
        _: Option<&Tensor<1>>,
    ) -> Option<Tensor<3>> {
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    //! AVX2 + FMA + F16C versions of [`super::kn_tile`] and [`super::nk_rows`], same loops,
    //! eight lanes at a time. Entered only through the safe wrappers below, which check the
    //! CPU's features (once) and every slice bound the raw-pointer loops rely on.

    use std::arch::x86_64::*;
    use std::ops::Range;
    use std::sync::OnceLock;

    use half::{bf16, f16};

    use super::Elem;

    /// Whether this CPU has AVX2, FMA and F16C (checked once).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    /// Eight consecutive elements widened to f32 lanes.
    trait Lanes: Elem {
        /// # Safety
        /// `p..p + 8` must be readable, and the CPU must have AVX2 and F16C.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Lanes for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable floats; loadu has no alignment need.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Lanes for f16 {
        #[inline(always)]
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: 8 readable halves = 16 bytes; F16C checked by the caller.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
    }

    impl Lanes for bf16 {
        #[inline(always)]
        unsafe fn load8(p: *const bf16) -> __m256 {
            // SAFETY: 8 readable bf16 = 16 bytes; AVX2 checked by the caller. Zero-extending
            // each 16-bit value and shifting it to the top half is the exact widening.
            unsafe {
                let raw = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw))
            }
        }
    }

    /// Dispatches the element type to its [`Lanes`] kernel (the three types are the only
    /// [`Elem`]s).
    fn as_lanes<E: Elem, F: Elem>(w: &[E]) -> Option<&[F]> {
        (std::any::TypeId::of::<E>() == std::any::TypeId::of::<F>()).then(|| {
            // SAFETY: E and F are the same type (checked just above), so the slice is
            // reinterpreted as itself.
            unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<F>(), w.len()) }
        })
    }

    /// See [`super::kn_tile`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn kn_tile<E: Elem>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        assert!(available(), "AVX2/FMA/F16C kernels on a CPU without them");
        assert!(x.len() >= rows * k && acc.len() >= rows * t && c0 + t <= n);
        assert!(w.len() >= k * n, "weights shorter than [k, n]");
        if let Some(w) = as_lanes::<E, f32>(w) {
            // SAFETY: features checked and bounds asserted above.
            unsafe { kn_tile_rows(x, rows, k, w, n, c0, t, acc) }
        } else if let Some(w) = as_lanes::<E, f16>(w) {
            // SAFETY: as above.
            unsafe { kn_tile_rows(x, rows, k, w, n, c0, t, acc) }
        } else if let Some(w) = as_lanes::<E, bf16>(w) {
            // SAFETY: as above.
            unsafe { kn_tile_rows(x, rows, k, w, n, c0, t, acc) }
        } else {
            super::kn_tile(x, rows, k, w, n, c0, t, acc)
        }
    }

    /// See [`super::nk_rows`].
    pub(super) fn nk_rows<E: Elem>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        assert!(available(), "AVX2/FMA/F16C kernels on a CPU without them");
        assert!(x.len() >= rows * k && out.len() >= rows * cols.len());
        assert!(w.len() >= cols.end * k, "weights shorter than [n, k]");
        if let Some(w) = as_lanes::<E, f32>(w) {
            // SAFETY: features checked and bounds asserted above.
            unsafe { nk_rows_streams(x, rows, k, w, cols, out) }
        } else if let Some(w) = as_lanes::<E, f16>(w) {
            // SAFETY: as above.
            unsafe { nk_rows_streams(x, rows, k, w, cols, out) }
        } else if let Some(w) = as_lanes::<E, bf16>(w) {
            // SAFETY: as above.
            unsafe { nk_rows_streams(x, rows, k, w, cols, out) }
        } else {
            super::nk_rows(x, rows, k, w, cols, out)
        }
    }

    /// How far ahead of the current read each stream prefetches, in bytes.
    const PREFETCH: usize = 4096;

    /// Asks for the cache line `bytes` after `p` (a hint: it never faults, even out of bounds).
    #[inline(always)]
    fn prefetch<E>(p: *const E, bytes: usize) {
        // SAFETY: a prefetch is a hint and never dereferences; wrapping_add keeps the pointer
        // arithmetic defined even past the end of the allocation.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(bytes)) }
    }

    /// Four rows of `W` a quarter of `k` apart at a time, eight columns at a time; each widened
    /// weight vector is used for every row of `x`.
    ///
    /// Four far-apart rows are four independent memory streams, each prefetched [`PREFETCH`]
    /// bytes ahead (continuing into its next row's segment at the end of a segment): one
    /// sequential stream per core reaches about 16 GB/s on the 2-core dev VM, four prefetched
    /// ones about 38 (measured with a C read loop, `scripts` has none: see #14's note).
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `x: [rows, k]`, `acc: [rows, t]`, `w: [k, n]` with `c0 + t ≤ n`.
    /// [`kn_tile_avx2`] with the row count as a constant, so that the broadcasts of `x` leave
    /// the inner loop and the row loop unrolls.
    ///
    /// # Safety
    /// As [`kn_tile_avx2`]'s.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kn_tile_rows<E: Lanes>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match rows {
                1 => kn_tile_one_avx2::<E>(x, k, w, n, c0, t, acc),
                2 => kn_tile_avx2::<E, 2>(x, k, w, n, c0, t, acc),
                3 => kn_tile_avx2::<E, 3>(x, k, w, n, c0, t, acc),
                4 => kn_tile_avx2::<E, 4>(x, k, w, n, c0, t, acc),
                5 => kn_tile_avx2::<E, 5>(x, k, w, n, c0, t, acc),
                6 => kn_tile_avx2::<E, 6>(x, k, w, n, c0, t, acc),
                7 => kn_tile_avx2::<E, 7>(x, k, w, n, c0, t, acc),
                _ => kn_tile_avx2::<E, 8>(x, k, w, n, c0, t, acc),
            }
        }
    }

    /// [`kn_tile_avx2`] for one row of `x` (batch-1 decoding, the memory-bound case): eight
    /// rows of `W` an eighth of `k` apart at a time (eight prefetched streams), sixteen columns
    /// at a time, each stream's two vectors used once and dropped so that the eight broadcasts
    /// of `x` and two accumulators fit the sixteen registers.
    ///
    /// # Safety
    /// As [`kn_tile_avx2`]'s with one row.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kn_tile_one_avx2<E: Lanes>(
        x: &[f32],
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        const S: usize = 8;
        let t16 = t / 16 * 16;
        let q = k / S;
        let size = std::mem::size_of::<E>();
        let gap = (n - t) * size;
        let xp = x.as_ptr();
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): rows of W are i + s·q < S·q ≤ k (then S·q..k one by one) at
        // columns c0 + j + 0..16 ≤ c0 + t ≤ n; x at a row index < k; acc at j + 0..16 ≤ t.
        // Prefetches only hint and may point anywhere.
        unsafe {
            for i in 0..q {
                let rows: [usize; S] = std::array::from_fn(|s| i + s * q);
                let ws = rows.map(|row| wp.add(row * n + c0));
                let xb = rows.map(|row| _mm256_broadcast_ss(&*xp.add(row)));
                let mut j = 0;
                while j < t16 {
                    let ahead = j * size + PREFETCH;
                    let ahead = if ahead < t * size { ahead } else { ahead + gap };
                    let a = ap.add(j);
                    let mut s0 = _mm256_loadu_ps(a);
                    let mut s1 = _mm256_loadu_ps(a.add(8));
                    for s in 0..S {
                        prefetch(ws[s], ahead);
                        s0 = _mm256_fmadd_ps(E::load8(ws[s].add(j)), xb[s], s0);
                        s1 = _mm256_fmadd_ps(E::load8(ws[s].add(j + 8)), xb[s], s1);
                    }
                    _mm256_storeu_ps(a, s0);
                    _mm256_storeu_ps(a.add(8), s1);
                    j += 16;
                }
                for j in t16..t {
                    let a = &mut *ap.add(j);
                    for (&row, wq) in rows.iter().zip(ws) {
                        *a = (*wq.add(j)).widen().mul_add(*xp.add(row), *a);
                    }
                }
            }
            for i in S * q..k {
                let w0 = wp.add(i * n + c0);
                let xi = *xp.add(i);
                for j in 0..t {
                    let a = &mut *ap.add(j);
                    *a = (*w0.add(j)).widen().mul_add(xi, *a);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kn_tile_avx2<E: Lanes, const R: usize>(
        x: &[f32],
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        let t16 = t / 16 * 16;
        let q = k / 4;
        let size = std::mem::size_of::<E>();
        // Bytes to skip from the end of a segment to the same column of the next row.
        let gap = (n - t) * size;
        let xp = x.as_ptr();
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): every dereferenced pointer stays inside the bounds the caller
        // guarantees: rows of W are i, i+q, i+2q, i+3q < 4q ≤ k (then 4q..k one by one) at
        // columns c0 + j + 0..16 ≤ c0 + t ≤ n; x at r·k + row < R·k; acc at r·t + j + 0..16
        // ≤ R·t. Prefetches only hint and may point anywhere.
        unsafe {
            for i in 0..q {
                let rows4 = [i, i + q, i + 2 * q, i + 3 * q];
                let ws = rows4.map(|row| wp.add(row * n + c0));
                let xb: [[__m256; 4]; R] = std::array::from_fn(|r| {
                    rows4.map(|row| _mm256_broadcast_ss(&*xp.add(r * k + row)))
                });
                let mut j = 0;
                while j < t16 {
                    let ahead = j * size + PREFETCH;
                    let ahead = if ahead < t * size { ahead } else { ahead + gap };
                    for p in ws {
                        prefetch(p, ahead);
                    }
                    let lo = ws.map(|p| E::load8(p.add(j)));
                    let hi = ws.map(|p| E::load8(p.add(j + 8)));
                    for (r, xb) in xb.iter().enumerate() {
                        let a = ap.add(r * t + j);
                        let mut s0 = _mm256_loadu_ps(a);
                        let mut s1 = _mm256_loadu_ps(a.add(8));
                        for q in 0..4 {
                            s0 = _mm256_fmadd_ps(lo[q], xb[q], s0);
                            s1 = _mm256_fmadd_ps(hi[q], xb[q], s1);
                        }
                        _mm256_storeu_ps(a, s0);
                        _mm256_storeu_ps(a.add(8), s1);
                    }
                    j += 16;
                }
                for j in t16..t {
                    for r in 0..R {
                        let a = &mut *ap.add(r * t + j);
                        for (&row, wq) in rows4.iter().zip(ws) {
                            *a = (*wq.add(j)).widen().mul_add(*xp.add(r * k + row), *a);
                        }
                    }
                }
            }
            for i in 4 * q..k {
                let w0 = wp.add(i * n + c0);
                for r in 0..R {
                    let xi = *xp.add(r * k + i);
                    for j in 0..t {
                        let a = &mut *ap.add(r * t + j);
                        *a = (*w0.add(j)).widen().mul_add(xi, *a);
                    }
                }
            }
        }
    }

    /// [`nk_rows_avx2`] with the row count as a constant and as many streams as the
    /// accumulators (`rows × streams ≤ 8` registers) allow: four streams for one or two rows,
    /// two for three or four, one above (where the FMAs, not the memory, set the pace).
    ///
    /// # Safety
    /// As [`nk_rows_avx2`]'s.
    unsafe fn nk_rows_streams<E: Lanes>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match rows {
                1 => nk_rows_avx2::<E, 1, 4>(x, k, w, cols, out),
                2 => nk_rows_avx2::<E, 2, 4>(x, k, w, cols, out),
                3 => nk_rows_avx2::<E, 3, 2>(x, k, w, cols, out),
                4 => nk_rows_avx2::<E, 4, 2>(x, k, w, cols, out),
                5 => nk_rows_avx2::<E, 5, 1>(x, k, w, cols, out),
                6 => nk_rows_avx2::<E, 6, 1>(x, k, w, cols, out),
                7 => nk_rows_avx2::<E, 7, 1>(x, k, w, cols, out),
                _ => nk_rows_avx2::<E, 8, 1>(x, k, w, cols, out),
            }
        }
    }

    /// `S` outputs `cols.len() / S` apart at a time (`S` memory streams, each prefetched one
    /// row of `W` ahead), each a row of `W` dotted with the `R` rows of `x` in f32 lanes, then
    /// summed across lanes.
    ///
    /// # Safety
    /// AVX2/FMA/F16C present; `x: [R, k]`, `w: [n, k]` with `cols.end ≤ n`,
    /// `out: [R, cols.len()]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nk_rows_avx2<E: Lanes, const R: usize, const S: usize>(
        x: &[f32],
        k: usize,
        w: &[E],
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        let width = cols.len();
        let q = width / S;
        let k8 = k / 8 * 8;
        let row_bytes = k * std::mem::size_of::<E>();
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): W rows cols.start + at < cols.end ≤ n are read at
        // row·k + 0..k; x rows r < R at r·k + 0..k; out at r·width + at < R·width.
        // Prefetches only hint.
        unsafe {
            for at in 0..q {
                let ats: [usize; S] = std::array::from_fn(|s| at + s * q);
                let wr = ats.map(|a| wp.add((cols.start + a) * k));
                let mut acc = [[_mm256_setzero_ps(); S]; R];
                let mut i = 0;
                while i < k8 {
                    let v = wr.map(|p| {
                        prefetch(p.add(i), row_bytes);
                        E::load8(p.add(i))
                    });
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_ps(xp.add(r * k + i));
                        for s in 0..S {
                            a[s] = _mm256_fmadd_ps(v[s], xv, a[s]);
                        }
                    }
                    i += 8;
                }
                for (r, a) in acc.iter().enumerate() {
                    for s in 0..S {
                        let mut sum = hsum(a[s]);
                        for i in k8..k {
                            sum = (*wr[s].add(i)).widen().mul_add(*xp.add(r * k + i), sum);
                        }
                        *out.get_unchecked_mut(r * width + ats[s]) = sum;
                    }
                }
            }
            // The tail after the streams, one output at a time.
            for at in S * q..width {
                let wr = wp.add((cols.start + at) * k);
                for r in 0..R {
                    let xr = xp.add(r * k);
                    let mut s = 0.0f32;
                    for i in 0..k {
                        s = (*wr.add(i)).widen().mul_add(*xr.add(i), s);
                    }
                    *out.get_unchecked_mut(r * width + at) = s;
                }
            }
        }
    }

    /// The sum of the eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    //! No SIMD kernels off x86-64: [`super::Kernels::detect`] picks the portable ones.
    use std::ops::Range;

    use super::Elem;

    pub(super) fn available() -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn kn_tile<E: Elem>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        super::kn_tile(x, rows, k, w, n, c0, t, acc)
    }

    pub(super) fn nk_rows<E: Elem>(
        x: &[f32],
        rows: usize,
        k: usize,
        w: &[E],
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        super::nk_rows(x, rows, k, w, cols, out)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::DType;

    use super::*;

    /// A deterministic pseudo-random value in [-1, 1) (a 64-bit LCG; no RNG crate needed).
    fn values(seed: u64, len: usize) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The oracle: `x·W` summed in f64 from the exact f32 values of `x` and the stored weights.
    fn reference(
        x: &[f32],
        rows: usize,
        w: &[f32],
        layout: Layout,
        [k, n]: [usize; 2],
    ) -> Vec<f64> {
        let at = |i: usize, j: usize| match layout {
            Layout::KN => w[i * n + j],
            Layout::NK => w[j * k + i],
        };
        (0..rows)
            .flat_map(|r| {
                (0..n).map(move |j| {
                    (0..k)
                        .map(|i| f64::from(x[r * k + i]) * f64::from(at(i, j)))
                        .sum()
                })
            })
            .collect()
    }

    fn check(kernels: Kernels, dtype: DType, layout: Layout, rows: usize, [k, n]: [usize; 2]) {
        let x = values(rows as u64 * 31 + k as u64, rows * k);
        let raw = values(n as u64 * 17 + k as u64, k * n);
        // The weights as stored (rounded to the dtype) and their exact f32 values.
        let (exact, y) = match dtype {
            DType::F16 => {
                let w: Vec<f16> = raw.iter().map(|&v| f16::from_f32(v)).collect();
                let exact = w.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
                (
                    exact,
                    matmul_rows(kernels, &x, rows, Weights::F16(&w), layout, [k, n]),
                )
            }
            DType::BF16 => {
                let w: Vec<bf16> = raw.iter().map(|&v| bf16::from_f32(v)).collect();
                let exact = w.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
                (
                    exact,
                    matmul_rows(kernels, &x, rows, Weights::Bf16(&w), layout, [k, n]),
                )
            }
            _ => (
                raw.clone(),
                matmul_rows(kernels, &x, rows, Weights::F32(&raw), layout, [k, n]),
            ),
        };
        let want = reference(&x, rows, &exact, layout, [k, n]);
        assert_eq!(y.len(), want.len());
        // f32 accumulation of k products of magnitude ≤ 1: error ≤ k·2⁻²⁴·Σ|terms| ≤ k²·6e-8.
        let tol = (k * k) as f64 * 6e-8 + 1e-6;
        for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= tol,
                "{kernels:?} {dtype:?} {layout:?} rows {rows} [{k}, {n}] at {i}: {got} vs {want}"
            );
        }
    }

    /// Every kernel, width, layout and row count against the f64 oracle, on shapes with SIMD
    /// tails in both `k` and `n` and on a decode-like shape.
    #[test]
    fn kernels_match_the_f64_product() {
        let mut kernels = vec![Kernels::Portable];
        if simd::available() {
            kernels.push(Kernels::Simd);
        }
        for kernels in kernels {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for layout in [Layout::KN, Layout::NK] {
                    for rows in [1, 2, 3, 8] {
                        for shape in [[1, 1], [37, 45], [64, 128], [130, 300]] {
                            check(kernels, dtype, layout, rows, shape);
                        }
                    }
                }
            }
        }
    }

    /// Tiles wider than one accumulator tile and more columns than threads × 16.
    #[test]
    fn wide_outputs_cover_every_tile() {
        let kernels = Kernels::detect();
        check(kernels, DType::F32, Layout::KN, 1, [12, 20_000]);
        check(kernels, DType::BF16, Layout::KN, 8, [9, 3000]);
        check(kernels, DType::F16, Layout::NK, 2, [40, 5000]);
    }

    #[test]
    #[should_panic(expected = "rows")]
    fn too_many_rows_are_refused() {
        let x = vec![0.0; 9 * 4];
        let w = vec![0.0; 4 * 4];
        matmul_rows(
            Kernels::Portable,
            &x,
            9,
            Weights::F32(&w),
            Layout::KN,
            [4, 4],
        );
    }
}
