//! Staying responsive when something never answers.
//!
//! ```text
//! cargo run --release --example timeouts
//! ```
//!
//! A "server" that never answers sits beside two that do. A caller that
//! waits for it without a deadline is stuck for as long as the server is;
//! every bounded wait kvant offers (`join_timeout`, `wait(..,
//! WaitFor::FirstCompleted)`, `recv_timeout`, `select!` with a timeout)
//! gives the caller its answer, or its "no answer", on time. Then the late
//! server is aborted, so it does not hold on to its worker and memory.

use std::time::{Duration, Instant};

use kvant::channel::{after, unbounded};
use kvant::task::{WaitFor, wait_owned};

fn main() {
    let rt = kvant::Runtime::builder().workers(2).build().unwrap();
    let deadline = Duration::from_millis(100);
    let t0 = Instant::now();
    let at = |t: Instant| format!("{:>6.1} ms", t.duration_since(t0).as_secs_f64() * 1e3);

    // The servers: each answers on a channel after its delay; one never does.
    let (tx, answers) = unbounded::<&'static str>();
    let server = |name: &'static str, delay: Option<Duration>| {
        let tx = tx.clone();
        rt.spawn(move || {
            match delay {
                Some(d) => kvant::sleep(d),
                None => kvant::sleep(Duration::from_secs(24 * 3600)), // never answers
            }
            let _ = tx.send(name);
            name
        })
    };
    let fast = server("fast", Some(Duration::from_millis(10)));
    let slow = server("slow", Some(Duration::from_millis(40)));
    let silent = server("silent", None);

    // 1. Without a deadline: a caller that joins the silent server hangs.
    //    (Here a task does it, and we only watch it for 200 ms.)
    let silent_abort = silent.abort_handle();
    let stuck = rt.spawn(move || silent.join().map(|_| ()));
    let stuck = match stuck.join_timeout(Duration::from_millis(200)) {
        Ok(_) => unreachable!("the silent server answered"),
        Err(h) => {
            println!(
                "{}  join() without a deadline: still waiting after 200 ms (and would wait a day)",
                at(Instant::now())
            );
            h
        }
    };

    // 2. join_timeout: the answer, or the handle back to decide.
    match fast.join_timeout(deadline) {
        Ok(r) => println!(
            "{}  join_timeout: {} answered",
            at(Instant::now()),
            r.unwrap()
        ),
        Err(_) => println!("{}  join_timeout: no answer in time", at(Instant::now())),
    }

    // 3. wait(.., FirstCompleted): whichever of several answers first.
    let w = wait_owned(vec![slow], Some(deadline), WaitFor::FirstCompleted);
    for (_, r) in &w.done {
        println!(
            "{}  wait(FirstCompleted): {} answered",
            at(Instant::now()),
            r.as_ref().unwrap()
        );
    }

    // 4. recv_timeout on the answers channel: two answers came, a third never does.
    let mut got = Vec::new();
    while let Ok(a) = answers.recv_timeout(deadline) {
        got.push(a);
    }
    println!(
        "{}  recv_timeout: got {got:?}, then nothing for {deadline:?}: gave up",
        at(Instant::now())
    );

    // 5. select! with a timeout arm: an answer or the timer, whichever first.
    kvant::select! {
        recv(answers) -> a => println!("{}  select!: {}", at(Instant::now()), a.unwrap()),
        recv(after(deadline)) -> _ => {
            println!("{}  select!: the {deadline:?} timer fired first", at(Instant::now()))
        }
    }

    // The silent server is cancelled: unwound at its sleep, destructors run.
    silent_abort.abort();
    let r = stuck.join();
    println!(
        "{}  aborted the silent server: the stuck caller's join now returns {}",
        at(Instant::now()),
        match r {
            Ok(Err(e)) if e.is_cancelled() => format!("its error at once: {e}"),
            Ok(Err(e)) => format!("its error: {e}"),
            Ok(Ok(())) => "a value".to_string(),
            Err(e) => format!("{e}"),
        }
    );
    println!(
        "\nEvery bounded wait returned within {deadline:?} of its start; the unbounded one would\n\
         have waited as long as the server. Bound every wait on work you do not control, and\n\
         cancel what nobody waits for any more (abort), so it stops using a worker."
    );
}
