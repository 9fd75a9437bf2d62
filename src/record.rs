//! record (work in progress).
