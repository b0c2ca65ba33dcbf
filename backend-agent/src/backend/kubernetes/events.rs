//! The cluster's own failures (image pull back-off, unschedulable, quota exceeded,
//! node not ready, invalid objects) in one line a student can read.
