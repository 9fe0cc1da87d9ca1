//! The `select!` macro: crossbeam-channel's syntax over kvant channels.

/// Wait on several channel operations and run the arm of the one that
/// completes first (crossbeam-channel's `select!`).
///
/// Arms, separated by commas (optional after a block):
///
/// - `recv(r) -> v => body`: `v` is `Result<T, RecvError>` (an error once
///   every sender is gone);
/// - `send(s, msg) -> res => body`: `msg` is evaluated only if this arm is
///   selected; `res` is `Result<(), SendError<T>>`;
/// - `default => body`: run if no operation is ready now (no waiting);
/// - `default(timeout) => body`: run if none became ready within `timeout`.
///
/// Without a `default` arm it waits as long as it takes. Among ready
/// operations the choice is random, so none starves. Inside a task only the
/// green thread parks; on an OS thread it blocks. See
/// [`channel::Select`](crate::channel::Select) for the exact rules.
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
    // Parse the arms into [(kind args body)...] and the default.
    (@parse [$($arms:tt)*] [$($def:tt)*]) => {
        $crate::select!(@build [] [$($arms)*] [$($def)*])
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] recv($r:expr) -> $v:pat => $body:block , $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (recv [$r] [$v] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] recv($r:expr) -> $v:pat => $body:block $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (recv [$r] [$v] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] recv($r:expr) -> $v:pat => $body:expr , $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (recv [$r] [$v] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] recv($r:expr) -> $v:pat => $body:expr) => {
        $crate::select!(@parse [$($arms)* (recv [$r] [$v] [$body])] [$($def)*])
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] send($s:expr, $m:expr) -> $res:pat => $body:block , $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (send [$s] [$m] [$res] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] send($s:expr, $m:expr) -> $res:pat => $body:block $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (send [$s] [$m] [$res] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] send($s:expr, $m:expr) -> $res:pat => $body:expr , $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)* (send [$s] [$m] [$res] [$body])] [$($def)*] $($rest)*)
    };
    (@parse [$($arms:tt)*] [$($def:tt)*] send($s:expr, $m:expr) -> $res:pat => $body:expr) => {
        $crate::select!(@parse [$($arms)* (send [$s] [$m] [$res] [$body])] [$($def)*])
    };
    (@parse [$($arms:tt)*] [] default($t:expr) => $body:block $(,)? $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)*] [(timeout [$t] [$body])] $($rest)*)
    };
    (@parse [$($arms:tt)*] [] default($t:expr) => $body:expr $(, $($rest:tt)*)?) => {
        $crate::select!(@parse [$($arms)*] [(timeout [$t] [$body])] $($($rest)*)?)
    };
    (@parse [$($arms:tt)*] [] default => $body:block $(,)? $($rest:tt)*) => {
        $crate::select!(@parse [$($arms)*] [(now [$body])] $($rest)*)
    };
    (@parse [$($arms:tt)*] [] default => $body:expr $(, $($rest:tt)*)?) => {
        $crate::select!(@parse [$($arms)*] [(now [$body])] $($($rest)*)?)
    };
    (@parse [$($arms:tt)*] [$($def:tt)+] default $($rest:tt)*) => {
        ::core::compile_error!("kvant::select!: more than one `default` arm")
    };

    // Build one typed operation per arm; each expansion level's `op` is its
    // own hygienic binding.
    (@build [$($done:tt)*] [(recv [$r:expr] [$v:pat] [$body:expr]) $($todo:tt)*] $def:tt) => {{
        let __rx = &$r;
        let mut op = $crate::channel::select::RecvOp::new(__rx);
        $crate::select!(@build [$($done)* (op recv [$v] [$body])] [$($todo)*] $def)
    }};
    (@build [$($done:tt)*] [(send [$s:expr] [$m:expr] [$res:pat] [$body:expr]) $($todo:tt)*] $def:tt) => {{
        let __tx = &$s;
        let mut op = $crate::channel::select::SendOp::new(__tx);
        $crate::select!(@build [$($done)* (op send [$m] [$res] [$body])] [$($todo)*] $def)
    }};
    (@build [$(($op:ident $kind:ident $($rest:tt)*))*] [] [$($def:tt)*]) => {{
        let __until = $crate::select!(@until [$($def)*]);
        let _ = $crate::channel::select::run(
            &mut [$(&mut $op as &mut dyn $crate::channel::select::Op<'_>),*],
            __until,
            true,
        );
        $crate::select!(@dispatch [$(($op $kind $($rest)*))*] [$($def)*])
    }};

    (@until []) => { $crate::channel::select::Until::Deadline(::core::option::Option::None) };
    (@until [(now [$body:expr])]) => { $crate::channel::select::Until::Now };
    (@until [(timeout [$t:expr] [$body:expr])]) => { $crate::channel::select::Until::after($t) };

    (@dispatch [($op:ident recv [$v:pat] [$body:expr]) $($rest:tt)*] $def:tt) => {
        if $op.won() {
            let $v = $op.take();
            $body
        } else {
            $crate::select!(@dispatch [$($rest)*] $def)
        }
    };
    (@dispatch [($op:ident send [$m:expr] [$res:pat] [$body:expr]) $($rest:tt)*] $def:tt) => {
        if $op.won() {
            let $res = $op.send($m);
            $body
        } else {
            $crate::select!(@dispatch [$($rest)*] $def)
        }
    };
    (@dispatch [] []) => {
        ::core::unreachable!("kvant::select! returned without an operation")
    };
    (@dispatch [] [(now [$body:expr])]) => { $body };
    (@dispatch [] [(timeout [$t:expr] [$body:expr])]) => { $body };

    // Entry point.
    ($($tokens:tt)*) => {
        $crate::select!(@parse [] [] $($tokens)*)
    };
}
