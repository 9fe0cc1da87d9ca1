//! Green-aware MPMC channels (work in progress).
