//! multifd.
