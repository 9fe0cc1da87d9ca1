//! Green-aware synchronization primitives (work in progress).
