//! Measures the CPU seconds of every canonical HumanEval and MBPP solution in the sandbox and
//! writes `em-grade/data/reference_cpu.json` (atomically), which sets each problem's CPU budget.
//! Run it on an idle machine:
//!
//! ```sh
//! cargo run --release -p em-grade --example reference_cpu            # least of 3 runs, 1 worker
//! cargo run --release -p em-grade --example reference_cpu -- 5 2     # least of 5 runs, 2 workers
//! ```

use em_grade::problems::{Benchmark, data_dir};
use em_grade::reference::{ReferenceTimes, measure, write_times};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let repeats: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let workers: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    let mut times = ReferenceTimes::new();
    for b in [Benchmark::HumanEval, Benchmark::Mbpp] {
        let started = std::time::Instant::now();
        let measured = measure(b, &data_dir(), repeats, Some(workers))?;
        let (slowest_id, slowest) = measured
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(id, s)| (id.clone(), *s))
            .unwrap_or_default();
        eprintln!(
            "{}: {} solutions, total {:.2} CPU s, slowest {slowest_id} {slowest:.3} s ({:.0} s wall)",
            b.name(),
            measured.len(),
            measured.values().sum::<f64>(),
            started.elapsed().as_secs_f64()
        );
        times.insert(b.name().to_string(), measured);
    }
    write_times(&data_dir(), &times)?;
    eprintln!(
        "wrote {}",
        data_dir().join(em_grade::reference::FILE).display()
    );
    Ok(())
}
