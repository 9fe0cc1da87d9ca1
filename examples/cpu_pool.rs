//! A CPU-bound job on a pool of green threads: render the Mandelbrot set.
//!
//! ```text
//! cargo run --release --example cpu_pool
//! cargo run --release --example cpu_pool -- --workers 8 --size 2400
//! ```
//!
//! The image is cut into horizontal bands, one task each. Bands that cross
//! the set cost up to the iteration limit per pixel, bands outside it cost a
//! few iterations: uneven work, which idle workers balance by stealing. The
//! same job runs on 1 worker, then on N; the demo prints both times, the
//! speed-up, checks that both images are identical, and writes the image as
//! a PNG file (browsers open it) to the temporary directory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Render the Mandelbrot set on 1 worker, then on N, and compare")]
struct Args {
    /// Workers for the parallel run (default: available parallelism).
    #[arg(long)]
    workers: Option<usize>,
    /// Image width in pixels (height is 3/4 of it).
    #[arg(long, default_value_t = 1600)]
    size: usize,
    /// Iteration limit per pixel.
    #[arg(long, default_value_t = 1000)]
    max_iter: u32,
    /// Rows per task.
    #[arg(long, default_value_t = 8)]
    band: usize,
    /// Where to write the image (default: <temp dir>/kvant-mandelbrot.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Escape time of `c = cx + i*cy`, scaled to a grey level (black inside the set).
fn pixel(cx: f64, cy: f64, max_iter: u32) -> u8 {
    let (mut x, mut y) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i < max_iter && x * x + y * y <= 4.0 {
        let t = x * x - y * y + cx;
        y = 2.0 * x * y + cy;
        x = t;
        i += 1;
    }
    if i == max_iter {
        0
    } else {
        // A log scale spreads the many low counts over the grey range.
        (255.0 * (i.max(1) as f64).ln() / (max_iter.max(2) as f64).ln()) as u8
    }
}

/// Rows `[y0, y1)` of a `w` x `h` view of [-2.5, 1] x [-1.3125, 1.3125].
fn band(y0: usize, y1: usize, w: usize, h: usize, max_iter: u32) -> Vec<u8> {
    let (x_min, x_max, y_span) = (-2.5, 1.0, 2.625);
    let mut out = Vec::with_capacity((y1 - y0) * w);
    for py in y0..y1 {
        let cy = y_span / 2.0 - y_span * (py as f64 + 0.5) / h as f64;
        for px in 0..w {
            let cx = x_min + (x_max - x_min) * (px as f64 + 0.5) / w as f64;
            out.push(pixel(cx, cy, max_iter));
        }
    }
    out
}

/// Render the whole image with one task per band on a runtime of `workers`.
fn render(workers: usize, args: &Args) -> (Vec<u8>, Duration, kvant::WorkerMetrics) {
    let (w, max_iter) = (args.size, args.max_iter);
    let h = w * 3 / 4;
    let rt = kvant::Runtime::builder()
        .workers(workers)
        .build()
        .expect("build runtime");
    let t0 = Instant::now();
    let handles: Vec<_> = (0..h)
        .step_by(args.band.max(1))
        .map(|y0| {
            let y1 = (y0 + args.band.max(1)).min(h);
            rt.spawn(move || band(y0, y1, w, h, max_iter))
        })
        .collect();
    let mut image = Vec::with_capacity(w * h);
    for hd in handles {
        image.extend(hd.join().expect("band task"));
    }
    let elapsed = t0.elapsed();
    (image, elapsed, rt.metrics().total())
}

/// FNV-1a: a short fingerprint to print next to "identical".
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn main() {
    let args = Args::parse();
    let n = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
        .max(1);
    let (w, h) = (args.size, args.size * 3 / 4);
    let tasks = h.div_ceil(args.band.max(1));
    println!(
        "Mandelbrot {w}x{h}, up to {} iterations per pixel, {tasks} tasks of {} rows",
        args.max_iter,
        args.band.max(1)
    );

    let (one, t1, _) = render(1, &args);
    println!("1 worker : {:>8.1} ms", t1.as_secs_f64() * 1e3);
    let (many, tn, m) = render(n, &args);
    println!(
        "{n} worker{}: {:>8.1} ms   speed-up x{:.2}   ({} steal operations, {} preemptions)",
        if n == 1 { " " } else { "s" },
        tn.as_secs_f64() * 1e3,
        t1.as_secs_f64() / tn.as_secs_f64(),
        m.steal_ops,
        m.preemptions,
    );
    if std::thread::available_parallelism().is_ok_and(|p| p.get() < n) {
        println!(
            "(only {} CPUs here: expect less)",
            std::thread::available_parallelism().unwrap()
        );
    }

    if one != many {
        eprintln!("MISMATCH: the two renders differ");
        std::process::exit(1);
    }
    println!("images identical (fnv1a {:016x})", fnv(&one));

    let path = args
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("kvant-mandelbrot.png"));
    let written = png_grey(w, h, &many)
        .map_err(|e| e.to_string())
        .and_then(|png| std::fs::write(&path, png).map_err(|e| e.to_string()));
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// A greyscale PNG of `pixels` (row-major, one byte each), by the `png` crate.
fn png_grey(w: usize, h: usize, pixels: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w as u32, h as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels[..w * h])?;
    writer.finish()?;
    Ok(out)
}
