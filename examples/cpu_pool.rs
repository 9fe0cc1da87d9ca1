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
    match std::fs::write(&path, png_grey(w, h, &many)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// A greyscale PNG of `pixels` (row-major, one byte each). Written by hand
/// to stay dependency-free: zlib "stored" (uncompressed) deflate blocks,
/// which every PNG reader accepts; the file is about the size of the pixels.
fn png_grey(w: usize, h: usize, pixels: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    // Scanlines, each with filter type 0.
    let mut raw = Vec::with_capacity((w + 1) * h);
    for row in pixels.chunks(w).take(h) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    // zlib: header, stored blocks of at most 65535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());

    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit greyscale, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}
