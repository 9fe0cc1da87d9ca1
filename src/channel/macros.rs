//! `select!` and `select_biased!`: crossbeam-channel's syntax over kvant
//! channels. Both expand through `__kvant_select!`, which parses the arms
//! one at a time, evaluates every channel operand once, in order, inside a
//! `match` (so temporaries in an operand live as long as the select), runs
//! the engine (`select.rs`), and runs the selected arm.

/// Wait on several channel operations and run the arm of the one that
/// completes first (crossbeam-channel's `select!`).
///
/// Arms, separated by commas (optional after a block):
///
/// - `recv(r) -> v => body`: `v` is `Result<T, RecvError>` (an error once
///   every sender is gone);
/// - `send(s, msg) -> res => body`: `msg` is evaluated only if this arm is
///   selected, and then sent at once (the place or the receiver it goes to
///   was reserved at the selection); `res` is `Result<(), SendError<T>>`;
/// - `default => body` (or `default() => body`): run if no operation is
///   ready now (no waiting);
/// - `default(timeout) => body`: run if none became ready within `timeout`.
///
/// Without a `default` arm it waits as long as it takes. Among ready
/// operations each is chosen with equal probability ([`select_biased!`](crate::select_biased):
/// the first written). Inside a task only the green thread parks; on an OS
/// thread it blocks. A non-blocking or timed select is linearizable: it
/// runs `default` only if at some moment during the call no operation was
/// ready. See [`channel::Select`](crate::channel::Select) for the same
/// engine built at run time.
///
/// ```
/// use std::time::Duration;
/// use kvant::channel::{after, unbounded};
///
/// let (tx, rx) = unbounded::<u32>();
/// let (_quit_tx, quit) = unbounded::<()>();
/// tx.send(5).unwrap();
/// let got = kvant::select! {
///     recv(rx) -> v => v.unwrap(),
///     recv(quit) -> _ => 0,
///     recv(after(Duration::from_secs(1))) -> _ => 1,
/// };
/// assert_eq!(got, 5);
///
/// let timed_out = kvant::select! {
///     recv(quit) -> _ => false,
///     default(Duration::from_millis(10)) => true,
/// };
/// assert!(timed_out);
/// ```
#[macro_export]
macro_rules! select {
    ($($tokens:tt)*) => {
        $crate::__kvant_select!(@parse false [] [] $($tokens)*)
    };
}

/// [`select!`] that prefers the first written among ready operations
/// (crossbeam-channel's `select_biased!`): a later arm runs only when no
/// earlier one is ready.
///
/// ```
/// use kvant::channel::unbounded;
///
/// let (urgent_tx, urgent) = unbounded();
/// let (normal_tx, normal) = unbounded();
/// normal_tx.send("normal").unwrap();
/// urgent_tx.send("urgent").unwrap();
/// let first = kvant::select_biased! {
///     recv(urgent) -> m => m.unwrap(),
///     recv(normal) -> m => m.unwrap(),
/// };
/// assert_eq!(first, "urgent");
/// ```
#[macro_export]
macro_rules! select_biased {
    ($($tokens:tt)*) => {
        $crate::__kvant_select!(@parse true [] [] $($tokens)*)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __kvant_select {
    // Arm heads: `@body` splits off the body and the comma after it.
    (@parse $b:tt $arms:tt $def:tt recv($r:expr $(,)?) -> $v:pat => $($rest:tt)*) => {
        $crate::__kvant_select!(@body $b $arms $def (recv [$r] [$v]) $($rest)*)
    };
    (@parse $b:tt $arms:tt $def:tt send($s:expr, $m:expr $(,)?) -> $res:pat => $($rest:tt)*) => {
        $crate::__kvant_select!(@body $b $arms $def (send [$s] [$m] [$res]) $($rest)*)
    };
    (@parse $b:tt $arms:tt [] default () => $($rest:tt)*) => {
        $crate::__kvant_select!(@body $b $arms [] (now) $($rest)*)
    };
    (@parse $b:tt $arms:tt [] default => $($rest:tt)*) => {
        $crate::__kvant_select!(@body $b $arms [] (now) $($rest)*)
    };
    (@parse $b:tt $arms:tt [] default($t:expr $(,)?) => $($rest:tt)*) => {
        $crate::__kvant_select!(@body $b $arms [] (timeout [$t]) $($rest)*)
    };
    (@parse $b:tt $arms:tt [$($def:tt)+] default $($rest:tt)*) => {
        ::core::compile_error!("kvant::select!: more than one `default` arm")
    };
    (@parse $b:tt $arms:tt $def:tt) => {
        $crate::__kvant_select!(@build $b [] $arms $def)
    };
    (@parse $b:tt $arms:tt $def:tt $($bad:tt)+) => {
        ::core::compile_error!(
            "kvant::select!: expected `recv(r) -> v => body`, `send(s, msg) -> res => body`, \
             `default => body` or `default(timeout) => body`, separated by commas"
        )
    };

    // Bodies: a block needs no comma after it; an expression does, unless
    // it is the last arm.
    (@body $b:tt $arms:tt $def:tt $head:tt $body:block , $($rest:tt)*) => {
        $crate::__kvant_select!(@push $b $arms $def $head [$body] $($rest)*)
    };
    (@body $b:tt $arms:tt $def:tt $head:tt $body:block $($rest:tt)*) => {
        $crate::__kvant_select!(@push $b $arms $def $head [$body] $($rest)*)
    };
    (@body $b:tt $arms:tt $def:tt $head:tt $body:expr , $($rest:tt)*) => {
        $crate::__kvant_select!(@push $b $arms $def $head [$body] $($rest)*)
    };
    (@body $b:tt $arms:tt $def:tt $head:tt $body:expr) => {
        $crate::__kvant_select!(@push $b $arms $def $head [$body])
    };
    (@push $b:tt $arms:tt [] (now) $body:tt $($rest:tt)*) => {
        $crate::__kvant_select!(@parse $b $arms [(now $body)] $($rest)*)
    };
    (@push $b:tt $arms:tt [] (timeout $t:tt) $body:tt $($rest:tt)*) => {
        $crate::__kvant_select!(@parse $b $arms [(timeout $t $body)] $($rest)*)
    };
    (@push $b:tt [$($arms:tt)*] $def:tt ($($head:tt)*) $body:tt $($rest:tt)*) => {
        $crate::__kvant_select!(@parse $b [$($arms)* ($($head)* $body)] $def $($rest)*)
    };

    // Evaluate each operand once, in order; each expansion level's `op` is
    // its own hygienic binding.
    (@build $b:tt [$($done:tt)*] [(recv [$r:expr] [$v:pat] [$body:expr]) $($todo:tt)*] $def:tt) => {
        match $r {
            ref __kvant_rx => {
                let __kvant_rx: &$crate::channel::Receiver<_> = __kvant_rx;
                #[allow(unused_mut)]
                let mut op = $crate::channel::internal::RecvOp::new(__kvant_rx);
                $crate::__kvant_select!(@build $b [$($done)* (op recv [$v] [$body])] [$($todo)*] $def)
            }
        }
    };
    (@build $b:tt [$($done:tt)*] [(send [$s:expr] [$m:expr] [$res:pat] [$body:expr]) $($todo:tt)*] $def:tt) => {
        match $s {
            ref __kvant_tx => {
                let __kvant_tx: &$crate::channel::Sender<_> = __kvant_tx;
                #[allow(unused_mut)]
                let mut op = $crate::channel::internal::SendOp::new(__kvant_tx);
                $crate::__kvant_select!(@build $b [$($done)* (op send [$m] [$res] [$body])] [$($todo)*] $def)
            }
        }
    };
    (@build $b:tt [$(($op:ident $kind:ident $($rest:tt)*))*] [] [$($def:tt)*]) => {{
        let __kvant_until = $crate::__kvant_select!(@until [$($def)*]);
        let _ = $crate::channel::internal::run(
            &mut [$(&mut $op as &mut dyn $crate::channel::internal::Op<'_>),*],
            __kvant_until,
            $b,
        );
        $crate::__kvant_select!(@dispatch [$(($op $kind $($rest)*))*] [$($def)*])
    }};

    (@until []) => { $crate::channel::internal::Until::Deadline(::core::option::Option::None) };
    (@until [(now $body:tt)]) => { $crate::channel::internal::Until::Now };
    (@until [(timeout [$t:expr] $body:tt)]) => { $crate::channel::internal::Until::after($t) };

    (@dispatch [($op:ident recv [$v:pat] [$body:expr]) $($rest:tt)*] $def:tt) => {
        if $op.won() {
            let $v = $op.take();
            $body
        } else {
            $crate::__kvant_select!(@dispatch [$($rest)*] $def)
        }
    };
    (@dispatch [($op:ident send [$m:expr] [$res:pat] [$body:expr]) $($rest:tt)*] $def:tt) => {
        if $op.won() {
            let $res = $op.send($m);
            $body
        } else {
            $crate::__kvant_select!(@dispatch [$($rest)*] $def)
        }
    };
    (@dispatch [] []) => {
        ::core::unreachable!("kvant::select! returned without an operation")
    };
    (@dispatch [] [(now [$body:expr])]) => { $body };
    (@dispatch [] [(timeout $t:tt [$body:expr])]) => { $body };
}
