//! `cargo bench --bench chart` (run by `just bench` after its parts): draws
//! target/bench/scaling.svg from target/bench/scale.json and pipe.json:
//! messages per second against workers (threads) or concurrency (messages
//! in flight) for the lanes and keys schedulers, the async handler and
//! `--handler pipe` (Python asyncio), every message waiting 1 ms of I/O,
//! next to the ideal line (N times one synchronous worker).

use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

const OUT: &str = "target/bench/scaling.svg";

/// (x, median msg/s) points of the rows of `kind` and `scheduler`.
fn series(rows: &[Value], pick: impl Fn(&Value) -> Option<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = rows.iter().filter_map(pick).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn read(path: &str) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(scale) = read("target/bench/scale.json") else {
        eprintln!("chart: no target/bench/scale.json (run just bench-scale first); nothing drawn");
        return Ok(());
    };
    let rows = scale["rows"].as_array().cloned().unwrap_or_default();
    let rate = |r: &Value| r["median_msgs_per_s"].as_f64();
    let sync = |name: &'static str| {
        series(&rows, move |r| {
            (r["kind"] == "scaling" && r["scheduler"] == name)
                .then(|| Some((r["workers"].as_f64()?, rate(r)?)))
                .flatten()
        })
    };
    let lanes = sync("lanes");
    let keys = sync("keys");
    let asynch = series(&rows, |r| {
        (r["kind"] == "async")
            .then(|| Some((r["concurrency"].as_f64()?, rate(r)?)))
            .flatten()
    });
    let pipe_rows = read("target/bench/pipe.json")
        .and_then(|p| p["rows"].as_array().cloned())
        .unwrap_or_default();
    let pipe = series(&pipe_rows, |r| {
        (r["name"].as_str()?.starts_with("pipe-1ms-p1-m") && r["processes"] == 1)
            .then(|| Some((r["inflight"].as_f64()?, rate(r)?)))
            .flatten()
    });
    // One synchronous worker: the ideal is N times it.
    let one = keys.first().or(lanes.first()).map_or(900.0, |p| p.1);
    let max_x = [&lanes, &keys, &asynch, &pipe]
        .iter()
        .flat_map(|s| s.iter().map(|p| p.0))
        .fold(128.0_f64, f64::max);
    let max_y = [&lanes, &keys, &asynch, &pipe]
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(one * max_x, f64::max);

    let machine = scale["machine"]["cpu"].as_str().unwrap_or("this machine");
    let cores = scale["machine"]["cores"].as_u64().unwrap_or(0);
    let caption = format!(
        "msg/s with 1 ms of I/O per message, 1,000 keys ({machine}, {cores} cores, commit {})",
        scale["git_commit"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(7)
            .collect::<String>()
    );
    std::fs::create_dir_all(Path::new(OUT).parent().expect("has a parent"))?;
    let root = SVGBackend::new(OUT, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (1.0..max_x * 1.2).log_scale(),
            (one * 0.5..max_y * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("workers (threads) or concurrency (messages in flight)")
        .y_desc("msg/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y >= 1e6 {
                format!("{:.0}M", y / 1e6)
            } else {
                format!("{:.0}k", y / 1e3)
            }
        })
        .draw()?;
    let ideal: Vec<(f64, f64)> = [1.0, max_x].iter().map(|x| (*x, one * x)).collect();
    chart
        .draw_series(LineSeries::new(ideal, BLACK.stroke_width(1)))?
        .label("ideal: N x one synchronous worker")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (name, points, color) in [
        ("lanes scheduler (threads)", &lanes, RED),
        ("keys scheduler (threads)", &keys, BLUE),
        ("async handler (tasks)", &asynch, GREEN),
        ("pipe, Python asyncio, 1 process", &pipe, MAGENTA),
    ] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    eprintln!("chart: wrote {OUT}");
    Ok(())
}
