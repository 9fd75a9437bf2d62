//! route (work in progress).
