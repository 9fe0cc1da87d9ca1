use std::time::Duration;
#[test]
fn smoke() {
    let rt = kvant::Runtime::builder().workers(2).quantum(None).build().unwrap();
    assert_eq!(rt.block_on(|| 6 * 7), 42);
    let hs: Vec<_> = (0..1000u64).map(|i| rt.spawn(move || { kvant::yield_now(); i })).collect();
    let s: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(s, 999 * 1000 / 2);
    let r = rt.block_on(|| {
        let a = kvant::spawn(|| { kvant::sleep(Duration::from_millis(5)); 1 });
        let b = kvant::spawn(|| panic!("boom"));
        (a.join().unwrap(), b.join().unwrap_err().is_panic())
    });
    assert_eq!(r, (1, true));
    let m = rt.metrics();
    eprintln!("{:?}", m.total());
    let rep = rt.shutdown_timeout(Duration::from_secs(1));
    eprintln!("{rep:?}");
}
