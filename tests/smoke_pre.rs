use std::time::{Duration, Instant};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[test]
fn hogs_share() {
    let rt = kvant::Runtime::builder().workers(1).quantum(Some(Duration::from_millis(1))).build().unwrap();
    let stop = Instant::now() + Duration::from_millis(300);
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let hs: Vec<_> = (0..4).map(|i| { let c = counts.clone(); rt.spawn(move || { while Instant::now() < stop { c[i].fetch_add(1, Ordering::Relaxed); } }) }).collect();
    for h in hs { h.join().unwrap(); }
    let v: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    eprintln!("{v:?} {:?}", rt.metrics().total());
}
