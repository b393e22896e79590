//! I/O helpers over any [`Channel`](crate::Channel).
