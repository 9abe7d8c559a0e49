//! The warm-up storm: 1,000 functions × 10,000 calls on 2 threads, every
//! function crossing its threshold at once, on kiln-std and (feature
//! `beadie`) on beadie 0.3, each with its defaults. See
//! `kiln_examples::storm` for the workload.
//!
//! ```sh
//! cargo run --release -p kiln-examples --features beadie --example storm
//! cargo run --release -p kiln-examples --features beadie,plot --example storm -- --plot docs/storm.png
//! ```
//!
//! Options: `--beads N` (1000), `--calls N` per bead (10000), `--threads N`
//! (2), `--compile-us N` spun per compile (0), `--zipf S` for a skewed
//! distribution (default uniform), `--busy N` spinning threads (0),
//! `--interpret-work N` extra steps per interpreted call (0), `--bucket-us N`
//! curve resolution (500), `--runs N` per broker, reported as medians (3),
//! `--plot FILE` (feature `plot`).
//!
//! One line per broker starts with `STORM ` for scripts to grep.

use std::time::Duration;

use kiln_examples::storm::{self, Distribution, KilnStd, Plan, StormConfig, StormRun};

const USAGE: &str = "usage: storm [--beads N] [--calls N] [--threads N] [--compile-us N] [--zipf S] [--busy N] \
                     [--interpret-work N] [--bucket-us N] [--runs N] [--plot FILE]";

/// Settings of this program beyond the storm itself.
struct Options {
    runs: usize,
    plot: Option<String>,
}

fn parse() -> (StormConfig, Options) {
    let mut config = StormConfig::default();
    let mut options = Options { runs: 3, plot: None };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{flag} needs a value\n{USAGE}"));
        let number = |text: String| -> u64 { text.parse().unwrap_or_else(|_| panic!("{flag}: not a number\n{USAGE}")) };
        match flag.as_str() {
            "--beads" => config.beads = number(value()) as usize,
            "--calls" => config.calls = number(value()),
            "--threads" => config.threads = number(value()) as usize,
            "--compile-us" => config.compile_cost = Duration::from_micros(number(value())),
            "--zipf" => {
                let exponent: f64 = value().parse().unwrap_or_else(|_| panic!("--zipf: not a number\n{USAGE}"));
                config.distribution = Distribution::Zipf(exponent);
            }
            "--busy" => config.busy = number(value()) as usize,
            "--interpret-work" => config.interpret_work = number(value()) as u32,
            "--bucket-us" => config.bucket = Duration::from_micros(number(value()).max(1)),
            "--runs" => options.runs = (number(value()) as usize).max(1),
            "--plot" => options.plot = Some(value()),
            _ => panic!("unknown argument {flag}\n{USAGE}"),
        }
    }
    (config, options)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn ms_or_never(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "never".to_string(), |at| format!("{:.2}", ms(at)))
}

/// The median of the runs' figures, and the run whose native share is the
/// median (its curve is the one shown).
struct Summary {
    broker: &'static str,
    native_percent: f64,
    wall_ms: f64,
    /// Median over the runs where it happened; `None` if in half or more of
    /// the runs it never did.
    hottest_tenth_ms: Option<f64>,
    all_native_ms: Option<f64>,
    native_beads: f64,
    runs: usize,
    median_run: StormRun,
}

fn median_of_present(values: Vec<Option<f64>>) -> Option<f64> {
    let runs = values.len();
    let present: Vec<f64> = values.into_iter().flatten().collect();
    (present.len() * 2 > runs).then(|| storm::median(present))
}

fn summarise(mut runs: Vec<StormRun>) -> Summary {
    let native_percent = storm::median(runs.iter().map(|run| run.native_share() * 100.0).collect());
    let wall_ms = storm::median(runs.iter().map(|run| ms(run.wall)).collect());
    let hottest_tenth_ms = median_of_present(runs.iter().map(|run| run.hottest_tenth_native.map(ms)).collect());
    let all_native_ms = median_of_present(runs.iter().map(|run| run.all_native.map(ms)).collect());
    let native_beads = storm::median(runs.iter().map(|run| run.native_beads as f64).collect());
    let count = runs.len();
    runs.sort_by(|a, b| a.native_share().total_cmp(&b.native_share()));
    let median_run = runs.swap_remove(runs.len() / 2);
    Summary {
        broker: median_run.broker,
        native_percent,
        wall_ms,
        hottest_tenth_ms,
        all_native_ms,
        native_beads,
        runs: count,
        median_run,
    }
}

fn print_run(index: usize, run: &StormRun) {
    println!(
        "run {index} {:<11} native {:5.1}%  wall {:7.2} ms  hottest 10% native at {:>7} ms  all native at {:>7} ms  ({} beads native)",
        run.broker,
        run.native_share() * 100.0,
        ms(run.wall),
        ms_or_never(run.hottest_tenth_native),
        ms_or_never(run.all_native),
        run.native_beads
    );
}

fn print_summary(summary: &Summary, config: &StormConfig) {
    let optional = |value: Option<f64>| value.map_or_else(|| "never".to_string(), |ms| format!("{ms:.2}"));
    println!(
        "STORM broker={} native_pct={:.1} wall_ms={:.2} hot10_ms={} all_native_ms={} native_beads={} runs={} \
         beads={} calls={} threads={} dist={} compile_us={} busy={} interpret_work={}",
        summary.broker,
        summary.native_percent,
        summary.wall_ms,
        optional(summary.hottest_tenth_ms),
        optional(summary.all_native_ms),
        summary.native_beads,
        summary.runs,
        config.beads,
        config.calls,
        config.threads,
        config.distribution,
        config.compile_cost.as_micros(),
        config.busy,
        config.interpret_work,
    );
}

/// The median runs' curves side by side, at most about 25 rows.
fn print_curves(summaries: &[Summary], bucket: Duration) {
    let buckets = summaries.iter().map(|summary| summary.median_run.curve.len()).max().unwrap_or(0);
    let step = buckets.div_ceil(25).max(1);
    print!("{:>9}", "t (ms)");
    for summary in summaries {
        print!("  {:>11}", summary.broker);
    }
    println!("   (share of calls running native per {} µs bucket, median run)", bucket.as_micros());
    for index in (0..buckets).step_by(step) {
        print!("{:>9.2}", ms(bucket * index as u32));
        for summary in summaries {
            match summary.median_run.curve.get(index) {
                Some(Some(share)) => print!("  {:>10.1}%", share * 100.0),
                Some(None) => print!("  {:>11}", "(no calls)"),
                None => print!("  {:>11}", "(done)"),
            }
        }
        println!();
    }
}

fn main() {
    env_logger::init();
    let (config, options) = parse();
    println!(
        "storm: {} beads x {} calls on {} threads, {}, compile {} µs, {} busy threads, interpret work {}, {} runs per broker (medians), each broker with its defaults",
        config.beads,
        config.calls,
        config.threads,
        config.distribution,
        config.compile_cost.as_micros(),
        config.busy,
        config.interpret_work,
        options.runs
    );
    let plan = Plan::new(&config);
    let mut kiln_runs = Vec::new();
    #[cfg(feature = "beadie")]
    let mut beadie_runs = Vec::new();
    // The brokers take turns, so a burst of load from elsewhere hits both.
    for index in 1..=options.runs {
        let run = storm::run::<KilnStd>(&config, &plan);
        print_run(index, &run);
        kiln_runs.push(run);
        #[cfg(feature = "beadie")]
        {
            let run = storm::run::<storm::Beadie03>(&config, &plan);
            print_run(index, &run);
            beadie_runs.push(run);
        }
    }
    #[allow(unused_mut)] // Only the `beadie` feature adds a second summary.
    let mut summaries = vec![summarise(kiln_runs)];
    #[cfg(feature = "beadie")]
    summaries.push(summarise(beadie_runs));
    #[cfg(not(feature = "beadie"))]
    println!("(beadie 0.3 not built: add --features beadie to run it beside kiln-std)");
    println!();
    print_curves(&summaries, config.bucket);
    println!();
    for summary in &summaries {
        print_summary(summary, &config);
    }
    if let Some(path) = options.plot {
        draw(&path, &summaries, &config);
    }
}

#[cfg(not(feature = "plot"))]
fn draw(path: &str, _summaries: &[Summary], _config: &StormConfig) {
    println!("not drawing {path}: built without the `plot` feature (--features beadie,plot)");
}

#[cfg(feature = "plot")]
fn draw(path: &str, summaries: &[Summary], config: &StormConfig) {
    // The plot is a by-product: a machine without fonts still gets the figures.
    match std::panic::catch_unwind(|| plot(path, summaries, config)) {
        Ok(Ok(())) => println!("wrote {path}"),
        Ok(Err(error)) => println!("could not draw {path} ({error}); the figures above stand"),
        Err(_) => println!("could not draw {path} (the plotting library panicked); the figures above stand"),
    }
}

/// The share-native curves of the median runs, on one chart.
#[cfg(feature = "plot")]
fn plot(path: &str, summaries: &[Summary], config: &StormConfig) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let bucket_ms = ms(config.bucket);
    let end_ms =
        summaries.iter().map(|summary| summary.median_run.curve.len() as f64 * bucket_ms).fold(bucket_ms, f64::max);
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "warm-up storm: {} functions x {} calls on {} threads ({}), share of calls running native",
        config.beads, config.calls, config.threads, config.distribution
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end_ms, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("time since the first call (ms)")
        .y_desc(format!("calls running native (%, per {} µs)", config.bucket.as_micros()))
        .draw()?;
    let colors = [RGBColor(214, 39, 40), RGBColor(31, 119, 180)];
    for (summary, color) in summaries.iter().zip(colors) {
        // Each bucket drawn at its middle; buckets without calls (the
        // callers were descheduled) are left out.
        let points = summary
            .median_run
            .curve
            .iter()
            .enumerate()
            .filter_map(|(index, share)| share.map(|share| ((index as f64 + 0.5) * bucket_ms, share * 100.0)));
        let label = format!(
            "{}: {:.1} % of calls native, {:.1} ms, hottest 10 % native at {} ms (median of {} runs)",
            summary.broker,
            summary.native_percent,
            summary.wall_ms,
            summary.hottest_tenth_ms.map_or_else(|| "never".to_string(), |at| format!("{at:.2}")),
            summary.runs,
        );
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(3)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
