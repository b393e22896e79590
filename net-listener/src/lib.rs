//! NetListener.
