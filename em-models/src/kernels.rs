//! The CPU products on the flex backend: `y = x·W (+ b)` read straight from the weights' storage,
//! for decode-sized inputs (at most [`MAX_ROWS`] rows of `x`) in any width and for prefill-sized
//! inputs with 16-bit weights.
//!
//! Decoding multiplies one row per sequence by every weight matrix, so a decode step is a stream
//! over all the weights (2 GB for the 0.5B model in f32) and its speed is the speed of that
//! stream. burn's generic matmul runs a one-row product on one thread and, for bf16, widens the
//! whole weight matrix to f32 on every call (3× slower than f32, measured). Here every weight is
//! read once, in its own width (f32, f16 or bf16), widened in registers and accumulated in f32, on
//! all of rayon's threads.
//!
//! Prefill-sized products (more than [`MAX_ROWS`] rows) with 16-bit weights go through
//! [`matmul_widened`] instead: chunks of `W` widened to f32 and handed to gemm's packed
//! kernels, so 16-bit prefill runs at f32 gemm speed with `x` kept in f32. f32 weights at that
//! size take burn's matmul (the same gemm).
//!
//! A weight is read in the layout it is stored in ([`Layout`]): a transposed view of a
//! contiguous matrix (a 16-bit model's projections keep HF's `[out, in]` storage on flex) is
//! multiplied as the other layout, without a copy.
//!
//! This is the one module of the workspace with `unsafe` code: the AVX2/FMA/F16C kernels
//! (`simd`) and the bounds-checked call into gemm (`packed`). Everything else here is safe. The
//! portable kernels in this file are the slow twin the SIMD kernels are tested against, and an
//! f64 product is the oracle of both entry points. CUDA and wgpu never come here: `project`
//! declines any tensor that is not a plain flex tensor (autodiff-tracked tensors included), and
//! callers then take burn's path.
//!
//! The weights are read from the live parameter handles on every call, so an optimiser step is
//! seen by the next decode step without any cache to invalidate.

use burn::tensor::Tensor;
use half::{bf16, f16};

/// Inputs with more rows than this (`batch × seq`: prefill) take a packed GEMM, faster once rows
/// are many: [`matmul_widened`] for 16-bit weights, burn's matmul for f32 ones.
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
    /// Row-major `[k, n]`: burn's `[in, out]` Linear weight as stored for f32 models. Computed
    /// as `y += x[i]·W[i, :]`.
    KN,
    /// Row-major `[n, k]` (`W` transposed): the head (`[vocab, hidden]`, tied or not) and a
    /// 16-bit model's projections on flex (HF's `[out, in]` under a transposed view). Computed
    /// as `y[j] = W[j, :]·x`.
    NK,
}

impl Layout {
    /// The other layout: how the transpose of a matrix stored as `self` is stored.
    pub fn transposed(self) -> Self {
        match self {
            Layout::KN => Layout::NK,
            Layout::NK => Layout::KN,
        }
    }
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
    /// AVX2 + FMA + F16C (x86-64), eight f32 lanes.
    Avx2(Prefetch),
    /// AVX-512 F (x86-64), sixteen f32 lanes.
    Avx512(Prefetch),
}

/// Whether the SIMD kernels ask for their weights ahead of time (`prefetcht0`). Prefetching
/// never changes a result, only the speed, and which is faster depends on the CPU's hardware
/// prefetchers: on the AMD EPYC dev VM (2 cores, 2026-12-03) leaving the batch-1 streams to the
/// hardware made decode faster (median step, `generate`, 3-6 alternating pairs, geometric
/// mean: f16 +4.5%, f32 +8%, bf16 +14%), while the 8-row kernels lost 10-40% without software
/// prefetch (criterion `kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// Every kernel prefetches each of its memory streams ahead (the choice on every vendor
    /// but AMD: the kernels were tuned this way on the earlier dev VMs, #14's notes).
    Always,
    /// Batch-1 kernels leave their streams to the hardware prefetchers; kernels over several
    /// rows of `x` still prefetch (the choice on AMD CPUs).
    MultiRowOnly,
}

impl Prefetch {
    /// This CPU's choice (see [`Prefetch`]): `MultiRowOnly` on AMD, `Always` elsewhere.
    pub fn detect() -> Self {
        if simd::is_amd() {
            Self::MultiRowOnly
        } else {
            Self::Always
        }
    }

    /// Whether batch-1 kernels prefetch.
    fn batch_one(self) -> bool {
        self == Self::Always
    }
}

impl Kernels {
    /// The fastest kernels this CPU runs (checked once), with this CPU's [`Prefetch`] choice.
    pub fn detect() -> Self {
        let prefetch = Prefetch::detect();
        if simd::available(simd::Isa::Avx512) {
            Self::Avx512(prefetch)
        } else if simd::available(simd::Isa::Avx2) {
            Self::Avx2(prefetch)
        } else {
            Self::Portable
        }
    }

    /// Every kind this CPU runs, portable first, each SIMD set with both [`Prefetch`] choices
    /// (for tests and benches).
    pub fn available() -> Vec<Self> {
        let mut out = vec![Self::Portable];
        let both = [Prefetch::Always, Prefetch::MultiRowOnly];
        if simd::available(simd::Isa::Avx2) {
            out.extend(both.map(Self::Avx2));
        }
        if simd::available(simd::Isa::Avx512) {
            out.extend(both.map(Self::Avx512));
        }
        out
    }

    /// A short label: `portable`, `avx2` or `avx512`, with `_hw` when the batch-1 kernels
    /// leave prefetching to the hardware (bench and test names).
    pub fn name(self) -> String {
        let (isa, prefetch) = match self {
            Self::Portable => return "portable".into(),
            Self::Avx2(p) => ("avx2", p),
            Self::Avx512(p) => ("avx512", p),
        };
        if prefetch.batch_one() {
            isa.into()
        } else {
            format!("{isa}_hw")
        }
    }

    /// Runs one kernel call with these kernels.
    fn run<E: Elem>(self, op: Op<'_, E>) {
        match self {
            Self::Portable => op.portable(),
            Self::Avx2(p) => simd::dispatch(simd::Isa::Avx2, p.batch_one(), op),
            Self::Avx512(p) => simd::dispatch(simd::Isa::Avx512, p.batch_one(), op),
        }
    }
}

/// Row-major `[k, n]` weights at most this wide are split between threads by rows (each thread
/// streams one contiguous block of whole rows and the partial products are summed); wider ones
/// (the untied head) by columns.
const ROW_SPLIT_MAX_N: usize = 16_384;

/// The least weights, in bytes, of an `[n, k]` decode product's column range (whole rows of the
/// stored matrix, [`Schedule::Guided`]) but for a product's last one: the last ranges of a
/// region are this small, so the threads end it together, and not smaller, so each is still a
/// few long streams.
const MIN_RANGE_BYTES: usize = 64 << 10;

impl Weights<'_> {
    /// Entries stored.
    fn len(&self) -> usize {
        match self {
            Weights::F32(w) => w.len(),
            Weights::F16(w) => w.len(),
            Weights::Bf16(w) => w.len(),
        }
    }

    /// Bytes per entry.
    fn elem_bytes(&self) -> usize {
        match self {
            Weights::F32(_) => 4,
            Weights::F16(_) | Weights::Bf16(_) => 2,
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
/// each streams long contiguous stretches of `W`: blocks of whole rows for row-major `[k, n]`
/// weights up to `ROW_SPLIT_MAX_N` (16384) wide (partial products summed), column ranges otherwise.
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
    let mut ys = matmul_rows_all(kernels, x, rows, &[(weights, n)], layout, k);
    ys.pop().expect("one product")
}

/// [`matmul_rows`] for several matrices that multiply the same `x`: `parts[i] = (W_i, n_i)`
/// with `W_i` a logical `[k, n_i]` matrix, all laid out as `layout` says; returns each
/// `[rows, n_i]`. Row-major weights all within `ROW_SPLIT_MAX_N` are split into one block of
/// whole rows per thread *together*: one parallel region for all of them, each thread streaming
/// its rows of every matrix in turn (a decode step's q/k/v and gate/up: 72 fewer regions per
/// token of the 0.5B model). `[n, k]` weights' columns (whole rows of the stored matrix) are
/// handed out in ranges while the region runs, the ranges shrinking towards its end
/// (`Schedule::Guided`), so that the threads finish together whatever share of the bandwidth
/// each gets; the products are the same, bit for bit, however the ranges fall. Wider `[k, n]`
/// weights are split into one column range per thread.
///
/// # Panics
/// As [`matmul_rows`], for every part.
pub fn matmul_rows_all(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    parts: &[(Weights<'_>, usize)],
    layout: Layout,
    k: usize,
) -> Vec<Vec<f32>> {
    check_x(x, rows, k);
    for (weights, n) in parts {
        assert_eq!(weights.len(), k * n, "weights are not [k, n]");
    }
    let threads = rayon::current_num_threads().max(1);
    let part = |x: &[f32], weights: Weights<'_>, [k, n]: [usize; 2], cols| match weights {
        Weights::F32(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
        Weights::F16(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
        Weights::Bf16(w) => columns(kernels, x, rows, w, layout, [k, n], cols),
    };
    let split_rows = layout == Layout::KN
        && parts.iter().all(|&(_, n)| n <= ROW_SPLIT_MAX_N)
        && threads > 1
        && k >= 8 * threads;
    if split_rows {
        // One block of whole rows per thread, a multiple of 4 rows (the kernel's streams); a
        // block's partial products of all the matrices side by side, `[rows, n_i]` each.
        let block = k.div_ceil(threads).next_multiple_of(4);
        let total: usize = parts.iter().map(|&(_, n)| n).sum();
        let y = by_row_blocks(rows, total, k, block, |ks| {
            let xb: Vec<f32> = (0..rows)
                .flat_map(|r| x[r * k + ks.start..r * k + ks.end].iter().copied())
                .collect();
            let mut out = Vec::new();
            for &(weights, n) in parts {
                let w = weights.slice(ks.start * n..ks.end * n);
                let y = part(&xb, w, [ks.len(), n], 0..n);
                // The first product is kept as it is (a lone product is never copied).
                if out.is_empty() {
                    out = y;
                } else {
                    out.extend(y);
                }
            }
            out
        });
        // Split from the back: the first product stays in `y`'s allocation.
        let mut y = y;
        let mut ys: Vec<Vec<f32>> = parts[1..]
            .iter()
            .rev()
            .map(|&(_, n)| y.split_off(y.len() - rows * n))
            .collect();
        ys.push(y);
        ys.reverse();
        return ys;
    }
    // All the products' column ranges in one parallel region. `[n, k]` ones are handed out as
    // the threads ask, at least `MIN_RANGE_BYTES` of whole rows. A `[k, n]` range is a segment
    // of each of the `k` rows, which streams well only long: one range per thread, a multiple of
    // 16 wide (a SIMD tile), as before the guided ranges (measured on `[n, k]` products only).
    let ns: Vec<usize> = parts.iter().map(|&(_, n)| n).collect();
    let run = |p: usize, cols| {
        let (weights, n) = parts[p];
        part(x, weights, [k, n], cols)
    };
    match layout {
        Layout::NK => {
            let min = |p: usize| MIN_RANGE_BYTES / (k * parts[p].0.elem_bytes()).max(1);
            by_columns(rows, &ns, Schedule::Guided(min), run)
        }
        Layout::KN => {
            let width = |p: usize| ns[p].div_ceil(threads).next_multiple_of(16).max(16);
            by_columns(rows, &ns, Schedule::Fixed(width), run)
        }
    }
}

/// Asserts that `x` is `[rows, k]` with `rows` in `1..=MAX_ROWS` (the decode products' inputs).
fn check_x(x: &[f32], rows: usize, k: usize) {
    assert!(
        (1..=MAX_ROWS).contains(&rows),
        "rows {rows} not in 1..={MAX_ROWS}"
    );
    assert_eq!(x.len(), rows * k, "x is not [rows, k]");
}

/// [`matmul_rows`] for f32 weights on the calling thread, without a split between rayon's
/// threads: for callers that are already one task of a parallel pass (decode attention's
/// (row, kv head) tasks multiply by their own keys and values).
///
/// # Panics
/// As [`matmul_rows`].
pub(crate) fn matmul_serial(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    w: &[f32],
    layout: Layout,
    [k, n]: [usize; 2],
) -> Vec<f32> {
    check_x(x, rows, k);
    assert_eq!(w.len(), k * n, "weights are not [k, n]");
    columns(kernels, x, rows, w, layout, [k, n], 0..n)
}

/// `[rows, n]` as the sum of `part(k0..k1)` (each a partial product `[rows, n]` over rows
/// `k0..k1` of `W`) over blocks of `block` rows, one rayon task per block.
fn by_row_blocks(
    rows: usize,
    n: usize,
    k: usize,
    block: usize,
    part: impl Fn(std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let starts: Vec<usize> = (0..k).step_by(block.max(1)).collect();
    let parts: Vec<Vec<f32>> = starts
        .par_iter()
        .map(|&k0| part(k0..(k0 + block).min(k)))
        .collect();
    let mut parts = parts.into_iter();
    let mut y = parts.next().unwrap_or_else(|| vec![0.0; rows * n]);
    for p in parts {
        y.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    y
}

/// How [`by_columns`] cuts the products' columns into tasks. The cuts fall on multiples of 16
/// columns (SIMD tiles) from a product's start, or at its end (the callers' widths are
/// multiples of 16). A column's value does not depend on the cuts: every kernel computes a
/// column the same way, bit for bit, whichever range it falls in (tested), so a product is the
/// same on every run whichever thread takes which range.
enum Schedule<F: Fn(usize) -> usize> {
    /// Ranges `width(p)` columns wide, fixed before the region starts, split between the
    /// threads by rayon's halving (prefill's products, a few long gemm tasks).
    Fixed(F),
    /// Ranges handed out while the region runs (guided self-scheduling): a thread that is done
    /// takes the next `remaining / (2·threads)` columns of the products in turn, at least
    /// `min(p)`, so the ranges shrink as the region ends and the thread that streams faster
    /// takes more. With two fixed halves a decode step's threads finished their shares of a
    /// product 25-41 µs apart on average (of 240-350 µs per region, either thread the slower
    /// one at random: the 2-core AMD EPYC VM's bandwidth is not shared evenly from moment to
    /// moment), and the faster one then waited.
    Guided(F),
}

/// Each product `p` (`ns[p]` columns) as `[rows, ns[p]]`, assembled from `part(p, c0..c1)`
/// (`[rows, c1 - c0]` each) over the column ranges `schedule` cuts, all the products' ranges
/// one parallel region (a decode step's q/k/v or gate/up as one region rather than one per
/// product).
fn by_columns<F: Fn(usize) -> usize + Sync>(
    rows: usize,
    ns: &[usize],
    schedule: Schedule<F>,
    part: impl Fn(usize, std::ops::Range<usize>) -> Vec<f32> + Sync,
) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    type Piece = (usize, std::ops::Range<usize>, Vec<f32>);
    let run = |(p, cols): (usize, std::ops::Range<usize>)| -> Piece {
        let out = part(p, cols.clone());
        (p, cols, out)
    };
    let pieces: Vec<Piece> = match schedule {
        Schedule::Fixed(width) => {
            let tasks: Vec<(usize, std::ops::Range<usize>)> = ns
                .iter()
                .enumerate()
                .flat_map(|(p, &n)| {
                    let width = width(p).max(1);
                    (0..n)
                        .step_by(width)
                        .map(move |start| (p, start..(start + width).min(n)))
                })
                .collect();
            tasks.into_par_iter().map(run).collect()
        }
        Schedule::Guided(min) => {
            let threads = rayon::current_num_threads().max(1);
            let ranges = GuidedRanges::new(ns, threads, min);
            let mine: Vec<Vec<Piece>> = (0..threads)
                .into_par_iter()
                .with_max_len(1)
                .map(|_| std::iter::from_fn(|| ranges.next()).map(run).collect())
                .collect();
            mine.into_iter().flatten().collect()
        }
    };
    let mut by_product: Vec<Vec<(std::ops::Range<usize>, Vec<f32>)>> = vec![Vec::new(); ns.len()];
    for (p, cols, out) in pieces {
        by_product[p].push((cols, out));
    }
    by_product
        .into_iter()
        .zip(ns)
        .map(|(mut pieces, &n)| {
            pieces.sort_unstable_by_key(|(cols, _)| cols.start);
            let mut end = 0;
            for (cols, _) in &pieces {
                assert_eq!(cols.start, end, "the ranges cover every column once");
                end = cols.end;
            }
            assert_eq!(end, n, "the ranges cover every column once");
            // Row by row, each range's segment in turn: one write of `y`, without zeroing it.
            let mut y = Vec::with_capacity(rows * n);
            for r in 0..rows {
                for (cols, out) in &pieces {
                    let width = cols.len();
                    y.extend_from_slice(&out[r * width..(r + 1) * width]);
                }
            }
            y
        })
        .collect()
}

/// [`Schedule::Guided`]'s ranges: the products' columns end to end, handed out from one atomic
/// cursor to whichever thread asks.
struct GuidedRanges<'a, F> {
    ns: &'a [usize],
    /// Where each product starts in the products' columns end to end.
    offsets: Vec<usize>,
    total: usize,
    threads: usize,
    min: F,
    next: std::sync::atomic::AtomicUsize,
}

impl<'a, F: Fn(usize) -> usize> GuidedRanges<'a, F> {
    fn new(ns: &'a [usize], threads: usize, min: F) -> Self {
        let offsets = ns
            .iter()
            .scan(0, |at, &n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect();
        Self {
            ns,
            offsets,
            total: ns.iter().sum(),
            threads: threads.max(1),
            min,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next range `(product, columns)`, or `None` once every column is handed out.
    fn next(&self) -> Option<(usize, std::ops::Range<usize>)> {
        use std::sync::atomic::Ordering;
        let mut at = self.next.load(Ordering::Relaxed);
        loop {
            if at >= self.total {
                return None;
            }
            // The product holding column `at` (the last whose start is at or before it; an
            // empty product starts where the next does and is skipped).
            let p = self.offsets.partition_point(|&o| o <= at) - 1;
            let start = at - self.offsets[p];
            let size = ((self.total - at) / (2 * self.threads))
                .max((self.min)(p))
                .max(1)
                .next_multiple_of(16);
            let end = (start + size).min(self.ns[p]);
            match self.next.compare_exchange_weak(
                at,
                self.offsets[p] + end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((p, start..end)),
                Err(now) => at = now,
            }
        }
    }
}

/// Entries of `W` (f32) one [`matmul_widened`] chunk widens at a time: 1 MB, within L2 ...
#[cfg(feature = "flex")]
const CHUNK: usize = 1 << 18;

/// ... unless that is fewer rows of `W` than this: each gemm call reads and writes all of its
/// `y`, so a chunk must be deep enough in `k` for the products to outweigh that (a bf16
/// prefill spent 10% more cycles in gemm's kernels with 53-row chunks for gate/up than with
/// 256; narrow whole-`k` column panels, `CHUNK / k` columns each, ran 7-20% slower).
#[cfg(feature = "flex")]
const DEPTH: usize = 256;

/// `y = x·W` for any number of rows, `W` in any stored width: chunks of `W` are widened to f32
/// (exactly) and multiplied by `x` with gemm's packed f32 kernels. This is prefill's product
/// for 16-bit weights: gemm's speed on f32, reading 2 bytes per weight, `x` and `y` kept in f32
/// (no rounding of the activations to the weights' width), and only a chunk, never the whole
/// matrix, widened at a time. Same arguments and result as [`matmul_rows`], without its row
/// limit.
///
/// Each rayon task takes a range of whole output columns, so it writes its own columns of `y`
/// and nothing is summed afterwards: one range per thread for weights up to `ROW_SPLIT_MAX_N`
/// outputs, four per thread for a head. A row-major `[k, n]` range is walked `DEPTH`-row chunks
/// at a time (each chunk's rows are segments of `n / threads` entries, long sequential reads);
/// an `[n, k]` one in blocks of whole rows of the stored matrix (contiguous), widened
/// transposed (`nk_widened`). Splitting
/// `[k, n]` weights by rows of `W` instead (a partial `y` per thread, zeroed, then summed on
/// one thread) spent more time outside gemm: 128-token f16 prefill of the 0.5B model, 16
/// alternating runs in one process, median 572-624 → 554-600 ms (AMD EPYC VM, 2026-12-06).
///
/// # Panics
/// When the slices' lengths disagree with the shapes.
#[cfg(feature = "flex")]
pub fn matmul_widened(
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    layout: Layout,
    [k, n]: [usize; 2],
) -> Vec<f32> {
    assert_eq!(x.len(), rows * k, "x is not [rows, k]");
    assert_eq!(weights.len(), k * n, "weights are not [k, n]");
    if rows == 0 || n == 0 || k == 0 {
        return vec![0.0; rows * n];
    }
    let threads = rayon::current_num_threads().max(1);
    let kernels = Kernels::detect();
    // Column ranges: W[:, c0..c1] is contiguous for [n, k] weights; for a [k, n] one its rows'
    // segments are long (n / (4·threads) columns at least).
    let tasks = if n <= ROW_SPLIT_MAX_N {
        threads
    } else {
        4 * threads
    };
    let width = n.div_ceil(tasks).next_multiple_of(16);
    let mut ys = by_columns(
        rows,
        &[n],
        Schedule::Fixed(|_| width),
        |_, cols| match layout {
            Layout::KN => kn_widened(kernels, x, rows, weights, [k, n], cols),
            Layout::NK => nk_widened(kernels, x, rows, weights, [k, n], cols),
        },
    );
    ys.pop().expect("one product")
}

/// `x · W[:, cols]` for row-major `[k, n]` weights, as `[rows, cols.len()]`: chunks of
/// at least [`DEPTH`] rows of `W` (about [`CHUNK`] entries) widened to f32, each multiplied into
/// `y` by gemm.
#[cfg(feature = "flex")]
fn kn_widened(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    [k, n]: [usize; 2],
    cols: std::ops::Range<usize>,
) -> Vec<f32> {
    let nc = cols.len();
    let step = (CHUNK / nc.max(1)).max(DEPTH);
    let mut y = vec![0.0f32; rows * nc];
    let mut chunk = Vec::new();
    for i0 in (0..k).step_by(step) {
        let i1 = (i0 + step).min(k);
        chunk.resize((i1 - i0) * nc, 0.0);
        let block = weights.slice(i0 * n + cols.start..(i1 - 1) * n + cols.end);
        widen_into(kernels, block, nc, n, &mut chunk);
        // yᵀ (+)= W[i0..i1, cols]ᵀ · x[:, i0..i1]ᵀ, the first chunk overwriting. The widened
        // chunk is gemm's left operand, with unit stride along its rows: gemm packs it reading
        // it in order, once per call. Given as the right operand (`y += x·W`) with 128 rows of
        // `x`, gemm read it unpacked, a few columns from every one of its rows per microkernel
        // call (strided across 5 MB), and packed `x` instead.
        packed::gemm(
            [nc, i1 - i0, rows],
            packed::Strided {
                data: &chunk,
                rs: 1,
                cs: nc,
            },
            packed::Strided {
                data: &x[i0..],
                rs: 1,
                cs: k,
            },
            &mut y,
            (1, nc),
            i0 > 0,
        );
    }
    y
}

/// `x · W[:, cols]` for row-major `[n, k]` weights, as `[rows, cols.len()]`: blocks of whole
/// rows of `W` (contiguous, about [`CHUNK`] entries, at least 64 rows) widened to f32
/// *transposed*, `[k, rows of the block]`, so that the block is gemm's left operand with unit
/// row stride, which gemm reads in place, as in [`kn_widened`]. Measured on the 0.5B model's
/// f16 prefill with `[n, k]` projections (AMD EPYC VM, 2026-12-06, in-process against
/// `[k, n]` ones, 543-649 ms): chunks widened as stored, which gemm then packed (transposed)
/// itself, 0.94× the `[k, n]` speed, 0.82-0.86× when they were also cut along `k`; transposed
/// by a scalar pass 0.58×; this, tiles transposed in registers (`Vector::transpose`), 0.97-0.98×.
#[cfg(feature = "flex")]
fn nk_widened(
    kernels: Kernels,
    x: &[f32],
    rows: usize,
    weights: Weights<'_>,
    [k, n]: [usize; 2],
    cols: std::ops::Range<usize>,
) -> Vec<f32> {
    debug_assert!(cols.end <= n);
    let nc = cols.len();
    // Chunks of whole rows of `W` (contiguous in memory), a multiple of 16 of them.
    let step = (CHUNK / k.max(1)).max(64).next_multiple_of(16);
    let mut y = vec![0.0f32; rows * nc];
    let mut chunk = Vec::new();
    for c0 in (0..nc).step_by(step) {
        let c1 = (c0 + step).min(nc);
        let width = c1 - c0;
        chunk.resize(width * k, 0.0);
        let block = weights.slice((cols.start + c0) * k..(cols.start + c1) * k);
        widen_rows(kernels, block, k, k, true, &mut chunk);
        // yᵀ[c0..c1] = W[c0..c1, :] · xᵀ.
        packed::gemm(
            [width, k, rows],
            packed::Strided {
                data: &chunk,
                rs: 1,
                cs: width,
            },
            packed::Strided {
                data: x,
                rs: 1,
                cs: k,
            },
            &mut y[c0..],
            (1, nc),
            false,
        );
    }
    y
}

/// Rows `width` long, `stride` apart in `w`, widened to f32 into `out` (`[rows, width]`
/// contiguous) with `kernels`: one kernel call per chunk, not per row of `W`.
#[cfg(feature = "flex")]
fn widen_into(kernels: Kernels, w: Weights<'_>, width: usize, stride: usize, out: &mut [f32]) {
    widen_rows(kernels, w, width, stride, false, out)
}

/// [`widen_into`], and with `transposed` the block is stored transposed: `out` is
/// `[width, rows]` (`out[j·rows + r] = w[r·stride + j]`).
#[cfg(feature = "flex")]
fn widen_rows(
    kernels: Kernels,
    w: Weights<'_>,
    width: usize,
    stride: usize,
    transposed: bool,
    out: &mut [f32],
) {
    match w {
        Weights::F32(w) => kernels.run(Op::Widen {
            w,
            width,
            stride,
            transposed,
            out,
        }),
        Weights::F16(w) => kernels.run(Op::Widen {
            w,
            width,
            stride,
            transposed,
            out,
        }),
        Weights::Bf16(w) => kernels.run(Op::Widen {
            w,
            width,
            stride,
            transposed,
            out,
        }),
    }
}

/// The call into gemm's f32 kernels (the crate burn's flex matmul uses), behind bounds checks.
#[cfg(feature = "flex")]
#[allow(unsafe_code)]
mod packed {
    /// A logical matrix stored at `data[r·rs + c·cs]` (row `r`, column `c`).
    #[derive(Clone, Copy)]
    pub(super) struct Strided<'a> {
        pub data: &'a [f32],
        pub rs: usize,
        pub cs: usize,
    }

    /// The last index a `[rows, cols]` matrix at strides `(rs, cs)` touches, plus one.
    fn extent([rows, cols]: [usize; 2], (rs, cs): (usize, usize)) -> usize {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }

    /// `dst (+)= lhs·rhs` on the calling thread: `lhs` a logical `[m, k]` matrix, `rhs`
    /// `[k, n]`, `dst` `[m, n]` at `dst[r·rs + c·cs]` for `(rs, cs) = dst_strides`;
    /// `accumulate` adds to `dst`'s values, else overwrites them.
    ///
    /// # Panics
    /// When a slice is shorter than its shape needs at its strides.
    pub(super) fn gemm(
        [m, k, n]: [usize; 3],
        lhs: Strided<'_>,
        rhs: Strided<'_>,
        dst: &mut [f32],
        dst_strides: (usize, usize),
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            extent([m, n], dst_strides) <= dst.len(),
            "dst shorter than [m, n] at its strides"
        );
        if k == 0 {
            if !accumulate {
                for r in 0..m {
                    for c in 0..n {
                        dst[r * dst_strides.0 + c * dst_strides.1] = 0.0;
                    }
                }
            }
            return;
        }
        assert!(
            extent([m, k], (lhs.rs, lhs.cs)) <= lhs.data.len(),
            "lhs shorter than [m, k] at its strides"
        );
        assert!(
            extent([k, n], (rhs.rs, rhs.cs)) <= rhs.data.len(),
            "rhs shorter than [k, n] at its strides"
        );
        let as_isize = |v: usize| isize::try_from(v).expect("stride fits isize");
        // SAFETY: gemm reads lhs[r·rs + i·cs] (r < m, i < k) and rhs[i·rs + c·cs] (i < k,
        // c < n), and reads/writes dst[r·rs + c·cs] (r < m, c < n), all in bounds by the
        // asserts above. With `read_dst` dst = 1·dst + 1·lhs·rhs, else dst = lhs·rhs (dst's old
        // values unread).
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                as_isize(dst_strides.1),
                as_isize(dst_strides.0),
                accumulate,
                lhs.data.as_ptr(),
                as_isize(lhs.cs),
                as_isize(lhs.rs),
                rhs.data.as_ptr(),
                as_isize(rhs.cs),
                as_isize(rhs.rs),
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// Columns of a batch-1 `[k, n]` product's tile: 128 KiB of accumulators, in L2, so that each
/// of the kernel's streams reads 64 KiB of a 16-bit row before it moves to the next row (an
/// L1-sized tile, 32 KiB, cut the rows of a wide matrix into 16 KiB pieces). Only weights wider
/// than 8176 columns see the difference, such as an untied head (a 0.5B model's is 27% of its
/// f16 bytes). `cargo bench -p em-benches --bench kernels -- 'avx512_hw_(kn|kn_head)_f16_r1$'`
/// on the AMD EPYC VM (2026-12-03): the head's throughput relative to the layers' in the same
/// run, geometric mean over four rounds, 0.97 → 1.10; a second check of the final builds, three
/// alternating rounds of f16 and bf16, 1.03 → 1.19, the head alone +3-4% (this VM's noise is
/// ±20% between rounds, so the size of the gain is uncertain; its sign held in both checks).
const ONE_ROW_TILE: usize = 32_768 - 16;

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
            // the tile stream past. One SIMD tile less than a power of two, so that the rows of
            // `acc` are not a multiple of 4 KiB apart: the kernel stores to one row and then
            // loads from the next at the same column, and with equal low 12 address bits the
            // load waits for the store (4K aliasing). One row's accumulators may fill L2
            // instead ([`ONE_ROW_TILE`]).
            let tile = if rows == 1 {
                ONE_ROW_TILE
            } else {
                (8192 / rows).next_multiple_of(16).max(32) - 16
            };
            // Never more than the columns asked for: a lone row's tile is 128 KiB, and most
            // products are far narrower.
            let mut acc = vec![0.0f32; rows * tile.min(width)];
            let mut start = cols.start;
            while start < cols.end {
                let t = tile.min(cols.end - start);
                let acc = &mut acc[..rows * t];
                acc.fill(0.0);
                kernels.run(Op::Kn {
                    x,
                    rows,
                    k,
                    w,
                    n,
                    c0: start,
                    t,
                    acc,
                });
                let at = start - cols.start;
                for r in 0..rows {
                    out[r * width + at..r * width + at + t]
                        .copy_from_slice(&acc[r * t..(r + 1) * t]);
                }
                start += t;
            }
        }
        Layout::NK => kernels.run(Op::Nk {
            x,
            rows,
            k,
            w,
            cols,
            out: &mut out,
        }),
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

/// One kernel call's arguments (see [`kn_tile`] and [`nk_rows`]): what the SIMD dispatch
/// receives, and what runs portably when no SIMD kernel takes it.
pub(crate) enum Op<'a, E> {
    /// `acc[r, j] += Σ_i x[r, i]·W[i, c0 + j]`.
    Kn {
        x: &'a [f32],
        rows: usize,
        k: usize,
        w: &'a [E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &'a mut [f32],
    },
    /// `out[r, j - cols.start] = W[j, :]·x[r, :]`.
    Nk {
        x: &'a [f32],
        rows: usize,
        k: usize,
        w: &'a [E],
        cols: std::ops::Range<usize>,
        out: &'a mut [f32],
    },
    /// `out[r, j] = w[r·stride + j]` widened to f32 (exactly) for `j < width`: the rows of a
    /// strided block gathered into a contiguous `[rows, width]`, `rows = out.len() / width`;
    /// with `transposed`, into a contiguous `[width, rows]` instead (`out[j, r]`).
    // Only flex's prefill product widens (the tests build it on every feature set).
    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    Widen {
        w: &'a [E],
        width: usize,
        stride: usize,
        transposed: bool,
        out: &'a mut [f32],
    },
}

impl<E: Elem> Op<'_, E> {
    /// Runs the call with the portable kernels.
    fn portable(self) {
        match self {
            Op::Kn {
                x,
                rows,
                k,
                w,
                n,
                c0,
                t,
                acc,
            } => kn_tile(x, rows, k, w, n, c0, t, acc),
            Op::Nk {
                x,
                rows,
                k,
                w,
                cols,
                out,
            } => nk_rows(x, rows, k, w, cols, out),
            Op::Widen {
                w,
                width,
                stride,
                transposed: false,
                out,
            } => {
                for (r, out) in out.chunks_exact_mut(width).enumerate() {
                    let w = &w[r * stride..r * stride + width];
                    out.iter_mut().zip(w).for_each(|(o, v)| *o = v.widen());
                }
            }
            Op::Widen {
                w,
                width,
                stride,
                transposed: true,
                out,
            } => {
                let rows = out.len() / width;
                for r in 0..rows {
                    for (j, v) in w[r * stride..r * stride + width].iter().enumerate() {
                        out[j * rows + r] = v.widen();
                    }
                }
            }
        }
    }
}

/// `linear(x)` for `x: [batch, seq, k]` on the flex backend, `weight: [k, n]` (burn's layout)
/// or, with `layout = NK`, `[n, k]` (a tied embedding): [`matmul_rows`] up to [`MAX_ROWS`] rows,
/// [`matmul_widened`] beyond for 16-bit weights. `None` when neither applies (another backend,
/// autodiff, f64, f32 weights beyond [`MAX_ROWS`] rows, a strided weight), in which case the
/// caller runs burn's op. The result has `x`'s dtype.
pub(crate) fn project(
    x: &Tensor<3>,
    weight: &Tensor<2>,
    layout: Layout,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<3>> {
    let mut ys = project_all(x, &[(weight, bias)], layout)?;
    ys.pop()
}

/// How the flex tensor `weight`, a logical matrix in layout `expected`, is stored, as
/// `kernels::project` sees it: `expected`, its transpose (a transposed view), or `None` (not a
/// flex tensor, or strided otherwise: `project` declines it).
#[cfg(all(test, feature = "flex"))]
pub(crate) fn stored_layout(weight: &Tensor<2>, expected: Layout) -> Option<Layout> {
    flex::stored_layout(weight, expected)
}

/// [`project`] for several linears of the same `x` (`linears[i] = (weight, bias)`), as
/// [`matmul_rows_all`]: `x` is read from its tensor once and decode-sized products share one
/// parallel region. `None` when any of them cannot take the fast path (as [`project`]).
pub(crate) fn project_all(
    x: &Tensor<3>,
    linears: &[(&Tensor<2>, Option<&Tensor<1>>)],
    layout: Layout,
) -> Option<Vec<Tensor<3>>> {
    flex::project_all(Kernels::detect(), x, linears, layout)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::{DType, Tensor, TensorData};
    use burn_flex::{Flex, FlexTensor};
    use half::{bf16, f16};

    use super::{Kernels, Layout, MAX_ROWS, Weights, matmul_rows_all, matmul_widened, widen_into};

    /// The flex primitive behind `t`, or `None` on another backend or under autodiff.
    fn primitive<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
        if t.is_autodiff() {
            return None;
        }
        t.clone().try_into_primitive::<Flex>().ok()
    }

    /// The contiguous storage of a flex tensor, in its stored width.
    fn storage(t: &FlexTensor) -> Option<Weights<'_>> {
        stored(t, t.layout().contiguous_offsets()?)
    }

    /// The storage of a 2-D flex tensor and the layout its logical matrix has in it, given the
    /// layout the caller expects: the expected one when the tensor is contiguous, the other
    /// when it is a transposed view of a contiguous matrix (a 16-bit model's projections keep
    /// HF's `[out, in]` under burn's `[in, out]` view, see `build`).
    fn matrix(t: &FlexTensor, expected: Layout) -> Option<(Weights<'_>, Layout)> {
        match t.layout().contiguous_offsets() {
            Some(offsets) => Some((stored(t, offsets)?, expected)),
            None => {
                let offsets = t.layout().transpose(0, 1).contiguous_offsets()?;
                Some((stored(t, offsets)?, expected.transposed()))
            }
        }
    }

    #[cfg(test)]
    pub(super) fn stored_layout(weight: &Tensor<2>, expected: Layout) -> Option<Layout> {
        matrix(&primitive(weight)?, expected).map(|(_, layout)| layout)
    }

    /// Entries `start..end` of `t`'s storage, in its stored width.
    fn stored(t: &FlexTensor, (start, end): (usize, usize)) -> Option<Weights<'_>> {
        Some(match t.dtype() {
            DType::F32 => Weights::F32(&t.storage::<f32>()[start..end]),
            DType::F16 => Weights::F16(&t.storage::<f16>()[start..end]),
            DType::BF16 => Weights::Bf16(&t.storage::<bf16>()[start..end]),
            _ => return None,
        })
    }

    pub(super) fn project_all(
        kernels: Kernels,
        x: &Tensor<3>,
        linears: &[(&Tensor<2>, Option<&Tensor<1>>)],
        layout: Layout,
    ) -> Option<Vec<Tensor<3>>> {
        let [batch, seq, k] = x.dims();
        let rows = batch * seq;
        if rows == 0 {
            return None;
        }
        let dtype = x.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return None;
        }
        let prims = linears
            .iter()
            .map(|(weight, _)| primitive(weight))
            .collect::<Option<Vec<_>>>()?;
        let mut parts = Vec::with_capacity(prims.len());
        let mut stored_as = None;
        for w in &prims {
            let n = match (layout, w.layout().shape().as_slice()) {
                (Layout::KN, &[wk, n]) if wk == k => n,
                (Layout::NK, &[n, wk]) if wk == k => n,
                _ => return None,
            };
            let (weights, stored) = matrix(w, layout)?;
            // One product call takes one layout: a mix runs burn's op.
            if *stored_as.get_or_insert(stored) != stored {
                return None;
            }
            parts.push((weights, n));
        }
        let layout = stored_as?;
        // Beyond decode sizes, f32 weights take burn's matmul (the same gemm, without a copy of
        // the weights); 16-bit ones are widened panel by panel here (burn would widen the whole
        // matrix on every call, or run gemm's slower f16 path, with `x` rounded to 16 bits).
        let wide = rows > MAX_ROWS;
        if wide && parts.iter().any(|(w, _)| matches!(w, Weights::F32(_))) {
            return None;
        }
        // Biases read in their stored width, as the weights (a 16-bit model's are 16-bit).
        let bias_prims = linears
            .iter()
            .map(|&(_, bias)| match bias {
                None => Some(None),
                Some(bias) => primitive(bias).map(Some),
            })
            .collect::<Option<Vec<_>>>()?;
        let biases = bias_prims
            .iter()
            .zip(&parts)
            .map(|(bias, &(_, n))| match bias {
                None => Some(None),
                Some(b) => storage(b).filter(|b| b.len() == n).map(Some),
            })
            .collect::<Option<Vec<_>>>()?;
        // `x`'s rows borrowed where it is a plain f32 tensor (the compute dtype), else copied.
        let borrowed = em_core::fused::host_rows(&x.clone().reshape([rows, k]));
        let copied;
        let host: &[f32] = match &borrowed {
            Some(rows) => rows.values(),
            None => {
                copied = primitive(x)?
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .ok()?;
                &copied
            }
        };
        let ys = if wide {
            parts
                .iter()
                .map(|&(weights, n)| matmul_widened(host, rows, weights, layout, [k, n]))
                .collect()
        } else {
            matmul_rows_all(kernels, host, rows, &parts, layout, k)
        };
        let device = x.device();
        Some(
            ys.into_iter()
                .zip(parts.iter().zip(biases))
                .map(|(mut y, (&(_, n), bias))| {
                    if let Some(b) = bias {
                        let mut b32 = vec![0f32; n];
                        widen_into(kernels, b, n, n, &mut b32);
                        for row in y.chunks_exact_mut(n) {
                            row.iter_mut().zip(&b32).for_each(|(v, b)| *v += b);
                        }
                    }
                    Tensor::from_data(TensorData::new(y, [batch, seq, n]), (&device, dtype))
                })
                .collect(),
        )
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::tensor::Tensor;

    use super::{Kernels, Layout};

    /// Without the flex backend there is no CPU tensor to read: always burn's path.
    pub(super) fn project_all(
        _: Kernels,
        _: &Tensor<3>,
        _: &[(&Tensor<2>, Option<&Tensor<1>>)],
        _: Layout,
    ) -> Option<Vec<Tensor<3>>> {
        None
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
// Index loops on purpose: iterator adaptors over the stream arrays are closures, which must not
// appear in the kernels (see `Vector`).
#[allow(clippy::needless_range_loop)]
mod simd {
    //! The SIMD versions of [`super::kn_tile`] and [`super::nk_rows`]: one body per kernel,
    //! generic over the vector type ([`Vector`]: AVX2's eight f32 lanes or AVX-512's sixteen),
    //! compiled for each instruction set by a `#[target_feature]` entry point. Entered only
    //! through the safe wrappers below, which check the CPU's features (once) and every slice
    //! bound the raw-pointer loops rely on.

    use std::arch::x86_64::*;
    use std::ops::Range;
    use std::sync::OnceLock;

    use half::{bf16, f16};

    use super::{Elem, MAX_ROWS, Op};

    /// The instruction sets with kernels here.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Isa {
        /// AVX2 + FMA + F16C.
        Avx2,
        /// AVX-512 F (16-lane f32 vectors, f16 widening included).
        Avx512,
    }

    /// Whether this CPU runs `isa`'s kernels (checked once per set).
    pub(super) fn available(isa: Isa) -> bool {
        static AVX2: OnceLock<bool> = OnceLock::new();
        static AVX512: OnceLock<bool> = OnceLock::new();
        let avx2 = || {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        };
        match isa {
            Isa::Avx2 => *AVX2.get_or_init(avx2),
            Isa::Avx512 => *AVX512.get_or_init(|| avx2() && is_x86_feature_detected!("avx512f")),
        }
    }

    /// A vector of f32 lanes. Every method is `#[inline(always)]` and only ever inlined into
    /// the `#[target_feature]` entry points of its instruction set. The kernels call them in
    /// plain loops, never in closures (`array::map`): a closure that is not inlined is compiled
    /// without the target features, and every intrinsic in it becomes a call (bf16 at 8 rows
    /// ran 3× slower than f16 that way).
    trait Vector: Copy {
        /// Lanes.
        const LANES: usize;
        /// Architectural vector registers (AVX2 16, AVX-512 32): how many accumulators a
        /// kernel can keep in registers.
        const REGISTERS: usize;
        /// # Safety (every method)
        /// The CPU has the vector's instruction set; pointers are readable/writable for
        /// `LANES` f32.
        unsafe fn zero() -> Self;
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(p: *mut f32, v: Self);
        /// `a·b + c`.
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        /// The sum of the lanes.
        unsafe fn sum(v: Self) -> f32;
        /// Lanes `0, 1` of `a` and `b` interleaved in each 128-bit lane (`a0 b0 a1 b1`).
        unsafe fn unpack_lo(a: Self, b: Self) -> Self;
        /// Lanes `2, 3` of `a` and `b` interleaved in each 128-bit lane (`a2 b2 a3 b3`).
        unsafe fn unpack_hi(a: Self, b: Self) -> Self;
        /// Lanes `0, 1` of `a` then of `b` in each 128-bit lane (`a0 a1 b0 b1`).
        unsafe fn pairs_lo(a: Self, b: Self) -> Self;
        /// Lanes `2, 3` of `a` then of `b` in each 128-bit lane (`a2 a3 b2 b3`).
        unsafe fn pairs_hi(a: Self, b: Self) -> Self;
        /// Transposes the `LANES × LANES` tile `rows` (`LANES` vectors, a slice so that the
        /// trait needs no array length from `LANES`) in place: lane `j` of vector `i` becomes
        /// lane `i` of vector `j`. [`transpose_lane_blocks`], then a move of whole 128-bit
        /// lanes, the one step that depends on the width.
        unsafe fn transpose(rows: &mut [Self]);
    }

    /// The first two stages of a tile transpose, the same at every width: the rows
    /// interleaved in pairs, then in pairs of pairs, which transposes every 4 × 4 block that
    /// lies within one 128-bit lane of 4 rows. `N` is the tile's rows (`LANES`).
    ///
    /// # Safety
    /// The CPU has `V`'s set; `r.len() == N`, a multiple of 4.
    #[inline(always)]
    unsafe fn transpose_lane_blocks<V: Vector, const N: usize>(r: &[V]) -> [V; N] {
        // SAFETY: register operations only, under the caller's instruction set.
        unsafe {
            let mut t = [V::zero(); N];
            for i in (0..N).step_by(2) {
                t[i] = V::unpack_lo(r[i], r[i + 1]);
                t[i + 1] = V::unpack_hi(r[i], r[i + 1]);
            }
            let mut u = [V::zero(); N];
            for q in (0..N).step_by(4) {
                u[q] = V::pairs_lo(t[q], t[q + 2]);
                u[q + 1] = V::pairs_hi(t[q], t[q + 2]);
                u[q + 2] = V::pairs_lo(t[q + 1], t[q + 3]);
                u[q + 3] = V::pairs_hi(t[q + 1], t[q + 3]);
            }
            u
        }
    }

    /// `LANES` consecutive weights widened to a vector of f32 (exactly).
    trait Widen<V: Vector>: Elem {
        /// # Safety
        /// `p..p + LANES` readable; the CPU has `V`'s instruction set.
        unsafe fn widen_load(p: *const Self) -> V;
    }

    impl Vector for __m256 {
        const LANES: usize = 8;
        const REGISTERS: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY (this impl): AVX2/FMA checked by the caller; 8 floats at each pointer.
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
            }
        }
        #[inline(always)]
        unsafe fn unpack_lo(a: Self, b: Self) -> Self {
            unsafe { _mm256_unpacklo_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn unpack_hi(a: Self, b: Self) -> Self {
            unsafe { _mm256_unpackhi_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn pairs_lo(a: Self, b: Self) -> Self {
            unsafe { _mm256_shuffle_ps::<0x44>(a, b) }
        }
        #[inline(always)]
        unsafe fn pairs_hi(a: Self, b: Self) -> Self {
            unsafe { _mm256_shuffle_ps::<0xEE>(a, b) }
        }
        #[inline(always)]
        unsafe fn transpose(r: &mut [Self]) {
            assert_eq!(r.len(), 8, "an 8 × 8 tile");
            // The 4 × 4 blocks in each 128-bit half, then the halves.
            unsafe {
                let u: [Self; 8] = transpose_lane_blocks(r);
                for i in 0..4 {
                    r[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
                    r[i + 4] = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
                }
            }
        }
    }

    impl Vector for __m512 {
        const LANES: usize = 16;
        const REGISTERS: usize = 32;
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY (this impl): AVX-512F checked by the caller; 16 floats at each pointer.
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn unpack_lo(a: Self, b: Self) -> Self {
            unsafe { _mm512_unpacklo_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn unpack_hi(a: Self, b: Self) -> Self {
            unsafe { _mm512_unpackhi_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn pairs_lo(a: Self, b: Self) -> Self {
            unsafe { _mm512_shuffle_ps::<0x44>(a, b) }
        }
        #[inline(always)]
        unsafe fn pairs_hi(a: Self, b: Self) -> Self {
            unsafe { _mm512_shuffle_ps::<0xEE>(a, b) }
        }
        #[inline(always)]
        unsafe fn transpose(r: &mut [Self]) {
            assert_eq!(r.len(), 16, "a 16 × 16 tile");
            // The 4 × 4 blocks in each 128-bit lane, then the lanes, twice.
            unsafe {
                let u: [Self; 16] = transpose_lane_blocks(r);
                let mut v = [_mm512_setzero_ps(); 16];
                for j in 0..4 {
                    v[j] = _mm512_shuffle_f32x4::<0x88>(u[j], u[j + 4]);
                    v[j + 4] = _mm512_shuffle_f32x4::<0xdd>(u[j], u[j + 4]);
                    v[j + 8] = _mm512_shuffle_f32x4::<0x88>(u[j + 8], u[j + 12]);
                    v[j + 12] = _mm512_shuffle_f32x4::<0xdd>(u[j + 8], u[j + 12]);
                }
                for j in 0..8 {
                    r[j] = _mm512_shuffle_f32x4::<0x88>(v[j], v[j + 8]);
                    r[j + 8] = _mm512_shuffle_f32x4::<0xdd>(v[j], v[j + 8]);
                }
            }
        }
    }

    impl Widen<__m256> for f32 {
        #[inline(always)]
        unsafe fn widen_load(p: *const f32) -> __m256 {
            // SAFETY: 8 readable floats (caller); loadu needs no alignment.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Widen<__m256> for f16 {
        #[inline(always)]
        unsafe fn widen_load(p: *const f16) -> __m256 {
            // SAFETY: 8 readable halves = 16 bytes; F16C checked by the caller.
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
    }

    impl Widen<__m256> for bf16 {
        #[inline(always)]
        unsafe fn widen_load(p: *const bf16) -> __m256 {
            // SAFETY: 8 readable bf16 = 16 bytes; AVX2 checked by the caller. Zero-extending
            // each 16-bit value and shifting it to the top half is the exact widening.
            unsafe {
                let raw = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw))
            }
        }
    }

    impl Widen<__m512> for f32 {
        #[inline(always)]
        unsafe fn widen_load(p: *const f32) -> __m512 {
            // SAFETY: 16 readable floats (caller).
            unsafe { _mm512_loadu_ps(p) }
        }
    }

    impl Widen<__m512> for f16 {
        #[inline(always)]
        unsafe fn widen_load(p: *const f16) -> __m512 {
            // SAFETY: 16 readable halves = 32 bytes; AVX-512F checked by the caller.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        }
    }

    impl Widen<__m512> for bf16 {
        #[inline(always)]
        unsafe fn widen_load(p: *const bf16) -> __m512 {
            // SAFETY: 16 readable bf16 = 32 bytes; AVX-512F checked by the caller.
            unsafe {
                let raw = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw))
            }
        }
    }

    /// How far ahead of the current read each stream prefetches, in bytes.
    const PREFETCH: usize = 4096;

    /// Asks for the cache line `bytes` after `p` when `ON` (a hint: it never faults, even out of
    /// bounds); nothing otherwise.
    #[inline(always)]
    fn prefetch<const ON: bool, E>(p: *const E, bytes: usize) {
        if ON {
            // SAFETY: a prefetch is a hint and never dereferences; wrapping_add keeps the
            // pointer arithmetic defined even past the end of the allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(bytes)) }
        }
    }

    /// Whether the CPU's vendor is AMD (`cpuid` leaf 0 says "AuthenticAMD"; checked once).
    pub(super) fn is_amd() -> bool {
        static AMD: OnceLock<bool> = OnceLock::new();
        *AMD.get_or_init(|| {
            let id = __cpuid(0);
            let mut vendor = [0u8; 12];
            vendor[..4].copy_from_slice(&id.ebx.to_le_bytes());
            vendor[4..8].copy_from_slice(&id.edx.to_le_bytes());
            vendor[8..].copy_from_slice(&id.ecx.to_le_bytes());
            &vendor == b"AuthenticAMD"
        })
    }

    /// Reinterprets `&[E]` as `&[F]` when they are the same type (the dispatch from the generic
    /// element type to the three [`Widen`] implementations).
    fn same<E: Elem, F: Elem>(w: &[E]) -> Option<&[F]> {
        (std::any::TypeId::of::<E>() == std::any::TypeId::of::<F>()).then(|| {
            // SAFETY: E and F are the same type (checked just above).
            unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<F>(), w.len()) }
        })
    }

    /// Calls `$kernel::<$vector, T, ..>` with `$w` as the concrete element type `T` (f32, f16
    /// or bf16), the row count as a constant, under `$isa`'s target features.
    macro_rules! entry {
        ($name:ident, $features:literal, $vector:ty) => {
            /// The kernels compiled for one instruction set.
            ///
            /// # Safety
            /// The CPU has the instruction set; bounds as the safe wrappers assert.
            #[target_feature(enable = $features)]
            unsafe fn $name<E: Widen<$vector>>(op: Op<'_, E>, prefetch_one: bool) {
                // SAFETY: forwarded from the caller.
                unsafe { run::<$vector, E>(op, prefetch_one) }
            }
        };
    }

    entry!(avx2, "avx2,fma,f16c", __m256);
    entry!(avx512, "avx512f,avx2,fma,f16c", __m512);

    /// Checks `op`'s bounds and runs it with `isa`'s kernels, the batch-1 ones prefetching
    /// when `prefetch_one`.
    ///
    /// # Panics
    /// When `isa` is not available or a bound does not hold.
    pub(super) fn dispatch<E: Elem>(isa: Isa, prefetch_one: bool, op: Op<'_, E>) {
        assert!(available(isa), "{isa:?} kernels on a CPU without them");
        match &op {
            Op::Kn {
                x,
                rows,
                k,
                w,
                n,
                c0,
                t,
                acc,
            } => {
                assert!((1..=MAX_ROWS).contains(rows));
                assert!(x.len() >= rows * k && acc.len() >= rows * t && c0 + t <= *n);
                assert!(w.len() >= k * n, "weights shorter than [k, n]");
            }
            Op::Nk {
                x,
                rows,
                k,
                w,
                cols,
                out,
            } => {
                assert!((1..=MAX_ROWS).contains(rows));
                assert!(x.len() >= rows * k && out.len() >= rows * cols.len());
                assert!(w.len() >= cols.end * k, "weights shorter than [n, k]");
            }
            Op::Widen {
                w,
                width,
                stride,
                out,
                ..
            } => {
                assert!(
                    *width > 0 && out.len() % width == 0,
                    "widening into rows of {width}"
                );
                let rows = out.len() / width;
                assert!(
                    rows == 0 || (rows - 1) * stride + width <= w.len(),
                    "widening bounds"
                );
            }
        }
        /// `op` with its weights as `&[F]` when `E` is `F`, else `op` back unchanged.
        fn typed<E: Elem, F: Elem>(op: Op<'_, E>) -> Result<Op<'_, F>, Op<'_, E>> {
            if same::<E, F>(&[]).is_none() {
                return Err(op);
            }
            let cast = |w| same::<E, F>(w).unwrap_or_else(|| unreachable!("E is F, checked above"));
            Ok(match op {
                Op::Kn {
                    x,
                    rows,
                    k,
                    w,
                    n,
                    c0,
                    t,
                    acc,
                } => Op::Kn {
                    x,
                    rows,
                    k,
                    w: cast(w),
                    n,
                    c0,
                    t,
                    acc,
                },
                Op::Nk {
                    x,
                    rows,
                    k,
                    w,
                    cols,
                    out,
                } => Op::Nk {
                    x,
                    rows,
                    k,
                    w: cast(w),
                    cols,
                    out,
                },
                Op::Widen {
                    w,
                    width,
                    stride,
                    transposed,
                    out,
                } => Op::Widen {
                    w: cast(w),
                    width,
                    stride,
                    transposed,
                    out,
                },
            })
        }
        macro_rules! go {
            ($op:expr) => {
                // SAFETY: the instruction set is available and the bounds hold (asserted
                // above).
                unsafe {
                    match isa {
                        Isa::Avx2 => avx2($op, prefetch_one),
                        Isa::Avx512 => avx512($op, prefetch_one),
                    }
                }
            };
        }
        let op = match typed::<E, f32>(op) {
            Ok(op) => return go!(op),
            Err(op) => op,
        };
        let op = match typed::<E, f16>(op) {
            Ok(op) => return go!(op),
            Err(op) => op,
        };
        match typed::<E, bf16>(op) {
            Ok(op) => go!(op),
            Err(op) => op.portable(),
        }
    }

    /// `op` with the row count as a constant: the broadcasts of `x` leave the inner loops and
    /// the row loops unroll. Batch-1 kernels prefetch when `prefetch_one`, the others always.
    ///
    /// # Safety
    /// As the entry points'.
    #[inline(always)]
    unsafe fn run<V: Vector, E: Widen<V>>(op: Op<'_, E>, prefetch_one: bool) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match op {
                // With AVX-512's 32 registers, 2..=8 rows take [`kn_blocked`] with as many column
                // vectors per strip as the registers allow (rows × strip accumulators, a
                // widened weight per vector and a broadcast: ≤ 30 registers). AVX2's 16 hold no
                // useful block at 8 rows (one vector per strip read f32 at 13-16 GiB/s against
                // [`kn`]'s 17-19), so AVX2 keeps [`kn`].
                Op::Kn {
                    x,
                    rows,
                    k,
                    w,
                    n,
                    c0,
                    t,
                    acc,
                } => match (rows, V::REGISTERS >= 32) {
                    (1, _) if prefetch_one => kn_one::<V, E, true>(x, k, w, n, c0, t, acc),
                    (1, _) => kn_one::<V, E, false>(x, k, w, n, c0, t, acc),
                    (2, true) => kn_blocked::<V, E, 2, 8>(x, k, w, n, c0, t, acc),
                    (3, true) => kn_blocked::<V, E, 3, 6>(x, k, w, n, c0, t, acc),
                    (4, true) => kn_blocked::<V, E, 4, 5>(x, k, w, n, c0, t, acc),
                    (5, true) => kn_blocked::<V, E, 5, 4>(x, k, w, n, c0, t, acc),
                    (6, true) => kn_blocked::<V, E, 6, 4>(x, k, w, n, c0, t, acc),
                    (7, true) => kn_blocked::<V, E, 7, 3>(x, k, w, n, c0, t, acc),
                    (_, true) => kn_blocked::<V, E, 8, 3>(x, k, w, n, c0, t, acc),
                    (2, false) => kn::<V, E, 2>(x, k, w, n, c0, t, acc),
                    (3, false) => kn::<V, E, 3>(x, k, w, n, c0, t, acc),
                    (4, false) => kn::<V, E, 4>(x, k, w, n, c0, t, acc),
                    (5, false) => kn::<V, E, 5>(x, k, w, n, c0, t, acc),
                    (6, false) => kn::<V, E, 6>(x, k, w, n, c0, t, acc),
                    (7, false) => kn::<V, E, 7>(x, k, w, n, c0, t, acc),
                    (_, false) => kn::<V, E, 8>(x, k, w, n, c0, t, acc),
                },
                // As many streams as the registers allow: rows × streams accumulators plus a
                // register per stream and one for `x`, ≤ 8 accumulators with AVX2's 16
                // registers, ≤ 24 with AVX-512's 32. With one stream at 8 rows, each weight
                // vector cost 8 loads of `x`: the AVX-512 kernel read the head at 11-14 GiB/s,
                // 19-20 with three streams (#14's note).
                Op::Nk {
                    x,
                    rows,
                    k,
                    w,
                    cols,
                    out,
                } => match (rows, V::REGISTERS >= 32) {
                    (1, _) if prefetch_one => nk::<V, E, 1, 4, true>(x, k, w, cols, out),
                    (1, _) => nk::<V, E, 1, 4, false>(x, k, w, cols, out),
                    (2, true) => nk::<V, E, 2, 8, true>(x, k, w, cols, out),
                    (3, true) => nk::<V, E, 3, 6, true>(x, k, w, cols, out),
                    (4, true) => nk::<V, E, 4, 4, true>(x, k, w, cols, out),
                    (5, true) => nk::<V, E, 5, 4, true>(x, k, w, cols, out),
                    (6, true) => nk::<V, E, 6, 3, true>(x, k, w, cols, out),
                    (7, true) => nk::<V, E, 7, 3, true>(x, k, w, cols, out),
                    (_, true) => nk::<V, E, 8, 3, true>(x, k, w, cols, out),
                    (2, false) => nk::<V, E, 2, 4, true>(x, k, w, cols, out),
                    (3, false) => nk::<V, E, 3, 2, true>(x, k, w, cols, out),
                    (4, false) => nk::<V, E, 4, 2, true>(x, k, w, cols, out),
                    (5, false) => nk::<V, E, 5, 1, true>(x, k, w, cols, out),
                    (6, false) => nk::<V, E, 6, 1, true>(x, k, w, cols, out),
                    (7, false) => nk::<V, E, 7, 1, true>(x, k, w, cols, out),
                    (_, false) => nk::<V, E, 8, 1, true>(x, k, w, cols, out),
                },
                Op::Widen {
                    w,
                    width,
                    stride,
                    transposed: false,
                    out,
                } => widen::<V, E>(w, width, stride, out),
                Op::Widen {
                    w,
                    width,
                    stride,
                    transposed: true,
                    out,
                } => widen_transposed::<V, E>(w, width, stride, out),
            }
        }
    }

    /// [`super::Op::Widen`] a vector at a time (half's slice conversion calls a function per
    /// eight f16 values through copies; bf16 outside this entry point gets SSE2's four lanes).
    ///
    /// # Safety
    /// The CPU has `V`'s set; `width > 0`, `out.len()` a multiple of `width` and
    /// `(rows - 1)·stride + width ≤ w.len()` for `rows = out.len() / width`.
    #[inline(always)]
    unsafe fn widen<V: Vector, E: Widen<V>>(w: &[E], width: usize, stride: usize, out: &mut [f32]) {
        let body = width - width % V::LANES;
        for (r, out) in out.chunks_exact_mut(width).enumerate() {
            let w = &w[r * stride..r * stride + width];
            for i in (0..body).step_by(V::LANES) {
                // SAFETY: i + LANES ≤ body ≤ width = w.len() = out.len().
                unsafe { V::store(out.as_mut_ptr().add(i), E::widen_load(w.as_ptr().add(i))) }
            }
            for (o, v) in out[body..].iter_mut().zip(&w[body..]) {
                *o = v.widen();
            }
        }
    }

    /// [`super::Op::Widen`] into the transposed block, `LANES × LANES` tiles at a time: each
    /// tile's rows widened from `w`, transposed in registers ([`Vector::transpose`]) and stored
    /// as `LANES` contiguous vectors of `out`; the edges that fill no whole tile one entry at a
    /// time.
    ///
    /// # Safety
    /// As [`widen`].
    #[inline(always)]
    unsafe fn widen_transposed<V: Vector, E: Widen<V>>(
        w: &[E],
        width: usize,
        stride: usize,
        out: &mut [f32],
    ) {
        let l = V::LANES;
        let rows = out.len() / width;
        let (rb, wb) = (rows - rows % l, width - width % l);
        // SAFETY: V::zero needs only the instruction set (caller).
        let mut tile = [unsafe { V::zero() }; 16];
        let tile = &mut tile[..l];
        let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
        for r0 in (0..rb).step_by(l) {
            for j0 in (0..wb).step_by(l) {
                // SAFETY: rows r0 + i < rb ≤ rows are read at (r0 + i)·stride + j0 + 0..LANES ≤
                // (rows - 1)·stride + width ≤ w.len(); out's rows j0 + i < wb ≤ width are
                // written at (j0 + i)·rows + r0 + 0..LANES ≤ width·rows = out.len().
                unsafe {
                    for (i, t) in tile.iter_mut().enumerate() {
                        *t = E::widen_load(wp.add((r0 + i) * stride + j0));
                    }
                    V::transpose(tile);
                    for (i, t) in tile.iter().enumerate() {
                        V::store(op.add((j0 + i) * rows + r0), *t);
                    }
                }
            }
        }
        for r in 0..rows {
            let from = if r < rb { wb } else { 0 };
            for j in from..width {
                out[j * rows + r] = w[r * stride + j].widen();
            }
        }
    }

    /// Batch-1 `kn` (the memory-bound case): eight rows of `W` an eighth of `k` apart at a time
    /// (eight independent memory streams, each prefetched [`PREFETCH`] bytes ahead when `PF`,
    /// continuing into its next row's segment at the end of a segment), two vectors of columns
    /// at a time, each weight vector used once. One sequential stream per core read ~16 GB/s on
    /// the first 2-core dev VM, four or eight prefetched ones ~38 (C read loop; #14's note); on
    /// the AMD EPYC VM eight streams read 31-34 GB/s unprefetched, 23-29 prefetched.
    ///
    /// # Safety
    /// The CPU has `V`'s set; `x: [1, k]`, `acc: [1, t]`, `w: [k, n]` with `c0 + t ≤ n`.
    #[inline(always)]
    unsafe fn kn_one<V: Vector, E: Widen<V>, const PF: bool>(
        x: &[f32],
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        const S: usize = 8;
        let l = V::LANES;
        let step = 2 * l;
        let tv = t / step * step;
        let q = k / S;
        let size = std::mem::size_of::<E>();
        let gap = (n - t) * size;
        let xp = x.as_ptr();
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): rows of W are i + s·q < S·q ≤ k (then S·q..k one by one) at
        // columns c0 + j + 0..2·LANES ≤ c0 + t ≤ n; x at a row index < k; acc at j + 0..2·LANES
        // ≤ t. Prefetches only hint and may point anywhere.
        unsafe {
            for i in 0..q {
                let rows: [usize; S] = std::array::from_fn(|s| i + s * q);
                let ws = rows.map(|row| wp.add(row * n + c0));
                let mut xb = [V::zero(); S];
                for s in 0..S {
                    xb[s] = V::splat(*xp.add(rows[s]));
                }
                // Columns whose prefetch lands in the same row segment, then those whose
                // prefetch crosses into the next row's segment (`gap` further on): two loops
                // with a constant offset each, rather than a select per step.
                let near = ((t * size).saturating_sub(PREFETCH) / size)
                    .next_multiple_of(step)
                    .min(tv);
                kn_one_span::<V, E, PF>(&ws, &xb, ap, 0..near, PREFETCH);
                kn_one_span::<V, E, PF>(&ws, &xb, ap, near..tv, PREFETCH + gap);
                for j in tv..t {
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

    /// The vector steps of [`kn_one`] over columns `cols` (a multiple of two vectors wide):
    /// `acc[j] += Σ_s W_s[j]·x_s` for the eight streams `ws`, each prefetched `ahead` bytes
    /// past its current read. Inlined with `ahead` a constant in the near span, so the
    /// prefetches take an address displacement and the eight stream pointers, the column index
    /// and `acc` stay in registers.
    ///
    /// # Safety
    /// The CPU has `V`'s set; `ws[s] + j + 0..2·LANES` readable and `ap + j + 0..2·LANES`
    /// writable for `j` in `cols` (stepping two vectors).
    #[inline(always)]
    unsafe fn kn_one_span<V: Vector, E: Widen<V>, const PF: bool>(
        ws: &[*const E; 8],
        xb: &[V; 8],
        ap: *mut f32,
        cols: Range<usize>,
        ahead: usize,
    ) {
        let l = V::LANES;
        let mut j = cols.start;
        // SAFETY: the bounds are the caller's; prefetches only hint.
        unsafe {
            while j < cols.end {
                let a = ap.add(j);
                let mut s0 = V::load(a);
                let mut s1 = V::load(a.add(l));
                for s in 0..8 {
                    let p = ws[s].add(j);
                    prefetch::<PF, E>(p, ahead);
                    s0 = V::fma(E::widen_load(p), xb[s], s0);
                    s1 = V::fma(E::widen_load(p.add(l)), xb[s], s1);
                }
                V::store(a, s0);
                V::store(a.add(l), s1);
                j += 2 * l;
            }
        }
    }

    /// Rows of `W` per panel of [`kn_blocked`]: its accumulators stay in registers while a
    /// panel passes, so they are loaded and stored once per panel. Sixteen rows for 16-bit
    /// weights; eight for f32, whose strips are twice as many bytes wide (sixteen f32 rows made
    /// an 8-row decode step ~15% slower than [`kn`]; eight matched it).
    const fn panel<E>() -> usize {
        if std::mem::size_of::<E>() == 4 { 8 } else { 16 }
    }

    /// `kn` for `R` rows of `x`, register-blocked: for each panel of [`panel`] consecutive rows
    /// of `W`, strips of `C` vectors of columns, whose `R × C` accumulators stay in registers
    /// while the panel's rows pass; each widened weight vector serves every row of `x` and each
    /// broadcast of `x` serves `C` vectors. Each line of `W` is prefetched one panel ahead.
    /// [`kn`] instead reloads and stores the accumulators for every weight vector and, at
    /// 8 rows, spills its 32 broadcasts: on the AMD EPYC VM (2026-12-04, `cargo bench -p
    /// em-benches --bench kernels -- 'avx512_hw_kn_(f32|f16|bf16)_r(4|8)$'`, two alternating
    /// rounds) 8 rows read f16 at 13.7/14.8 GiB/s against [`kn`]'s 10.4/12.3, bf16 at
    /// 14.4/14.0 against 9.4/11.8; 4 rows are within noise.
    ///
    /// # Safety
    /// The CPU has `V`'s set; `x: [R, k]`, `acc: [R, t]`, `w: [k, n]` with `c0 + t ≤ n`.
    #[inline(always)]
    unsafe fn kn_blocked<V: Vector, E: Widen<V>, const R: usize, const C: usize>(
        x: &[f32],
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        let l = V::LANES;
        let tb = t / (C * l) * (C * l);
        let tv = t / l * l;
        let xp = x.as_ptr();
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): W at rows i < k, columns c0 + j + 0..C·LANES ≤ c0 + tb (or
        // + LANES ≤ c0 + tv, or one ≤ c0 + t) ≤ n; x at r·k + i < R·k; acc at
        // r·t + j + 0..C·LANES ≤ R·t likewise.
        unsafe {
            let panel = panel::<E>();
            let ahead = panel * n * std::mem::size_of::<E>();
            for i0 in (0..k).step_by(panel) {
                let rows = i0..(i0 + panel).min(k);
                let mut j = 0;
                while j < tb {
                    let (w, a) = (wp.add(c0 + j), ap.add(j));
                    kn_strip::<V, E, R, C>(xp, k, w, n, rows.clone(), a, t, ahead);
                    j += C * l;
                }
                while j < tv {
                    let (w, a) = (wp.add(c0 + j), ap.add(j));
                    kn_strip::<V, E, R, 1>(xp, k, w, n, rows.clone(), a, t, ahead);
                    j += l;
                }
            }
            // The columns past the last vector, once for all k rows.
            for j in tv..t {
                for r in 0..R {
                    let a = &mut *ap.add(r * t + j);
                    for i in 0..k {
                        *a = (*wp.add(i * n + c0 + j))
                            .widen()
                            .mul_add(*xp.add(r * k + i), *a);
                    }
                }
            }
        }
    }

    /// One strip of [`kn_blocked`]:
    /// `acc[r, 0..C·LANES] += Σ_{i ∈ rows} x[r, i]·W[i, 0..C·LANES]` for `r < R`, with `w` at
    /// `W[0, strip]` (rows `n` apart) and `a` at `acc[0, strip]` (rows `t` apart). Each line of
    /// `W` is prefetched `ahead` bytes (one panel) ahead.
    ///
    /// # Safety
    /// The CPU has `V`'s set; `w + i·n + 0..C·LANES` readable for `i` in `rows`, `x + r·k + i`
    /// readable and `a + r·t + 0..C·LANES` writable for `r < R`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kn_strip<V: Vector, E: Widen<V>, const R: usize, const C: usize>(
        xp: *const f32,
        k: usize,
        w: *const E,
        n: usize,
        rows: Range<usize>,
        a: *mut f32,
        t: usize,
        ahead: usize,
    ) {
        let l = V::LANES;
        // SAFETY: the bounds are the caller's; prefetches only hint.
        unsafe {
            let mut s = [[V::zero(); C]; R];
            for r in 0..R {
                for c in 0..C {
                    s[r][c] = V::load(a.add(r * t + c * l));
                }
            }
            for i in rows {
                let wr = w.add(i * n);
                let mut v = [V::zero(); C];
                for c in 0..C {
                    // One prefetch per cache line of the strip (a constant condition).
                    if (c * l * std::mem::size_of::<E>()).is_multiple_of(64) {
                        prefetch::<true, E>(wr.add(c * l), ahead);
                    }
                    v[c] = E::widen_load(wr.add(c * l));
                }
                for r in 0..R {
                    let xb = V::splat(*xp.add(r * k + i));
                    for c in 0..C {
                        s[r][c] = V::fma(v[c], xb, s[r][c]);
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    V::store(a.add(r * t + c * l), s[r][c]);
                }
            }
        }
    }

    /// `kn` for `R` rows of `x`: four rows of `W` a quarter of `k` apart at a time (four
    /// prefetched streams), one vector of columns at a time; each widened weight vector is used
    /// for every row of `x`. (Two vectors at a time kept eight widened vectors live, which LLVM
    /// re-widened for every row rather than spill: bf16 at 8 rows ran 3× slower than f16.)
    ///
    /// # Safety
    /// The CPU has `V`'s set; `x: [R, k]`, `acc: [R, t]`, `w: [k, n]` with `c0 + t ≤ n`.
    #[inline(always)]
    unsafe fn kn<V: Vector, E: Widen<V>, const R: usize>(
        x: &[f32],
        k: usize,
        w: &[E],
        n: usize,
        c0: usize,
        t: usize,
        acc: &mut [f32],
    ) {
        const S: usize = 4;
        let l = V::LANES;
        let tv = t / l * l;
        let q = k / S;
        let size = std::mem::size_of::<E>();
        let gap = (n - t) * size;
        let xp = x.as_ptr();
        let ap = acc.as_mut_ptr();
        let wp = w.as_ptr();
        // SAFETY (whole block): rows of W are i + s·q < 4q ≤ k (then 4q..k one by one) at
        // columns c0 + j + 0..LANES ≤ c0 + t ≤ n; x at r·k + row < R·k; acc at
        // r·t + j + 0..LANES ≤ R·t. Prefetches only hint and may point anywhere.
        unsafe {
            for i in 0..q {
                let rows: [usize; S] = std::array::from_fn(|s| i + s * q);
                let ws = rows.map(|row| wp.add(row * n + c0));
                let mut xb = [[V::zero(); S]; R];
                for r in 0..R {
                    for s in 0..S {
                        xb[r][s] = V::splat(*xp.add(r * k + rows[s]));
                    }
                }
                let mut j = 0;
                while j < tv {
                    let ahead = j * size + PREFETCH;
                    let ahead = if ahead < t * size { ahead } else { ahead + gap };
                    for p in ws {
                        prefetch::<true, E>(p, ahead);
                    }
                    let mut v = [V::zero(); S];
                    for s in 0..S {
                        v[s] = E::widen_load(ws[s].add(j));
                    }
                    for (r, xb) in xb.iter().enumerate() {
                        let a = ap.add(r * t + j);
                        let mut acc = V::load(a);
                        for s in 0..S {
                            acc = V::fma(v[s], xb[s], acc);
                        }
                        V::store(a, acc);
                    }
                    j += l;
                }
                for j in tv..t {
                    for r in 0..R {
                        let a = &mut *ap.add(r * t + j);
                        for (&row, wq) in rows.iter().zip(ws) {
                            *a = (*wq.add(j)).widen().mul_add(*xp.add(r * k + row), *a);
                        }
                    }
                }
            }
            for i in S * q..k {
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

    /// `S` outputs `cols.len() / S` apart at a time (`S` memory streams, each prefetched one
    /// row of `W` ahead when `PF`), each a row of `W` dotted with the `R` rows of `x` in f32
    /// lanes, then summed across lanes. The outputs left over (`cols.len() % S`) take the same
    /// arithmetic one at a time, so an output's value does not depend on where `cols` starts or
    /// ends (a decode product's column ranges are cut while it runs).
    ///
    /// # Safety
    /// The CPU has `V`'s set; `x: [R, k]`, `w: [n, k]` with `cols.end ≤ n`,
    /// `out: [R, cols.len()]`.
    #[inline(always)]
    unsafe fn nk<V: Vector, E: Widen<V>, const R: usize, const S: usize, const PF: bool>(
        x: &[f32],
        k: usize,
        w: &[E],
        cols: Range<usize>,
        out: &mut [f32],
    ) {
        let width = cols.len();
        let q = width / S;
        let wp = w.as_ptr();
        // SAFETY (whole block): W rows cols.start + at < cols.end ≤ n, read by `nk_dots` at
        // row·k + 0..k; x is [R, k]; out at r·width + at < R·width.
        unsafe {
            for at in 0..q {
                let ats: [usize; S] = std::array::from_fn(|s| at + s * q);
                let dots =
                    nk_dots::<V, E, R, S, PF>(x, k, ats.map(|a| wp.add((cols.start + a) * k)));
                for (r, dots) in dots.iter().enumerate() {
                    for s in 0..S {
                        *out.get_unchecked_mut(r * width + ats[s]) = dots[s];
                    }
                }
            }
            for at in S * q..width {
                let dots = nk_dots::<V, E, R, 1, false>(x, k, [wp.add((cols.start + at) * k)]);
                for (r, dot) in dots.iter().enumerate() {
                    *out.get_unchecked_mut(r * width + at) = dot[0];
                }
            }
        }
    }

    /// The dot products of `S` rows of `W` (starting at `wr`, `k` entries each) with the `R`
    /// rows of `x`, `[R][S]`: f32 lanes along `k`, summed across lanes, then the last
    /// `k % LANES` entries in order.
    ///
    /// # Safety
    /// The CPU has `V`'s set; `x: [R, k]`; each `wr[s]` points at `k` readable entries.
    #[inline(always)]
    unsafe fn nk_dots<V: Vector, E: Widen<V>, const R: usize, const S: usize, const PF: bool>(
        x: &[f32],
        k: usize,
        wr: [*const E; S],
    ) -> [[f32; S]; R] {
        let l = V::LANES;
        let kv = k / l * l;
        let row_bytes = k * std::mem::size_of::<E>();
        let xp = x.as_ptr();
        // SAFETY: reads W's rows at wr[s] + 0..k and x's at r·k + 0..k, within bounds by the
        // contract; prefetches only hint.
        unsafe {
            let mut acc = [[V::zero(); S]; R];
            let mut i = 0;
            while i < kv {
                let mut v = [V::zero(); S];
                for s in 0..S {
                    prefetch::<PF, E>(wr[s].add(i), row_bytes);
                    v[s] = E::widen_load(wr[s].add(i));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = V::load(xp.add(r * k + i));
                    for s in 0..S {
                        a[s] = V::fma(v[s], xv, a[s]);
                    }
                }
                i += l;
            }
            let mut dots = [[0.0f32; S]; R];
            for (r, a) in acc.iter().enumerate() {
                for s in 0..S {
                    let mut sum = V::sum(a[s]);
                    for i in kv..k {
                        sum = (*wr[s].add(i)).widen().mul_add(*xp.add(r * k + i), sum);
                    }
                    dots[r][s] = sum;
                }
            }
            dots
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    //! No SIMD kernels off x86-64: [`super::Kernels::detect`] picks the portable ones.
    use super::{Elem, Op};

    /// The instruction sets with kernels (none here).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Isa {
        /// Never available off x86-64.
        Avx2,
        /// Never available off x86-64.
        Avx512,
    }

    pub(super) fn available(_: Isa) -> bool {
        false
    }

    pub(super) fn dispatch<E: Elem>(_: Isa, _: bool, op: Op<'_, E>) {
        op.portable()
    }

    pub(super) fn is_amd() -> bool {
        false
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

    fn check(kernels: Kernels, dtype: DType, layout: Layout, rows: usize, shape: [usize; 2]) {
        check_product(&kernels.name(), dtype, layout, rows, shape, &|x, w| {
            matmul_rows(kernels, x, rows, w, layout, shape)
        });
    }

    /// `product(x, W)` against the oracle, for `W` stored in `dtype`.
    fn check_product(
        name: &str,
        dtype: DType,
        layout: Layout,
        rows: usize,
        [k, n]: [usize; 2],
        product: &dyn Fn(&[f32], Weights<'_>) -> Vec<f32>,
    ) {
        let x = values(rows as u64 * 31 + k as u64, rows * k);
        let raw = values(n as u64 * 17 + k as u64, k * n);
        // The weights as stored (rounded to the dtype) and their exact f32 values.
        let (exact, y) = match dtype {
            DType::F16 => {
                let w: Vec<f16> = raw.iter().map(|&v| f16::from_f32(v)).collect();
                let exact = w.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
                (exact, product(&x, Weights::F16(&w)))
            }
            DType::BF16 => {
                let w: Vec<bf16> = raw.iter().map(|&v| bf16::from_f32(v)).collect();
                let exact = w.iter().map(|v| v.to_f32()).collect::<Vec<_>>();
                (exact, product(&x, Weights::Bf16(&w)))
            }
            _ => (raw.clone(), product(&x, Weights::F32(&raw))),
        };
        let want = reference(&x, rows, &exact, layout, [k, n]);
        assert_eq!(y.len(), want.len());
        // f32 accumulation of k products of magnitude ≤ 1: error ≤ k·2⁻²⁴·Σ|terms| ≤ k²·6e-8.
        let tol = (k * k) as f64 * 6e-8 + 1e-6;
        for (i, (&got, &want)) in y.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= tol,
                "{name} {dtype:?} {layout:?} rows {rows} [{k}, {n}] at {i}: {got} vs {want}"
            );
        }
    }

    /// Every kernel, width, layout and row count against the f64 oracle, on shapes with SIMD
    /// tails in both `k` and `n` and on a decode-like shape.
    #[test]
    fn kernels_match_the_f64_product() {
        for kernels in Kernels::available() {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                for layout in [Layout::KN, Layout::NK] {
                    for rows in 1..=MAX_ROWS {
                        for shape in [[1, 1], [37, 45], [64, 128], [130, 300]] {
                            check(kernels, dtype, layout, rows, shape);
                        }
                    }
                }
            }
        }
    }

    /// A product's value does not depend on how its columns are cut between tasks: for every
    /// kernel, width, layout and row count, `x·W` over column ranges cut at multiples of 16 (as
    /// [`Schedule`]'s are) equals the single-range product bit for bit, and so do two `[n, k]`
    /// products of one `matmul_rows_all` call on pools of 1-3 threads, whose guided ranges cut
    /// them in several places (at least `MIN_RANGE_BYTES / (70 · 4)` = 234 columns of 1203 for
    /// f32, 468 for 16 bits). With a scalar tail for the `width % S` outputs left after the
    /// kernel's `S` streams, an output's value depended on where its range ended (AVX-512 at
    /// three, six, seven and eight rows takes three or six streams).
    #[test]
    fn products_do_not_depend_on_the_column_cuts() {
        let [k, n] = [70, 1203];
        let x = values(7, MAX_ROWS * k);
        let raw = values(11, k * n);
        let (w16, wb16): (Vec<f16>, Vec<bf16>) = raw
            .iter()
            .map(|&v| (f16::from_f32(v), bf16::from_f32(v)))
            .unzip();
        let pools: Vec<rayon::ThreadPool> = (1..=3)
            .map(|t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .expect("a rayon pool")
            })
            .collect();
        for kernels in Kernels::available() {
            for weights in [Weights::F32(&raw), Weights::F16(&w16), Weights::Bf16(&wb16)] {
                for layout in [Layout::KN, Layout::NK] {
                    for rows in 1..=MAX_ROWS {
                        let x = &x[..rows * k];
                        let whole = match weights {
                            Weights::F32(w) => columns(kernels, x, rows, w, layout, [k, n], 0..n),
                            Weights::F16(w) => columns(kernels, x, rows, w, layout, [k, n], 0..n),
                            Weights::Bf16(w) => columns(kernels, x, rows, w, layout, [k, n], 0..n),
                        };
                        let name = format!("{} {layout:?} rows {rows}", kernels.name());
                        for cuts in [&[16, 48, 64, 112, 192][..], &[32, 80, 96, 128, 144, 176]] {
                            let mut got = vec![0.0f32; rows * n];
                            let bounds: Vec<usize> = std::iter::once(0)
                                .chain(cuts.iter().copied())
                                .chain([n])
                                .collect();
                            for cols in bounds.windows(2).map(|b| b[0]..b[1]) {
                                let part = match weights {
                                    Weights::F32(w) => {
                                        columns(kernels, x, rows, w, layout, [k, n], cols.clone())
                                    }
                                    Weights::F16(w) => {
                                        columns(kernels, x, rows, w, layout, [k, n], cols.clone())
                                    }
                                    Weights::Bf16(w) => {
                                        columns(kernels, x, rows, w, layout, [k, n], cols.clone())
                                    }
                                };
                                for r in 0..rows {
                                    got[r * n + cols.start..r * n + cols.end].copy_from_slice(
                                        &part[r * cols.len()..(r + 1) * cols.len()],
                                    );
                                }
                            }
                            assert!(
                                got.iter()
                                    .zip(&whole)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{name}: cut at {cuts:?}"
                            );
                        }
                        // `[n, k]` products take the guided ranges (`[k, n]` ones take one
                        // range per thread, or rows of `W` with their partial products summed).
                        if layout == Layout::KN {
                            continue;
                        }
                        for pool in &pools {
                            // Two products of one region (the second the first rows of `W`).
                            let n2 = 48;
                            let w2 = weights.slice(0..n2 * k);
                            let ys = pool.install(|| {
                                matmul_rows_all(
                                    kernels,
                                    x,
                                    rows,
                                    &[(weights, n), (w2, n2)],
                                    layout,
                                    k,
                                )
                            });
                            let threads = pool.current_num_threads();
                            assert!(
                                ys[0]
                                    .iter()
                                    .zip(&whole)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{name}: {threads} threads"
                            );
                            for r in 0..rows {
                                assert!(
                                    ys[1][r * n2..(r + 1) * n2]
                                        .iter()
                                        .zip(&whole[r * n..r * n + n2])
                                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                                    "{name}: {threads} threads, second product"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tiles wider than one accumulator tile, and products cut into many column ranges.
    #[test]
    fn wide_outputs_cover_every_tile() {
        for kernels in Kernels::available() {
            check(kernels, DType::F32, Layout::KN, 1, [12, 20_000]);
            check(kernels, DType::BF16, Layout::KN, 8, [9, 3000]);
            check(kernels, DType::F16, Layout::NK, 2, [40, 5000]);
            check(kernels, DType::BF16, Layout::NK, 8, [40, 3001]);
            // One row: both of the batch-1 kernel's column spans (prefetch within the row
            // segment, then across into the next row's), and several of its wider tiles per
            // thread.
            check(kernels, DType::F16, Layout::KN, 1, [20, 5000]);
            check(kernels, DType::F16, Layout::KN, 1, [5, 140_000]);
            check(kernels, DType::BF16, Layout::KN, 1, [17, 3000]);
        }
    }

    /// The prefill product (chunks widened to f32, gemm) for every width and layout, on row
    /// counts on both sides of the decode limit and on shapes with one chunk, several chunks
    /// per task (`[300, 2100]` on two threads: 256 rows, then 44) and the four tasks per thread
    /// of wide `[k, n]` weights (`n` > 16384).
    #[cfg(feature = "flex")]
    #[test]
    fn widened_products_match_the_f64_product() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for layout in [Layout::KN, Layout::NK] {
                for rows in [1, 9, 40] {
                    for shape in [[1, 1], [37, 45], [130, 300], [300, 2100], [3, 16_400]] {
                        check_product("widened", dtype, layout, rows, shape, &|x, w| {
                            matmul_widened(x, rows, w, layout, shape)
                        });
                    }
                }
            }
        }
    }

    /// The widening op of every kernel kind against half's scalar conversions (an independent
    /// implementation), bit for bit, on every special value (zeros of both signs, subnormals,
    /// the extremes, infinities; a NaN must stay NaN: half quiets a signalling bf16 NaN, the
    /// exact shift keeps it signalling), contiguous and as rows gathered from a strided block,
    /// at widths around the vector widths, stored as they are and transposed.
    #[test]
    fn widening_matches_half_bit_for_bit() {
        let mut bits: Vec<u16> = vec![0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0xfbff];
        bits.extend([0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfe01, 0x3c00, 0x3555]);
        bits.extend([0x0080, 0x007f, 0x7f80, 0xff80, 0x7fc0, 0xff81, 0x3f80]); // bf16 specials
        bits.extend((0..4099u32).map(|i| (i.wrapping_mul(40_503) >> 3) as u16));
        /// `Op::Widen` of `w` by `kernels` against `oracle` entry by entry.
        fn check<E: Elem + std::fmt::Debug>(
            kernels: Kernels,
            w: &[E],
            [width, stride, rows]: [usize; 3],
            oracle: fn(E) -> f32,
        ) {
            for transposed in [false, true] {
                let mut got = vec![f32::NAN; rows * width];
                kernels.run(Op::Widen {
                    w,
                    width,
                    stride,
                    transposed,
                    out: &mut got,
                });
                for (i, &g) in got.iter().enumerate() {
                    // Entry (r, j) of the block sits at r·width + j, or j·rows + r transposed.
                    let (r, j) = if transposed {
                        (i % rows, i / rows)
                    } else {
                        (i / width, i % width)
                    };
                    let v = w[r * stride + j];
                    let want = oracle(v);
                    assert!(
                        g.to_bits() == want.to_bits() || g.is_nan() && want.is_nan(),
                        "{kernels:?} {width}/{stride} transposed {transposed} {i}: {g} vs {v:?}"
                    );
                }
            }
        }
        let halves: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let brains: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        // (width, stride, rows): one contiguous row of each length, then strided gathers.
        let mut shapes: Vec<[usize; 3]> = [1, 7, 8, 15, 16, 17, 33, 100, bits.len()]
            .map(|len| [len, len, 1])
            .to_vec();
        shapes.extend([
            [5, 9, 7],
            [16, 40, 11],
            [33, 33, 9],
            [47, 100, 40],
            [0x100, 0x111, 15],
            // Whole transposing tiles only (8 and 16 lanes), and tiles with edges both ways.
            [32, 32, 32],
            [64, 70, 48],
        ]);
        shapes.push([1, 1, 0]);
        for shape @ [width, stride, rows] in shapes {
            let take = if rows == 0 {
                0
            } else {
                (rows - 1) * stride + width
            };
            for kernels in Kernels::available() {
                check(kernels, &halves[..take], shape, f16::to_f32);
                check(kernels, &brains[..take], shape, bf16::to_f32);
            }
        }
    }

    /// Products of one `x` with several matrices in one call (a layer's q/k/v or gate/up):
    /// each against the f64 oracle and bit for bit what it gives alone, on two and four
    /// threads, on `k` split by rows (130) and by columns (12, fewer rows than 8 per thread).
    #[test]
    fn several_products_match_the_f64_product_and_each_alone() {
        let ns = [45, 300, 17];
        for threads in [2, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a test pool");
            for kernels in Kernels::available() {
                for layout in [Layout::KN, Layout::NK] {
                    for rows in [1, 3, 8] {
                        for k in [12, 130] {
                            let x = values(rows as u64 + k as u64, rows * k);
                            let raw: Vec<Vec<f32>> =
                                ns.iter().map(|&n| values(n as u64 * 7, k * n)).collect();
                            let stored: Vec<Vec<bf16>> = raw
                                .iter()
                                .map(|w| w.iter().map(|&v| bf16::from_f32(v)).collect())
                                .collect();
                            let parts: Vec<(Weights<'_>, usize)> = stored
                                .iter()
                                .zip(ns)
                                .map(|(w, n)| (Weights::Bf16(w), n))
                                .collect();
                            let (all, alone): (Vec<Vec<f32>>, Vec<Vec<f32>>) = pool.install(|| {
                                let all = matmul_rows_all(kernels, &x, rows, &parts, layout, k);
                                let alone = parts
                                    .iter()
                                    .map(|&(w, n)| {
                                        matmul_rows(kernels, &x, rows, w, layout, [k, n])
                                    })
                                    .collect();
                                (all, alone)
                            });
                            assert_eq!(all.len(), ns.len());
                            for (i, n) in ns.into_iter().enumerate() {
                                let exact: Vec<f32> =
                                    stored[i].iter().map(|v| v.to_f32()).collect();
                                let want = reference(&x, rows, &exact, layout, [k, n]);
                                let tol = (k * k) as f64 * 6e-8 + 1e-6;
                                assert_eq!(all[i].len(), want.len());
                                for (j, (&got, &want)) in all[i].iter().zip(&want).enumerate() {
                                    assert!(
                                        (f64::from(got) - want).abs() <= tol,
                                        "{kernels:?} {layout:?} {threads} threads rows {rows} \
                                         k {k} part {i} at {j}: {got} vs {want}"
                                    );
                                }
                                assert_eq!(all[i], alone[i], "part {i} differs from alone");
                            }
                        }
                    }
                }
            }
        }
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
